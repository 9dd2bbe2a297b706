// FilterGrid front end. Python side: cnnwidgets/widgets/filter_grid.py
// Traits read: layer, layers, mode, normalize, cmap, zoom, padding, height, channel,
//              _codes (uint8 tiles), _stats (float32 min/max per tile), _lut (256x3 uint8), _grid.
// Traits written: layer, mode, normalize, cmap, zoom, channel.
import { bytesView, float32View } from "../lib/codecs.js";
import { boundSelect, formatNumber, h, labelled } from "../lib/dom.js";
import { TileView } from "../lib/tileview.js";

const CMAPS = ["gray", "diverging", "viridis", "RdBu_r", "magma"];

function render({ model, el }) {
  const root = h("div", { class: "cnnw-root cnnw-filter-grid" });
  el.append(root);

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

  let grid = {};
  let stats = new Float32Array(0);
  const describe = (t) => {
    const out = grid.rgb ? t : Math.floor(t / grid.in_channels);
    const where = grid.rgb ? `filter ${out} (RGB)` : `filter ${out}, input channel ${t % grid.in_channels}`;
    return `${where} · min ${formatNumber(stats[2 * t])} · max ${formatNumber(stats[2 * t + 1])}`;
  };
  const view = new TileView(root, {
    describe,
    onClick: (t) => {
      model.set("channel", grid.rgb ? t : Math.floor(t / grid.in_channels));
      model.save_changes();
    },
    maxHeight: () => model.get("height"),
  });
  root.append(view.node);

  function selected() {
    const ch = model.get("channel");
    if (ch < 0 || !grid.n_tiles || ch >= grid.out_channels) return [];
    const per = grid.rgb ? 1 : grid.in_channels;
    return Array.from({ length: per }, (_, i) => ch * per + i);
  }

  function syncControls() {
    layerSel.fill((model.get("layers") || []).map((n) => [n, n]));
    const cm = model.get("cmap");
    cmapSel.fill([...new Set([...CMAPS, cm])].map((n) => [n, n]));
    zoom.value = String(model.get("zoom"));
    zoomOut.textContent = ` ${model.get("zoom")}×`;
    modeSel.node.querySelector('option[value="rgb"]').disabled = grid.in_channels !== 3;
    cmapSel.node.disabled = !!grid.rgb;
    info.textContent = grid.label
      ? `${grid.label} · ${Number(grid.n_tiles).toLocaleString("en-US")} tiles` +
        (grid.n_nonfinite ? ` · ${grid.n_nonfinite} NaN/Inf weights in magenta` : "")
      : "";
    const ch = model.get("channel");
    selInfo.textContent = ch >= 0 ? `selected filter ${ch}` : "";
  }

  function update() {
    grid = model.get("_grid") || {};
    stats = float32View(model.get("_stats"));
    syncControls();
    view.highlight = selected();
    view.set({
      grid,
      codes: bytesView(model.get("_codes")),
      lut: bytesView(model.get("_lut")),
      zoom: model.get("zoom"),
      padding: model.get("padding"),
    });
  }
  const traits = ["_codes", "_grid", "_lut", "zoom", "padding", "height", "channel", "layers"];
  for (const tr of traits) model.on(`change:${tr}`, update);
  update();

  return () => {
    for (const tr of traits) model.off(`change:${tr}`, update);
    for (const s of [layerSel, modeSel, normSel, cmapSel]) s.dispose();
    view.dispose();
  };
}

export default { render };
