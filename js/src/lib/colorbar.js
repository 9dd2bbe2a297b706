// A colour scale for every picture whose colour encodes a value: the ramp of the picture's own
// lookup table, its min and max (and 0 where the map is diverging), and what the value is.
import { h } from "./dom.js";

/** Short label of a tick value: 3 significant digits, exponent for very small/large values. */
export function formatTick(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "n/a";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e5) return v.toExponential(2);
  return String(Number(v.toPrecision(3)));
}

/**
 * A colorbar: `set({lut, min, max, label, diverging, note})` redraws it. `lut` is a 256 x 3
 * uint8 table (the one the picture was drawn with) or a list of CSS colours; `min`/`max` the
 * values at its two ends; `diverging` adds the 0 tick (at its place between min and max);
 * `label` says what the value is ("weight", "activation", "attribution (|grad x input|)").
 * Returns { node, set, clear }. The node carries data-min/data-max (the exact values).
 */
export function colorbar({ cls = "" } = {}) {
  const canvas = h("canvas", { width: "256", height: "1", "aria-hidden": "true" });
  const ticks = h("div", { class: "cnnw-colorbar-ticks" });
  const title = h("div", { class: "cnnw-colorbar-title" });
  const node = h("div", { class: `cnnw-colorbar ${cls}`.trim(), role: "img" }, [title, canvas, ticks]);
  node.hidden = true;

  function set({ lut, min, max, label = "", diverging = false, note = "" }) {
    if (!lut || !(Number.isFinite(min) && Number.isFinite(max))) return clear();
    node.hidden = false;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(256, 1);
    if (Array.isArray(lut)) {
      const grad = ctx.createLinearGradient(0, 0, 256, 0);
      lut.forEach((c, i) => grad.addColorStop(i / Math.max(1, lut.length - 1), c));
      ctx.fillStyle = grad;
      ctx.fillRect(0, 0, 256, 1);
    } else {
      // codes 0..254 are the ramp; 255 is the colour of NaN/Inf (NONFINITE_CODE), not a value
      for (let i = 0; i < 256; i++) {
        const k = 3 * Math.min(i, 254);
        img.data[4 * i] = lut[k];
        img.data[4 * i + 1] = lut[k + 1];
        img.data[4 * i + 2] = lut[k + 2];
        img.data[4 * i + 3] = 255;
      }
      ctx.putImageData(img, 0, 0);
    }
    const items = [["min", min, 0], ["max", max, 100]];
    if (diverging && min < 0 && max > 0) items.push(["zero", 0, (100 * (0 - min)) / (max - min)]);
    ticks.replaceChildren(...items.map(([kind, v, pct]) => {
      const style = kind === "min" ? { left: "0" } : kind === "max" ? { right: "0" } : { left: `${pct}%`, transform: "translateX(-50%)" };
      return h("span", { class: `cnnw-tick-${kind}`, "data-value": String(v), style }, [formatTick(v)]);
    }));
    title.textContent = label + (note ? ` · ${note}` : "");
    node.dataset.min = String(min);
    node.dataset.max = String(max);
    node.setAttribute("aria-label", `${label}: colour scale from ${formatTick(min)} to ${formatTick(max)}`);
  }

  function clear() {
    node.hidden = true;
    delete node.dataset.min;
    delete node.dataset.max;
  }

  return { node, set, clear };
}
