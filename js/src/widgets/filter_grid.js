// FilterGrid front end. Python side: cnnwidgets/widgets/filter_grid.py
// Traits read: layer, layers, layer_labels, mode, normalize, cmap, zoom, padding, height, channel,
//              color_range, color_note, _codes (uint8 tiles), _stats (float32 min/max per tile),
//              _lut (256x3 uint8) as arrays (decodeArray), _grid (layout and label).
// Traits written: layer, mode, normalize, cmap, zoom, channel.
//
// Layout: toolbar; the colour scale (colorbar of the tiles' LUT, "weight") with the grid's
// label; the grid framed by its row and column indices (which filter / input channel), which
// follow the scroll.
import { bindTraits } from "../lib/bind.js";
import { decodeArray } from "../lib/codecs.js";
import { colorbar, formatTick } from "../lib/colorbar.js";
import { boundSelect, formatNumber, h, labelled, viewShell } from "../lib/dom.js";
import { TileView } from "../lib/tileview.js";

const CMAPS = ["gray", "diverging", "viridis", "RdBu_r", "magma"];
/** Smallest distance in pixels between two index labels of an axis. */
const LABEL_GAP = { x: 26, y: 14 };

/** A step of 1, 2, 5, 10, 20, 50 ... cells, the smallest that keeps labels `gap` px apart. */
function labelStep(cell, gap) {
  for (let step = 1; ; step *= 10) {
    for (const m of [1, 2, 5]) if (m * step * cell >= gap) return m * step;
  }
}

/**
 * What the rows and columns of the grid are, from its layout (tile t at row t // columns,
 * column t % columns; in kernel mode tile t is filter t // in, input channel t % in):
 * - kernel mode, in > 1, columns a multiple of in: each row holds whole filters (one when
 *   columns == in, as in a weight matrix), so rows are filters and columns input channels;
 * - a tile per filter (RGB mode, or filters that read one channel): a row is labelled with its
 *   first filter, a column with its offset in the row (+c);
 * - any other layout: a row with its first tile (filter.channel), a column with its offset.
 * Returns {note, row(r) -> text, col(c) -> text}.
 */
function axesOf(grid) {
  const cols = grid.columns, n = grid.in_channels;
  if (!grid.rgb && n > 1 && cols % n === 0) {
    const k = cols / n;
    return {
      note: k === 1 ? "rows: filters · columns: input channels"
        : `rows: filters (${k} per row, the first numbered) · columns: input channels`,
      row: (r) => String(r * k),
      col: (c) => String(c % n),
      colStep: (step) => (c) => (c % n) % step === 0,
    };
  }
  if (grid.rgb || n === 1) {
    return { note: "rows: the first filter in the row · columns: + filters", row: (r) => String(r * cols),
      col: (c) => `+${c}`, colStep: (step) => (c) => c % step === 0 };
  }
  return {
    note: "rows: the first tile in the row (filter.input channel) · columns: + tiles",
    row: (r) => `${Math.floor((r * cols) / n)}.${(r * cols) % n}`,
    col: (c) => `+${c}`,
    colStep: (step) => (c) => c % step === 0,
  };
}


