// FilterGrid front end. Python side: cnnwidgets/widgets/filter_grid.py
// Traits read: layer, layers, mode, normalize, cmap, zoom, padding, height, channel,
//              _codes (uint8 tiles), _stats (float32 min/max per tile), _lut (256x3 uint8), _grid.
// Traits written: layer, mode, normalize, cmap, zoom, channel.
import { bytesView, float32View } from "../lib/codecs.js";
import { gridSize, renderTiles, tileAt, tileOrigin } from "../lib/tiles.js";
import { boundSelect, formatNumber, h, labelled } from "../lib/dom.js";
import { ensureStyle } from "../lib/style.js";

const BACKGROUND = [255, 255, 255];
const CMAPS = ["gray", "diverging", "viridis", "RdBu_r", "magma"];

function render({ model, el }) {
  ensureStyle();
  const root = h("div", { class: "cnnw-root cnnw-filter-grid" });
  el.append(root);
  let frames = 0;

  // ---- toolbar
  const layerSel = boundSelect(model, "layer", [], "cnnw-layer");
  const modeSel = boundSelect(model, "mode", [["kernel", "kernels"], ["rgb", "RGB filters"]], "cnnw-mode");
  const normSel = boundSelect(model, "normalize", [["global", "global"], ["filter", "per filter"], ["tile", "per tile"]], "cnnw-normalize");
  const cmapSel = boundSelect(model, "cmap", [], "cnnw-cmap");
  const zoom = h("input", { type: "range", min: "1", max: "32", step: "1", class: "cnnw-zoom" });
  const zoomOut = h("span", { class: "cnnw-zoom-value" });
  zoom.addEventListener("input", () => {
    model.set("zoom", Number(zoom.value));
    model.save_changes();
  });
  const info = h("div", { class: "cnnw-info" });
  const selInfo = h("span", { class: "cnnw-selected" });
  root.append(
    h("div", { class: "cnnw-toolbar" }, [
      labelled("layer", layerSel.node),
      labelled("tiles", modeSel.node),
      labelled("scale", normSel.node),
      labelled("colours", cmapSel.node),
      labelled("zoom", h("span", {}, [zoom, zoomOut])),
      selInfo,
    ]),
    info,
  );

  // ---- viewport: a scroller over a spacer of the full grid size; the canvas covers only
  // the visible part and follows the scroll position.
  const scroller = h("div", { class: "cnnw-scroll" });
  const spacer = h("div", { class: "cnnw-spacer" });
  const canvas = h("canvas", { class: "cnnw-canvas" });
  const overlay = h("canvas", { class: "cnnw-overlay", style: { pointerEvents: "none" } });
  const tip = h("div", { class: "cnnw-tip" });
  spacer.append(canvas, overlay);
  scroller.append(spacer);
  root.append(h("div", { style: { position: "relative" } }, [scroller, tip]));
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const octx = overlay.getContext("2d");

  let state = null; // decoded data
  function decode() {
    const grid = model.get("_grid") || {};
    state = {
      grid,
      codes: bytesView(model.get("_codes")),
      stats: float32View(model.get("_stats")),
      lut: bytesView(model.get("_lut")),
    };
  }

  function syncControls() {
    const layers = model.get("layers") || [];
    layerSel.fill(layers.map((n) => [n, n]));
    const cm = model.get("cmap");
    cmapSel.fill([...new Set([...CMAPS, cm])].map((n) => [n, n]));
    zoom.value = String(model.get("zoom"));
    zoomOut.textContent = ` ${model.get("zoom")}×`;
    const g = model.get("_grid") || {};
    modeSel.node.querySelector('option[value="rgb"]').disabled = g.in_channels !== 3;
    cmapSel.node.disabled = !!g.rgb;
    info.textContent = g.label
      ? `${g.label} · ${Number(g.n_tiles).toLocaleString("en-US")} tiles` +
        (g.n_nonfinite ? ` · ${g.n_nonfinite} NaN/Inf weights in magenta` : "")
      : "";
    const ch = model.get("channel");
    selInfo.textContent = ch >= 0 ? `selected filter ${ch}` : "";
  }

  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      draw();
    });
  }

  function draw() {
    if (!state || !state.grid.n_tiles) return;
    const z = model.get("zoom");
    const pad = model.get("padding");
    const { width, height } = gridSize(state.grid, z, pad);
    spacer.style.width = `${width}px`;
    spacer.style.height = `${height}px`;
    scroller.style.maxHeight = `${model.get("height")}px`;
    const vw = Math.max(1, Math.min(width, scroller.clientWidth || width));
    const vh = Math.max(1, Math.min(height, scroller.clientHeight || height));
    const x0 = Math.min(scroller.scrollLeft, Math.max(0, width - vw));
    const y0 = Math.min(scroller.scrollTop, Math.max(0, height - vh));
    for (const c of [canvas, overlay]) {
      if (c.width !== vw) c.width = vw;
      if (c.height !== vh) c.height = vh;
      c.style.left = `${x0}px`;
      c.style.top = `${y0}px`;
    }
    const img = ctx.createImageData(vw, vh);
    renderTiles(img, { ...state, zoom: z, padding: pad, x0, y0, background: BACKGROUND });
    ctx.putImageData(img, 0, 0);
    drawOverlay(x0, y0, vw, vh, z, pad);
    frames += 1;
    root.dataset.frame = String(frames);
    root.dataset.x0 = String(x0);
    root.dataset.y0 = String(y0);
  }

  function drawOverlay(x0, y0, vw, vh, z, pad) {
    octx.clearRect(0, 0, vw, vh);
    const ch = model.get("channel");
    const g = state.grid;
    if (ch < 0 || ch >= g.out_channels) return;
    const per = g.rgb ? 1 : g.in_channels;
    const tw = g.tile_w * z;
    const th = g.tile_h * z;
    octx.strokeStyle = "#ff8c00";
    octx.lineWidth = 2;
    for (let t = ch * per; t < (ch + 1) * per; t++) {
      const o = tileOrigin(g, z, pad, t);
      if (o.x + tw < x0 || o.y + th < y0 || o.x > x0 + vw || o.y > y0 + vh) continue;
      octx.strokeRect(o.x - x0 + 0.5, o.y - y0 + 0.5, tw - 1, th - 1);
    }
  }

  function tileFromEvent(e) {
    if (!state || !state.grid.n_tiles) return -1;
    const rect = canvas.getBoundingClientRect();
    const gx = Math.floor(e.clientX - rect.left) + Number(root.dataset.x0 || 0);
    const gy = Math.floor(e.clientY - rect.top) + Number(root.dataset.y0 || 0);
    return tileAt(state.grid, model.get("zoom"), model.get("padding"), gx, gy);
  }

  function describe(t) {
    const g = state.grid;
    const out = g.rgb ? t : Math.floor(t / g.in_channels);
    const inp = g.rgb ? null : t % g.in_channels;
    const lo = state.stats[2 * t];
    const hi = state.stats[2 * t + 1];
    const where = inp === null ? `filter ${out} (RGB)` : `filter ${out}, input channel ${inp}`;
    return { out, inp, text: `${where} · min ${formatNumber(lo)} · max ${formatNumber(hi)}` };
  }

  const onMove = (e) => {
    const t = tileFromEvent(e);
    root.dataset.hoverTile = String(t);
    if (t < 0) {
      tip.style.display = "none";
      return;
    }
    const d = describe(t);
    tip.textContent = d.text;
    const box = scroller.getBoundingClientRect();
    tip.style.left = `${e.clientX - box.left + 12}px`;
    tip.style.top = `${e.clientY - box.top + 12}px`;
    tip.style.display = "block";
  };
  const onLeave = () => {
    tip.style.display = "none";
    root.dataset.hoverTile = "-1";
  };
  const onClick = (e) => {
    const t = tileFromEvent(e);
    if (t < 0) return;
    const d = describe(t);
    model.set("channel", d.out);
    model.save_changes();
    schedule();
  };
  canvas.addEventListener("mousemove", onMove);
  canvas.addEventListener("mouseleave", onLeave);
  canvas.addEventListener("click", onClick);
  scroller.addEventListener("scroll", schedule, { passive: true });

  const onData = () => {
    decode();
    syncControls();
    schedule();
  };
  const onView = () => {
    syncControls();
    schedule();
  };
  model.on("change:_codes", onData);
  model.on("change:_grid", onData);
  model.on("change:_lut", onData);
  model.on("change:zoom", onView);
  model.on("change:padding", onView);
  model.on("change:height", onView);
  model.on("change:channel", onView);
  model.on("change:layers", onView);
  const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(schedule) : null;
  if (ro) ro.observe(scroller);

  onData();

  return () => {
    for (const ev of ["_codes", "_grid", "_lut"]) model.off(`change:${ev}`, onData);
    for (const ev of ["zoom", "padding", "height", "channel", "layers"]) model.off(`change:${ev}`, onView);
    layerSel.dispose();
    modeSel.dispose();
    normSel.dispose();
    cmapSel.dispose();
    if (ro) ro.disconnect();
    scroller.removeEventListener("scroll", schedule);
  };
}

export default { render };
