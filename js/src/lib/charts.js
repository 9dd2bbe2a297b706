// SVG charts drawn by the views themselves: their own curves and histograms, and the stand-ins
// for the bqplot child figures wherever those cannot be rendered (an exported HTML page, marimo:
// see hasWidgetManager in children.js). Redrawn whole from the model's state on each change; a
// hover title, and with barChart's `pick` a click on a class.
import { formatNumber } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
// right: room for half of the last x tick label ("100%"), centred on the plot's right edge
const SIZE = { width: 420, height: 240, top: 40, bottom: 40, left: 60, right: 24 };

function s(tag, attrs = {}, children = []) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of [].concat(children)) node.append(c);
  return node;
}

const fx = (v) => Number(v.toFixed(2));

function frame(title) {
  const { width, height } = SIZE;
  const root = s("svg", { class: "cnnw-static-chart", width, height, viewBox: `0 0 ${width} ${height}` });
  root.append(s("text", { class: "cnnw-chart-title", x: width / 2, y: 20, "text-anchor": "middle" }, [title]));
  return root;
}

function yAxis(root, ticks, toY, label) {
  const { left, right, width, top, height, bottom } = SIZE;
  for (const [v, text] of ticks) {
    const y = fx(toY(v));
    root.append(
      s("line", { class: "cnnw-grid", x1: left, x2: width - right, y1: y, y2: y }),
      s("text", { class: "cnnw-tick", x: left - 5, y: y + 4, "text-anchor": "end" }, [text]),
    );
  }
  root.append(
    s("line", { class: "cnnw-axis", x1: left, x2: left, y1: top, y2: height - bottom }),
    s("text", { class: "cnnw-axis-label", "text-anchor": "middle",
      transform: `translate(12 ${(top + height - bottom) / 2}) rotate(-90)` }, [label]),
  );
}

/**
 * Bars of `values` (in [0, 1]) labelled with `labels`; the bar `highlight` is drawn in the
 * accent colour and the label of `marked` in bold. Where the bars are too narrow for every
 * label, only those of `highlight` and `marked` are shown, and with `ends` those of the first,
 * middle and last bar too (a histogram's axis). With `pick`, a click anywhere in a bar's column
 * (a bar near 0 has no height to click) calls `pick(i)`. Replaces the content of `container`.
 */
export function barChart(container, values, labels, { highlight = -1, marked = -1, title = "", xLabel = "", yLabel = "",
  ends = false, pick = null } = {}) {
  const { width, height, top, bottom, left, right } = SIZE;
  const root = frame(title);
  const plotH = height - top - bottom;
  const toY = (v) => top + plotH * (1 - Math.max(0, Math.min(1, v)));
  yAxis(root, [0, 0.25, 0.5, 0.75, 1].map((v) => [v, `${Math.round(100 * v)}%`]), toY, yLabel);
  const n = values.length;
  const slot = n ? (width - left - right) / n : 0;
  const gap = Math.min(4, slot * 0.2);
  const showAll = slot >= 14;
  for (let i = 0; i < n; i++) {
    const v = Math.max(0, Math.min(1, values[i]));
    const y = toY(v);
    const name = labels[i] ?? String(i);
    const cls = "cnnw-bar" + (i === highlight ? " cnnw-bar-target" : "");
    const tip = `class ${name}: ${(100 * values[i]).toFixed(1)}%`;
    if (pick) {
      root.append(s("rect", { class: "cnnw-bar-column", "data-class": i, x: fx(left + i * slot), y: top,
        width: fx(slot), height: fx(plotH) }, [s("title", {}, [tip])]));
    }
    root.append(s("rect", { class: cls, "data-class": i, x: fx(left + i * slot + gap / 2), y: fx(y),
      width: fx(Math.max(0.5, slot - gap)), height: fx(top + plotH - y) },
    [s("title", {}, [tip])]));
    const end = ends && (i === 0 || i === n - 1 || i === Math.floor((n - 1) / 2));
    if (showAll || i === highlight || i === marked || end) {
      const cl = "cnnw-tick" + (i === marked ? " cnnw-bar-predicted" : "");
      root.append(s("text", { class: cl, x: fx(left + (i + 0.5) * slot), y: height - bottom + 14, "text-anchor": "middle" }, [name]));
    }
  }
  root.append(
    s("line", { class: "cnnw-axis", x1: left, x2: width - right, y1: top + plotH, y2: top + plotH }),
    s("text", { class: "cnnw-axis-label", x: left + (width - left - right) / 2, y: height - 6, "text-anchor": "middle" }, [xLabel]),
  );
  root.dataset.bars = String(n);
  root.dataset.highlight = String(highlight);
  root.dataset.marked = String(marked);
  if (pick) {
    root.classList.add("cnnw-pickable");
    root.addEventListener("click", (ev) => {
      const bar = ev.target.closest("[data-class]");
      if (bar) pick(Number(bar.getAttribute("data-class")));
    });
  }
  container.replaceChildren(root);
  return root;
}