function render({ model, el }) {
  const shell = viewShell(model, el, "cnnw-filter-grid");
  const root = shell.root;

  // ---- toolbar
  const layerSel = boundSelect(model, "layer", [], "cnnw-layer",
    { title: "which convolution layer's weights the grid shows" });
  const modeSel = boundSelect(model, "mode", [["kernel", "kernels"], ["rgb", "RGB filters"]], "cnnw-mode",
    { title: "kernels: one tile per (filter, input channel); RGB filters: one colour tile per filter (layers that read 3 channels)" });
  const normSel = boundSelect(model, "normalize", [["global", "global"], ["filter", "per filter"], ["tile", "per tile"]],
    "cnnw-normalize", { title: "colour scale over the whole layer, over each filter, or over each kernel" });
  const cmapSel = boundSelect(model, "cmap", [], "cnnw-cmap",
    { title: "colour map of the kernel tiles (RGB filters are drawn in their own colours)" });
  const zoom = h("input", { type: "range", min: "1", max: "32", step: "1", class: "cnnw-zoom", "data-trait": "zoom",
    title: "screen pixels per weight: drag, or focus and use the arrow keys", "aria-label": "zoom" });
  const zoomOut = h("span", { class: "cnnw-zoom-value" });
  zoom.addEventListener("input", () => {
    model.set("zoom", Number(zoom.value));
    model.save_changes();
  });
  const selInfo = h("span", { class: "cnnw-selected", role: "status" });
  const kernelField = (text, control) => {
    const f = labelled(text, control);
    f.setAttribute("data-needs-kernel", "");
    return f;
  };
  const toolbar = h("div", { class: "cnnw-toolbar" }, [
    kernelField("layer", layerSel),
    kernelField("tiles", modeSel),
    kernelField("scale", normSel),
    kernelField("colours", cmapSel),
    labelled("zoom", h("span", { class: "cnnw-fg-zoom" }, [zoom, zoomOut]), zoom.title),
    selInfo,
  ]);

  // ---- colour scale and what the grid is
  const bar = colorbar({ cls: "cnnw-fg-colorbar" });
  const scaleNote = h("span", { class: "cnnw-fg-scale-note" });
  const info = h("div", { class: "cnnw-info" });
  const axesNote = h("div", { class: "cnnw-info cnnw-fg-axes-note" });
  const legend = h("div", { class: "cnnw-fg-legend" }, [bar.node, scaleNote, h("div", { class: "cnnw-fg-about" }, [info, axesNote])]);
  root.append(toolbar, legend);

  let grid = {};
  let stats = new Float32Array(0);
  let lut = new Uint8Array(0);
  const describe = (t) => {
    const out = grid.rgb ? t : Math.floor(t / grid.in_channels);
    const where = grid.rgb ? `filter ${out} (RGB)` : `filter ${out}, input channel ${t % grid.in_channels}`;
    return `${where} · min ${formatNumber(stats[2 * t])} · max ${formatNumber(stats[2 * t + 1])}`;
  };
  const filterOf = (t) => (grid.rgb ? t : Math.floor(t / grid.in_channels));
  // a channel set by this page (click, Enter) is in view already: only other changes scroll
  let ownChannel = null;
  const choose = (t) => {
    const ch = filterOf(t);
    if (ch === model.get("channel")) return;
    ownChannel = ch;
    model.set("channel", ch);
    model.save_changes();
  };
  const view = new TileView(root, {
    describe,
    onClick: choose,
    maxHeight: () => model.get("height"),
    label: "filters: arrow keys move, Enter selects the filter",
  });

  // ---- row and column indices, drawn for the visible part only, following the scroll
  const colAxis = h("div", { class: "cnnw-fg-cols", "aria-hidden": "true" });
  const rowAxis = h("div", { class: "cnnw-fg-rows", "aria-hidden": "true" });
  const frame = h("div", { class: "cnnw-fg-frame" }, [h("div", { class: "cnnw-fg-corner" }), colAxis, rowAxis, view.node]);
  root.append(frame);

  let axesPending = false;
  function drawAxes() {
    axesPending = false;
    const show = grid.n_tiles > 1;
    frame.classList.toggle("cnnw-fg-no-axes", !show);
    if (!show) {
      colAxis.replaceChildren();
      rowAxis.replaceChildren();
      return;
    }
    const z = model.get("zoom"), pad = model.get("padding");
    const tw = grid.tile_w * z, th = grid.tile_h * z;
    const cellW = tw + pad, cellH = th + pad;
    const sc = view.scroller;
    const border = sc.clientLeft || 0;
    const cw = sc.clientWidth, chh = sc.clientHeight;
    const ax = axesOf(grid);
    const stepC = labelStep(cellW, LABEL_GAP.x), stepR = labelStep(cellH, LABEL_GAP.y);
    const colOk = ax.colStep(stepC);
    const cols = [];
    const c0 = Math.max(0, Math.floor(sc.scrollLeft / cellW)), c1 = Math.min(grid.columns - 1, Math.floor((sc.scrollLeft + cw) / cellW));
    for (let c = c0; c <= c1; c++) {
      if (!colOk(c)) continue;
      const x = border + c * cellW - sc.scrollLeft + tw / 2;
      const text = ax.col(c);
      const half = 3.5 * text.length + 2;  // about half a label's width at 10 px
      if (x - half < 0 || x + half > border + cw) continue;
      cols.push(h("span", { "data-index": String(c), style: { left: `${x}px` } }, [text]));
    }
    const rows = [];
    const r0 = Math.max(0, Math.floor(sc.scrollTop / cellH)), r1 = Math.min(grid.rows - 1, Math.floor((sc.scrollTop + chh) / cellH));
    for (let r = r0; r <= r1; r++) {
      if (r % stepR !== 0) continue;
      const y = border + r * cellH - sc.scrollTop + th / 2;
      if (y - 6 < 0 || y + 6 > border + chh) continue;
      rows.push(h("span", { "data-index": String(r), style: { top: `${y}px` } }, [ax.row(r)]));
    }
    colAxis.replaceChildren(...cols);
    rowAxis.replaceChildren(...rows);
    axesNote.textContent = ax.note;
  }
  const scheduleAxes = () => {
    if (axesPending) return;
    axesPending = true;
    requestAnimationFrame(drawAxes);
  };
  view.scroller.addEventListener("scroll", scheduleAxes, { passive: true });
  const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(scheduleAxes) : null;
  if (ro) ro.observe(view.scroller);

  // ---- state
  function selected() {
    const ch = model.get("channel");
    if (ch < 0 || !grid.n_tiles || ch >= grid.out_channels) return [];
    const per = grid.rgb ? 1 : grid.in_channels;
    return Array.from({ length: per }, (_, i) => ch * per + i);
  }

  /** Scroll the selected filter's first tile into view once the grid has been laid out
   *  (TileView draws, and sizes its scroll area, in the next animation frame). */
  function revealSelected() {
    requestAnimationFrame(() => {
      const tiles = selected();
      if (tiles.length) view.reveal(tiles[0]);
      scheduleAxes();
    });
  }

  function fillLayers() {
    const labels = model.get("layer_labels") || {};
    layerSel.fill((model.get("layers") || []).map((n) => [n, labels[n] ? `${n} · ${labels[n]}` : n]));
  }

  function fillCmaps() {
    const cm = model.get("cmap");
    cmapSel.fill([...new Set([...CMAPS, cm])].map((n) => [n, n]));
  }

  function syncZoom() {
    zoom.value = String(model.get("zoom"));
    zoomOut.textContent = ` ${model.get("zoom")}×`;
  }

  function syncSelection() {
    const ch = model.get("channel");
    selInfo.textContent = ch >= 0 ? `selected filter ${ch}` : "";
    view.highlight = selected();
  }

  function syncScale() {
    const [lo, hi] = model.get("color_range") || [];
    if (!grid.n_tiles) {
      bar.clear();
      scaleNote.textContent = "";
    } else if (grid.rgb) {
      // no colour scale: red, green and blue are the input channels, each on the same ramp
      bar.clear();
      scaleNote.textContent = `colours: input channels 0, 1, 2 as red, green, blue, each from dark (${formatTick(lo)}) to bright (${formatTick(hi)})` +
        (model.get("color_note") ? ` · ${model.get("color_note")}` : "");
    } else {
      scaleNote.textContent = "";
      bar.set({ lut: lut.length >= 256 * 3 ? lut : null, min: lo, max: hi, label: "weight", diverging: !!grid.symmetric, note: model.get("color_note") });
    }
  }

  function syncGrid() {
    const before = grid;
    grid = model.get("_grid") || {};
    stats = decodeArray(model.get("_stats")).data;
    lut = decodeArray(model.get("_lut")).data;
    modeSel.node.querySelector('option[value="rgb"]').disabled = grid.in_channels !== 3;
    cmapSel.node.disabled = !!grid.rgb;
    info.textContent = grid.label
      ? `${grid.label} · ${Number(grid.n_tiles).toLocaleString("en-US")} tiles` +
        (grid.n_nonfinite ? ` · ${grid.n_nonfinite} NaN/Inf weights in magenta` : "")
      : "";
    view.highlight = selected();
    view.set({
      grid,
      codes: decodeArray(model.get("_codes")).data,
      lut,
      zoom: model.get("zoom"),
      padding: model.get("padding"),
    });
    syncScale();
    scheduleAxes();
    // another layer: its selected filter may be anywhere in the new grid
    if (before.label !== grid.label || before.n_tiles !== grid.n_tiles) revealSelected();
  }

  const unbind = bindTraits(model, {
    "layers layer_labels": fillLayers,
    cmap: fillCmaps,
    zoom: syncZoom,
    "_codes _grid _lut _stats zoom padding height": syncGrid,
    "color_range color_note": syncScale,
    channel: () => {
      syncSelection();
      const ch = model.get("channel");
      if (ownChannel !== ch) revealSelected();  // set by another view, or from Python
      ownChannel = null;
      view.schedule();
    },
  });

  return () => {
    unbind();
    for (const s of [layerSel, modeSel, normSel, cmapSel]) s.dispose();
    view.scroller.removeEventListener("scroll", scheduleAxes);
    if (ro) ro.disconnect();
    view.dispose();
    shell.dispose();
  };
}

export default { render };
