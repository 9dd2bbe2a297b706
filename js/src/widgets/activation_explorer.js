// ActivationExplorer front end. Python side: cnnwidgets/widgets/activation_explorer.py
// Traits read: index, n_images, layer, layers, channel, sort, scale, opacity, zoom, busy,
//   progress, status, _image/_image_meta (uint8 H x W x C), _maps (uint8 C x h x w codes),
//   _map_stats (float32 C x 3: mean, max, min), _order (int32 C), _maps_meta, _lut,
//   _overlay_lut, _recon/_recon_meta, _top/_top_meta, model_note. _image_meta.predicted and
//   .probability are null when the model's output gives no class scores (model_note says why).
// Traits written: index, layer, channel, sort, scale, opacity. Messages: {type: "top_images" | "stop"}.
import { bytesView, float32View } from "../lib/codecs.js";
import { boundSelect, formatNumber, h, labelled, modelNote } from "../lib/dom.js";
import { blendOverlay, drawImage, fitScale } from "../lib/image.js";
import { TileView } from "../lib/tileview.js";

function render({ model, el }) {
  const root = h("div", { class: "cnnw-root cnnw-activation-explorer" });
  const note = modelNote(model);
  root.append(note.node);
  el.append(root);
  const set = (k, v) => {
    model.set(k, v);
    model.save_changes();
  };

  // ---- toolbar
  const slider = h("input", { type: "range", min: "0", step: "1", class: "cnnw-index" });
  const number = h("input", { type: "number", min: "0", step: "1", class: "cnnw-index-number", style: { width: "5em" } });
  // while dragging, send at most one index per animation frame (the kernel keeps only the latest)
  let pendingIndex = null;
  const sendIndex = (v) => {
    if (pendingIndex === null) {
      requestAnimationFrame(() => {
        set("index", pendingIndex);
        pendingIndex = null;
      });
    }
    pendingIndex = v;
  };
  slider.addEventListener("input", () => sendIndex(Number(slider.value)));
  number.addEventListener("change", () => {
    const n = model.get("n_images");
    set("index", Math.max(0, Math.min(n - 1, Math.floor(Number(number.value) || 0))));
  });
  const step = (d) => () => {
    const n = model.get("n_images");
    set("index", Math.max(0, Math.min(n - 1, model.get("index") + d)));
  };
  const prev = h("button", { class: "cnnw-prev", onclick: step(-1) }, ["◀"]);
  const next = h("button", { class: "cnnw-next", onclick: step(1) }, ["▶"]);
  const layerSel = boundSelect(model, "layer", [], "cnnw-layer");
  const sortSel = boundSelect(model, "sort", [["index", "index"], ["mean", "mean activation"], ["max", "max activation"]], "cnnw-sort");
  const scaleSel = boundSelect(model, "scale", [["shared", "shared"], ["per_map", "per map"]], "cnnw-scale");
  const opacity = h("input", { type: "range", min: "0", max: "1", step: "0.01", class: "cnnw-opacity" });
  opacity.addEventListener("input", () => set("opacity", Number(opacity.value)));
  root.append(
    h("div", { class: "cnnw-toolbar" }, [
      labelled("image", h("span", {}, [prev, slider, next, number])),
      labelled("layer", layerSel.node),
      labelled("sort", sortSel.node),
      labelled("colour scale", scaleSel.node),
      labelled("overlay opacity", opacity),
    ]),
  );

  // ---- panels: input, reconstruction, selected map over the input
  const inputCanvas = h("canvas", { class: "cnnw-input" });
  const inputCap = h("div", { class: "cnnw-caption cnnw-input-caption" });
  const reconCanvas = h("canvas", { class: "cnnw-recon" });
  const reconCap = h("div", { class: "cnnw-caption cnnw-recon-caption" });
  const overlayCanvas = h("canvas", { class: "cnnw-overlay-view" });
  const overlayCap = h("div", { class: "cnnw-caption cnnw-overlay-caption" }, ["click a map to enlarge it over the image"]);
  root.append(
    h("div", { class: "cnnw-panels" }, [
      h("div", { class: "cnnw-panel" }, [inputCanvas, inputCap]),
      h("div", { class: "cnnw-panel" }, [reconCanvas, reconCap]),
      h("div", { class: "cnnw-panel" }, [overlayCanvas, overlayCap]),
    ]),
  );
  const info = h("div", { class: "cnnw-info cnnw-maps-info" });
  root.append(info);

  // ---- maps grid
  let meta = {};
  let stats = new Float32Array(0);
  let order = new Int32Array(0);
  const describe = (cell) => {
    const c = order[cell];
    return `channel ${c} · mean ${formatNumber(stats[3 * c])} · max ${formatNumber(stats[3 * c + 1])} · min ${formatNumber(stats[3 * c + 2])}`;
  };
  const view = new TileView(root, {
    describe,
    canvasClass: "cnnw-canvas cnnw-maps",
    onClick: (cell) => set("channel", order[cell]),
    maxHeight: () => 420,
  });
  root.append(view.node);

  // ---- dataset examples
  const topBtn = h("button", { class: "cnnw-top-button" }, ["top images for the selected channel"]);
  const stopBtn = h("button", { class: "cnnw-stop" }, ["stop"]);
  const progress = h("progress", { class: "cnnw-progress", max: "1", value: "0" });
  const status = h("span", { class: "cnnw-status" });
  const thumbs = h("div", { class: "cnnw-thumbs" });
  const batchBtn = h("button", { class: "cnnw-batch-button" }, ["batch view: strongest map of 12 images"]);
  const batch = h("div", { class: "cnnw-thumbs cnnw-batch" });
  topBtn.addEventListener("click", () => model.send({ type: "top_images" }));
  stopBtn.addEventListener("click", () => model.send({ type: "stop" }));
  batchBtn.addEventListener("click", () => model.send({ type: "batch" }));
  root.append(h("div", { class: "cnnw-toolbar" }, [topBtn, batchBtn, stopBtn, progress, status]), thumbs, batch);

  const imageScale = () => {
    const m = model.get("_image_meta") || {};
    return fitScale(m.h || 1, m.w || 1, 168);
  };

  function drawInput() {
    const m = model.get("_image_meta") || {};
    if (!m.h) return;
    drawImage(inputCanvas, bytesView(model.get("_image")), m.h, m.w, m.c, imageScale());
    const head = `image ${m.index}` + (m.label !== null && m.label !== undefined ? ` · label ${m.label}` : "");
    if (m.predicted === null || m.predicted === undefined) {
      // the model's output holds no class scores the kernel can read: model_note says why
      inputCap.replaceChildren(h("span", {}, [head]), h("span", { class: "cnnw-no-prediction" }, [" · no prediction (see the note above)"]));
      return;
    }
    inputCap.replaceChildren(
      h("span", {}, [head + " · predicted "]),
      h("span", { class: m.correct === false ? "cnnw-wrong" : "" }, [`${m.predicted} (${(100 * m.probability).toFixed(1)}%)`]),
    );
  }

  function drawRecon() {
    const m = model.get("_recon_meta") || {};
    if (!m.h) return;
    drawImage(reconCanvas, bytesView(model.get("_recon")), m.h, m.w, m.c, fitScale(m.h, m.w, 168));
    reconCap.textContent = `${m.strongest ? "strongest map" : "selected map"}: channel ${m.channel} of ${m.layer}, projected to pixels (deconvnet)`;
  }

  function drawOverlay() {
    const ch = model.get("channel");
    const im = model.get("_image_meta") || {};
    if (ch < 0 || !meta.n || ch >= meta.n || !im.h) {
      const ctx = overlayCanvas.getContext("2d");
      ctx.clearRect(0, 0, overlayCanvas.width, overlayCanvas.height);
      overlayCap.textContent = "click a map to enlarge it over the image";
      root.dataset.overlayChannel = "-1";
      return;
    }
    const codes = bytesView(model.get("_maps")).subarray(ch * meta.h * meta.w, (ch + 1) * meta.h * meta.w);
    blendOverlay(overlayCanvas, bytesView(model.get("_image")), im.h, im.w, im.c, codes, meta.h, meta.w,
      bytesView(model.get("_overlay_lut")), model.get("opacity"), imageScale());
    overlayCap.textContent = `channel ${ch} (${meta.h}×${meta.w}) over the image · max ${formatNumber(stats[3 * ch + 1])}`;
    root.dataset.overlayChannel = String(ch);
    root.dataset.overlayFrame = String(Number(root.dataset.overlayFrame || 0) + 1);
  }

  function drawMaps() {
    meta = model.get("_maps_meta") || {};
    stats = float32View(model.get("_map_stats"));
    const ob = bytesView(model.get("_order"));
    order = new Int32Array(ob.slice().buffer);
    if (!meta.n) return;
    const grid = { n_tiles: meta.n, rows: meta.rows, columns: meta.columns, tile_h: meta.h, tile_w: meta.w, rgb: false };
    const ch = model.get("channel");
    view.highlight = ch >= 0 ? [order.indexOf(ch)] : [];
    view.set({ grid, codes: bytesView(model.get("_maps")), lut: bytesView(model.get("_lut")), zoom: meta.zoom, padding: 1, order });
    info.textContent = `${meta.layer} · ${meta.n} maps of ${meta.h}×${meta.w} for image ${meta.index} · hover for statistics, click to select`;
    root.dataset.mapsIndex = String(meta.index);
    root.dataset.mapsLayer = meta.layer;
  }

  function drawTop() {
    const m = model.get("_top_meta") || {};
    if (!m.indices) return;
    const bytes = bytesView(model.get("_top"));
    const size = m.h * m.w * m.c;
    thumbs.replaceChildren(
      ...m.indices.map((idx, i) => {
        const c = drawImage(h("canvas"), bytes.subarray(i * size, (i + 1) * size), m.h, m.w, m.c, fitScale(m.h, m.w, 56));
        return h("div", { class: "cnnw-thumb", "data-index": String(idx), onclick: () => set("index", idx) }, [c, `#${idx} · ${formatNumber(m.scores[i])}`]);
      }),
    );
  }

  function drawBatch() {
    const m = model.get("_batch_meta") || {};
    if (!m.indices) return;
    const bytes = bytesView(model.get("_batch"));
    const size = m.h * m.w * m.c;
    const sc = fitScale(m.h, m.w, 56);
    batch.replaceChildren(
      ...m.indices.map((idx, i) => {
        const a = drawImage(h("canvas"), bytes.subarray(2 * i * size, (2 * i + 1) * size), m.h, m.w, m.c, sc);
        const b = drawImage(h("canvas"), bytes.subarray((2 * i + 1) * size, (2 * i + 2) * size), m.h, m.w, m.c, sc);
        return h("div", { class: "cnnw-thumb cnnw-batch-item", "data-index": String(idx), "data-channel": String(m.channels[i]), onclick: () => set("index", idx) },
          [h("div", {}, [a, b]), `#${idx} · channel ${m.channels[i]}`]);
      }),
    );
  }

  function syncControls() {
    const n = model.get("n_images");
    slider.max = String(Math.max(0, n - 1));
    number.max = String(Math.max(0, n - 1));
    if (pendingIndex === null) slider.value = String(model.get("index"));
    number.value = String(model.get("index"));
    layerSel.fill((model.get("layers") || []).map((l) => [l, l]));
    opacity.value = String(model.get("opacity"));
    const p = model.get("progress");
    progress.style.visibility = p >= 0 ? "visible" : "hidden";
    stopBtn.style.visibility = p >= 0 ? "visible" : "hidden";
    progress.value = Math.max(0, p);
    status.textContent = model.get("status");
    root.dataset.busy = String(model.get("busy"));
  }

  const handlers = [
    [["_image", "_image_meta"], () => { drawInput(); drawOverlay(); }],
    [["_maps", "_maps_meta", "_order", "_map_stats", "_lut"], () => { drawMaps(); drawOverlay(); }],
    [["channel"], () => { drawMaps(); drawOverlay(); }],
    [["opacity"], () => { syncControls(); drawOverlay(); }],
    [["_recon", "_recon_meta"], drawRecon],
    [["_top", "_top_meta"], drawTop],
    [["_batch", "_batch_meta"], drawBatch],
    [["index", "n_images", "layers", "progress", "status", "busy"], syncControls],
  ];
  const bound = [];
  for (const [traits, fn] of handlers) for (const tr of traits) {
    model.on(`change:${tr}`, fn);
    bound.push([tr, fn]);
  }
  syncControls();
  drawInput();
  drawMaps();
  drawRecon();
  drawOverlay();
  drawTop();

  return () => {
    note.dispose();
    for (const [tr, fn] of bound) model.off(`change:${tr}`, fn);
    for (const s of [layerSel, sortSel, scaleSel]) s.dispose();
    view.dispose();
  };
}

export default { render };