/**
 * Lines over a shared x axis: `series` is a list of `{ ys, label, cls }` (`ys` a Float32Array or
 * array of the same length as `xs`); `xs` the x values (default 1..n), `xTicks` [[value, text]]
 * (default the first, middle and last x), `yRange` [lo, hi] (default the data's). A legend names
 * each series when there are several. With no values, the note `empty`. Replaces the content of
 * `container`.
 */
export function curveChart(container, series, { xs = null, xTicks = null, yRange = null, yTicks = null, title = "",
  xLabel = "", yLabel = "", empty = "no data", tip = null } = {}) {
  const { width, height, top, bottom, left, right } = SIZE;
  const root = frame(title);
  const n = series.length ? series[0].ys.length : 0;
  root.dataset.points = String(n);
  root.dataset.series = String(series.length);
  if (!n) {
    root.append(s("text", { class: "cnnw-tick", x: width / 2, y: height / 2, "text-anchor": "middle" }, [empty]));
    container.replaceChildren(root);
    return root;
  }
  const xv = xs || Array.from({ length: n }, (_, i) => i + 1);
  let [lo, hi] = yRange || [Infinity, -Infinity];
  if (!yRange) {
    for (const { ys } of series) {
      for (const v of ys) {
        if (!Number.isFinite(v)) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
  }
  if (lo > hi) {
    lo = 0;
    hi = 1;
  } else if (hi === lo) {
    lo -= 0.5;
    hi += 0.5;
  }
  const x0 = xv[0], x1 = xv[n - 1];
  const plotW = width - left - right, plotH = height - top - bottom;
  const toX = (v) => left + (x1 !== x0 ? (plotW * (v - x0)) / (x1 - x0) : plotW / 2);
  const toY = (v) => top + (plotH * (hi - v)) / (hi - lo);
  yAxis(root, yTicks || [lo, (lo + hi) / 2, hi].map((v) => [v, formatNumber(v)]), toY, yLabel);
  const ticks = xTicks || [...new Set([0, Math.floor((n - 1) / 2), n - 1])].map((i) => [xv[i], formatNumber(xv[i])]);
  for (const [v, text] of ticks) {
    root.append(s("text", { class: "cnnw-tick", x: fx(toX(v)), y: height - bottom + 14, "text-anchor": "middle" }, [text]));
  }
  root.append(
    s("line", { class: "cnnw-axis", x1: left, x2: width - right, y1: top + plotH, y2: top + plotH }),
    s("text", { class: "cnnw-axis-label", x: left + plotW / 2, y: height - 6, "text-anchor": "middle" }, [xLabel]),
  );
  series.forEach(({ ys, label = "", cls = "" }, k) => {
    const pts = [];
    // non-finite values (a diverged run) are left out of the line
    for (let i = 0; i < n; i++) if (Number.isFinite(ys[i])) pts.push(`${fx(toX(xv[i]))},${fx(toY(ys[i]))}`);
    const hover = tip ? tip(k) : `last value ${formatNumber(ys[n - 1])} at ${formatNumber(xv[n - 1])}`;
    root.append(s("polyline", { class: `cnnw-line ${cls}`.trim(), points: pts.join(" "), "data-series": k },
      [s("title", {}, [hover])]));
    if (series.length > 1) {
      const ly = top - 8, lx = left + 8 + k * ((plotW - 8) / series.length);
      root.append(
        s("line", { class: `cnnw-line ${cls}`.trim(), x1: fx(lx), x2: fx(lx + 14), y1: ly, y2: ly }),
        s("text", { class: "cnnw-legend", x: fx(lx + 18), y: ly + 4 }, [label]),
      );
    }
  });
  container.replaceChildren(root);
  return root;
}

/**
 * A line of `ys` over whole steps: `xs` (default 1..n; a long run's curve keeps every k-th step),
 * ticked at the first, middle and last (`ys`, `xs` Float32Arrays or arrays). With no values, a
 * note `empty` instead. Replaces the content of `container`.
 */
export function lineChart(container, ys, { xs = null, title = "", xLabel = "", yLabel = "", empty = "no data" } = {}) {
  const n = ys.length;
  const xv = xs || Array.from({ length: n }, (_, i) => i + 1);
  const ticks = n ? [...new Set([xv[0], xv[Math.floor((n - 1) / 2)], xv[n - 1]])].map((v) => [v, String(Math.round(v))]) : [];
  return curveChart(container, [{ ys }], { xs: xv, xTicks: ticks, title, xLabel, yLabel, empty,
    tip: () => `last value ${formatNumber(ys[n - 1])} at step ${Math.round(xv[n - 1])}` });
}
