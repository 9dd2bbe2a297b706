// ActivationExplorer front end. Python side: cnnwidgets/widgets/activation_explorer.py
// Traits read: index, n_images, layer, layers, layer_labels, channel, sort, scale, opacity, busy,
//   progress, status, selection_note, color_scales, model_note, view_error, control_errors;
//   arrays (lib/codecs.js decodeArray): _image uint8 (H, W, C), _maps uint8 (C, h, w) codes,
//   _map_stats float32 (C, 3) mean/max/min, _order int32 (C,), _lut/_overlay_lut uint8 (256, 3),
//   _recon uint8 (H, W, C), _top uint8 (k, H, W, C), _batch uint8 (N, 2, H, W, 3); what they
//   show: _image_info {index, label, predicted, probability, correct} (predicted/probability
//   null when the output holds no class scores: model_note says why), _maps_info {index, layer,
//   scale, sort, rows, columns, zoom}, _recon_info {index, layer, channel, strongest},
//   _top_info {layer, channel, indices, scores} or {note}, _batch_info {layer, indices,
//   channels} or {note}. Exported pages: _export_images, _export_note.
// Traits written: index, layer, channel, sort, scale, opacity. Messages (messages.json):
//   top_images, batch, stop.
import { bindTraits } from "../lib/bind.js";
import { decodeArray } from "../lib/codecs.js";
import { colorbar, formatTick } from "../lib/colorbar.js";
import { boundSelect, formatNumber, h, labelled, live, section, viewShell } from "../lib/dom.js";
import { blendOverlay, drawImage, fitScale } from "../lib/image.js";
import { sender } from "../lib/messages.js";
import { imageStepper } from "../lib/stepper.js";
import { onThemeChange, themeColors } from "../lib/theme.js";
import { tileOrigin } from "../lib/tiles.js";
import { TileView } from "../lib/tileview.js";

const PANEL = 168; // screen pixels of the larger side of the image panels
const THUMB = 56;
const SORTS = [["index", "channel number"], ["mean", "mean activation, strongest first"], ["max", "max activation, strongest first"]];
const SCALES = [["shared", "one range for all maps"], ["per_map", "each map its own range"]];
const SORT_WORDS = { mean: "mean activation", max: "max activation" };


/** A canvas of `w` x `h` filled with the theme's sunken background (a picture not there yet). */
function blank(canvas, w, h) {
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = themeColors(canvas).bgSunken;
  ctx.fillRect(0, 0, w, h);
}

function render({ model, el }) {
  const shell = viewShell(model, el, "cnnw-activation-explorer");
  const root = shell.root;
  // inside an HBox (a flex row) the view may shrink below its content's natural width
  el.style.minWidth = "0";
  el.style.maxWidth = "100%";
  const isLive = live(model);
  const send = sender(model, "activation_explorer");
  const set = (k, v) => {
    model.set(k, v);
    model.save_changes();
  };
  const arr = (k) => decodeArray(model.get(k));
  const info = (k) => model.get(k) || {};

  // ---- toolbar: image, layer, order and scale of the maps, overlay opacity
  let allImages = [];
  const images = () => {
    if (!isLive) return model.get("_export_images") || [];
    const n = model.get("n_images") || 0;
    if (allImages.length !== n) allImages = Array.from({ length: n }, (_, i) => i);
    return allImages;
  };
  const stepper = imageStepper(model, { values: images, label: "image" });
  const layerSel = boundSelect(model, "layer", [], "cnnw-layer",
    { title: "the layer whose feature maps are shown (each with its type and output shape)" });
  const sortSel = boundSelect(model, "sort", SORTS, "cnnw-sort",
    { title: "the order of the maps: by channel number, or strongest first" });
  const scaleSel = boundSelect(model, "scale", SCALES, "cnnw-scale",
    { title: "the colour range of the maps: one for all maps, or each map its own min to max" });
  const opacity = h("input", { type: "range", min: "0", max: "1", step: "0.01", class: "cnnw-opacity", "data-trait": "opacity",
    title: "how strongly the selected map covers the image in the overlay (0: the image only)" });
  opacity.addEventListener("input", () => set("opacity", Number(opacity.value)));
  const needsKernel = (node) => {
    node.setAttribute("data-needs-kernel", "");
    return node;
  };
  root.append(
    h("div", { class: "cnnw-toolbar" }, [
      // a field of its own: a refused image number shows its message here (lib/dom.js errorSlot)
      h("div", { class: "cnnw-field cnnw-image-field" }, [stepper.node]),
      needsKernel(labelled("layer", layerSel, layerSel.node.title)),
      needsKernel(labelled("sort", sortSel, sortSel.node.title)),
      needsKernel(labelled("colour scale", scaleSel, scaleSel.node.title)),
      labelled("overlay opacity", opacity, opacity.title),
    ]),
  );

  // ---- panels: the input, the deconvnet projection, the selected map over the input
  const inputCanvas = h("canvas", { class: "cnnw-input", "aria-label": "the input image" });
  const inputCap = h("div", { class: "cnnw-caption cnnw-input-caption" });
  const reconCanvas = h("canvas", { class: "cnnw-recon", "aria-label": "deconvnet projection of a map to pixel space" });
  const reconCap = h("div", { class: "cnnw-caption cnnw-recon-caption" });
  const reconBar = colorbar({ cls: "cnnw-recon-colorbar" });
  const overlayCanvas = h("canvas", { class: "cnnw-overlay-view", "aria-label": "the selected map over the image" });
  const overlayCap = h("div", { class: "cnnw-caption cnnw-overlay-caption" });
  const overlayBar = colorbar({ cls: "cnnw-overlay-colorbar" });
  const reconPanel = h("div", { class: "cnnw-panel cnnw-recon-panel" }, [reconCanvas, reconCap, reconBar.node]);
  root.append(
    h("div", { class: "cnnw-panels" }, [
      h("div", { class: "cnnw-panel cnnw-input-panel" }, [inputCanvas, inputCap]),
      reconPanel,
      h("div", { class: "cnnw-panel cnnw-overlay-panel" }, [overlayCanvas, overlayCap, overlayBar.node]),
    ]),
  );

  // ---- the maps: what they are, their colour scale, the channel order, the grid
  const mapsInfo = h("div", { class: "cnnw-info cnnw-maps-info" });
  const mapsBar = colorbar({ cls: "cnnw-maps-colorbar" });
  const orderCap = h("div", { class: "cnnw-caption cnnw-maps-order" });
  root.append(h("div", { class: "cnnw-maps-head" }, [mapsInfo, mapsBar.node]), orderCap);
  let stats = new Float32Array(0);
  let order = new Int32Array(0);
  let pointed = -1; // the tile under the mouse or the keyboard cursor
  const describe = (cell) => {
    const c = order[cell];
    return `channel ${c} · mean ${formatNumber(stats[3 * c])} · max ${formatNumber(stats[3 * c + 1])} · min ${formatNumber(stats[3 * c + 2])}`;
  };
  const view = new TileView(root, {
    describe,
    canvasClass: "cnnw-canvas cnnw-maps",
    label: "feature maps: arrow keys move, Enter selects the channel",
    onClick: (cell) => set("channel", order[cell]),
    onCursor: (cell) => {
      pointed = cell;
      drawMapsBar();
    },
    maxHeight: () => 420,
  });
  root.append(view.node);
  // channel numbers on the tiles of sorted maps, drawn with the highlight (on the overlay canvas)
  const drawRings = view.drawHighlight.bind(view);
  view.drawHighlight = (x0, y0, vw, vh) => {
    drawRings(x0, y0, vw, vh);
    drawChannelLabels(x0, y0, vw, vh);
  };
  const onHover = () => {
    pointed = Number(root.dataset.hoverTile ?? -1);
    drawMapsBar();
  };
  const onLeave = () => {
    pointed = -1;
    drawMapsBar();
  };
  view.canvas.addEventListener("mousemove", onHover);
  view.canvas.addEventListener("mouseleave", onLeave);
  // the keyboard cursor points (and its tooltip shows) only while the maps have the focus
  const onBlur = () => onLeave(); // the tile view hides its keyboard tooltip itself
  view.canvas.addEventListener("blur", onBlur);

  // ---- dataset examples: top images of the selected channel, batch view of the layer
  const topBtn = h("button", { class: "cnnw-top-button", title: "find the images of the whole set on which the selected map fires most (one pass over the data)" },
    ["top images for the selected channel"]);
  const batchBtn = h("button", { class: "cnnw-batch-button", title: "project the strongest map of this layer to pixels for 12 images from the current one" },
    ["batch view: strongest map of 12 images"]);
  const stopBtn = h("button", { class: "cnnw-stop", title: "stop the pass over the data" }, ["stop"]);
  const progress = h("progress", { class: "cnnw-progress", max: "1", value: "0", "aria-label": "progress of the pass over the data" });
  const status = h("span", { class: "cnnw-status", role: "status" });
  topBtn.addEventListener("click", () => send("top_images"));
  batchBtn.addEventListener("click", () => send("batch"));
  stopBtn.addEventListener("click", () => send("stop"));
  root.append(needsKernel(h("div", { class: "cnnw-toolbar cnnw-dataset-toolbar" }, [topBtn, batchBtn, stopBtn, progress, status])));
  const topNote = h("div", { class: "cnnw-info cnnw-top-note" });
  const thumbs = h("div", { class: "cnnw-thumbs cnnw-top" });
  const topSec = section("top images", [topNote, thumbs], { cls: "cnnw-top-section" });
  const batchNote = h("div", { class: "cnnw-info cnnw-batch-note" });
  const batch = h("div", { class: "cnnw-thumbs cnnw-batch" });
  const batchSec = section("batch view", [batchNote, batch], { cls: "cnnw-batch-section" });
  root.append(topSec, batchSec);

  // ---- drawing
  const imageShape = () => {
    const img = arr("_image");
    return img.shape.length === 3 ? img.shape : null;
  };
  const panelScale = (s) => fitScale(s[0], s[1], PANEL);
  const placeholder = (canvas) => {
    const s = imageShape() || [28, 28];
    blank(canvas, s[1] * panelScale(s), s[0] * panelScale(s));
  };

  /** The colour range of channel c's codes: all maps' range (scale "shared") or its own. */
  function rangeOf(c) {
    if (info("_maps_info").scale === "per_map") return c >= 0 && c < stats.length / 3 ? [stats[3 * c + 2], stats[3 * c + 1]] : null;
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < stats.length / 3; i++) {
      lo = Math.min(lo, stats[3 * i + 2]);
      hi = Math.max(hi, stats[3 * i + 1]);
    }
    return stats.length ? [lo, hi] : null;
  }

  function drawInput() {
    const s = imageShape();
    if (!s) {
      placeholder(inputCanvas);
      inputCap.textContent = "";
      return;
    }
    drawImage(inputCanvas, arr("_image").data, s[0], s[1], s[2], panelScale(s));
    const m = info("_image_info");
    const index = info("_maps_info").index ?? m.index;
    if (m.index !== index) {
      inputCap.replaceChildren(h("span", {}, [`image ${index} · predicting …`]));
      return;
    }
    const head = `image ${index}` + (m.label !== null && m.label !== undefined ? ` · label ${m.label}` : "");
    if (m.predicted === null || m.predicted === undefined) {
      // the model's output holds no class scores the kernel can read: model_note says why
      inputCap.replaceChildren(h("span", {}, [head]), h("span", { class: "cnnw-no-prediction" }, [" · no prediction (see the note above)"]));
      return;
    }
    inputCap.replaceChildren(
      h("span", {}, [head + " · predicted "]),
      h("span", { class: m.correct === false ? "cnnw-wrong" : "cnnw-right", title: m.correct === false ? "a wrong prediction" : "" },
        [`${m.predicted} (${(100 * m.probability).toFixed(1)}%)${m.correct === false ? " ✗ wrong" : ""}`]),
    );
  }

  function drawRecon() {
    const r = arr("_recon");
    const m = info("_recon_info");
    const mi = info("_maps_info");
    if (r.shape.length !== 3) {
      placeholder(reconCanvas);
      reconCap.textContent = "projection to pixels: computing …";
      reconBar.clear();
      return;
    }
    const [H, W, C] = r.shape;
    drawImage(reconCanvas, r.data, H, W, C, fitScale(H, W, PANEL));
    const stale = m.index !== mi.index || m.layer !== mi.layer;
    reconPanel.classList.toggle("cnnw-stale", stale);
    reconCap.textContent = `${m.strongest ? "strongest map" : "selected map"}: channel ${m.channel} of ${m.layer}, projected to pixels (deconvnet)`
      + (stale ? ` · of image ${m.index}; updating …` : "");
    const cs = (model.get("color_scales") || {}).projection;
    if (cs && !stale) reconBar.set({ lut: arr("_lut").data, min: cs.min, max: cs.max, label: cs.label, note: cs.note });
    else reconBar.clear();
  }

  function drawOverlay() {
    stats = arr("_map_stats").data;
    const ch = model.get("channel");
    const maps = arr("_maps");
    const s = imageShape();
    const n = maps.shape.length === 3 ? maps.shape[0] : 0;
    if (ch < 0 || ch >= n || !s) {
      placeholder(overlayCanvas);
      overlayCap.textContent = "click a map (or focus the maps, move with the arrow keys, press Enter) to enlarge it over the image";
      overlayBar.clear();
      root.dataset.overlayChannel = "-1";
      return;
    }
    const [, mh, mw] = maps.shape;
    const codes = maps.data.subarray(ch * mh * mw, (ch + 1) * mh * mw);
    const lut = arr("_overlay_lut").data;
    blendOverlay(overlayCanvas, arr("_image").data, s[0], s[1], s[2], codes, mh, mw, lut, model.get("opacity"), panelScale(s));
    overlayCap.textContent = `channel ${ch} (${mh}×${mw}) over the image · max ${formatNumber(stats[3 * ch + 1])}`;
    const r = rangeOf(ch);
    const perMap = info("_maps_info").scale === "per_map";
    if (r) overlayBar.set({ lut, min: r[0], max: r[1], label: `activation of channel ${ch}`, note: perMap ? "its own range" : "the maps' shared range" });
    else overlayBar.clear();
    root.dataset.overlayChannel = String(ch);
    root.dataset.overlayFrame = String(Number(root.dataset.overlayFrame || 0) + 1);
  }

  function drawMapsBar() {
    if (!stats.length || !order.length) return mapsBar.clear();
    const lut = arr("_lut").data;
    if (info("_maps_info").scale !== "per_map") {
      const r = rangeOf(-1);
      delete mapsBar.node.dataset.channel;
      return mapsBar.set({ lut, min: r[0], max: r[1], label: "activation", note: "one range for all maps" });
    }
    // each map its own range: the pointed map's, else the selected one's, else the first tile's
    const ch = model.get("channel");
    const c = pointed >= 0 && pointed < order.length ? order[pointed] : ch >= 0 && ch < order.length ? ch : order[0];
    const r = rangeOf(c);
    mapsBar.set({ lut, min: r[0], max: r[1], label: "activation", note: `per map: each map its own range; channel ${c}` });
    mapsBar.node.dataset.channel = String(c);
    return undefined;
  }

  function drawChannelLabels(x0, y0, vw, vh) {
    const s = view.state;
    const mi = info("_maps_info");
    let drawn = 0;
    if (s && s.grid && mi.sort && mi.sort !== "index") {
      const tw = s.grid.tile_w * s.zoom, th = s.grid.tile_h * s.zoom;
      if (tw >= 14 && th >= 12) {
        const c = view.octx;
        c.font = "9px sans-serif";
        c.textBaseline = "top";
        for (let t = 0; t < s.grid.n_tiles; t++) {
          const o = tileOrigin(s.grid, s.zoom, s.padding, t);
          if (o.x + tw < x0 || o.y + th < y0 || o.x > x0 + vw || o.y > y0 + vh) continue;
          const text = String(order[t]);
          const w = Math.min(tw - 2, c.measureText(text).width + 4);
          // dark box, light digits: readable on any tile colour
          c.fillStyle = "rgba(0, 0, 0, 0.72)";
          c.fillRect(o.x - x0 + 1, o.y - y0 + 1, w, 11);
          c.fillStyle = "rgb(255, 255, 255)";
          c.fillText(text, o.x - x0 + 3, o.y - y0 + 2, tw - 4);
          drawn += 1;
        }
      }
    }
    root.dataset.channelLabels = String(drawn);
  }

  function drawMaps() {
    const mi = info("_maps_info");
    const maps = arr("_maps");
    stats = arr("_map_stats").data;
    order = arr("_order").data;
    if (maps.shape.length !== 3 || order.length !== maps.shape[0]) return;
    const [n, th, tw] = maps.shape;
    const grid = { n_tiles: n, rows: mi.rows, columns: mi.columns, tile_h: th, tile_w: tw, rgb: false, label: mi.layer };
    const ch = model.get("channel");
    view.highlight = ch >= 0 ? [order.indexOf(ch)] : [];
    view.set({ grid, codes: maps.data, lut: arr("_lut").data, zoom: mi.zoom, padding: 1, order });
    const what = (model.get("layer_labels") || {})[mi.layer];
    mapsInfo.textContent = `${mi.layer}${what ? ` (${what})` : ""} · ${n} maps of ${th}×${tw} for image ${mi.index} · hover for statistics; click, or arrow keys and Enter, to select`;
    if (mi.sort && mi.sort !== "index") {
      const first = Array.from(order.subarray(0, 16)).join(", ");
      orderCap.textContent = `sorted by ${SORT_WORDS[mi.sort] || mi.sort}, strongest first: channels ${first}${n > 16 ? ", …" : ""} (each tile is labelled with its channel)`;
      orderCap.hidden = false;
    } else {
      orderCap.textContent = "";
      orderCap.hidden = true;
    }
    root.dataset.mapsIndex = String(mi.index);
    root.dataset.mapsLayer = mi.layer;
    root.dataset.mapsSort = mi.sort || "index";
    drawMapsBar();
  }

  /** A clickable (and focusable: Enter opens it) thumbnail of image `idx`. */
  function thumb(idx, cls, canvases, text) {
    const reachable = isLive || (model.get("_export_images") || []).includes(idx);
    const open = () => reachable && set("index", idx);
    return h("div", {
      class: `cnnw-thumb ${cls}`, "data-index": String(idx), tabindex: "0", role: "button",
      title: reachable ? `open image ${idx}` : `image ${idx} is not in this exported page`,
      onclick: open, onkeydown: (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          open();
        }
      },
    }, [h("div", { class: "cnnw-thumb-pictures" }, canvases), h("span", {}, [text])]);
  }

  function drawTop() {
    const m = info("_top_info");
    const top = arr("_top");
    const legend = topSec.querySelector("legend");
    if (m.indices && top.shape.length === 4) {
      const [, H, W, C] = top.shape;
      const size = H * W * C;
      legend.textContent = `top ${m.indices.length} images for channel ${m.channel} of ${m.layer} (by max activation)`;
      topNote.hidden = true;
      thumbs.replaceChildren(...m.indices.map((idx, i) => {
        const c = drawImage(h("canvas"), top.data.subarray(i * size, (i + 1) * size), H, W, C, fitScale(H, W, THUMB));
        return thumb(idx, "cnnw-top-item", [c], `#${idx} · ${formatTick(m.scores[i])}`);
      }));
      topSec.hidden = false;
    } else if (m.note) {
      legend.textContent = "top images";
      topNote.textContent = m.note;
      topNote.hidden = false;
      thumbs.replaceChildren();
      topSec.hidden = false;
    } else {
      thumbs.replaceChildren();
      topSec.hidden = true;
    }
  }

  function drawBatch() {
    const m = info("_batch_info");
    const b = arr("_batch");
    const legend = batchSec.querySelector("legend");
    if (m.indices && b.shape.length === 5) {
      const [, , H, W, C] = b.shape;
      const size = H * W * C;
      const sc = fitScale(H, W, THUMB);
      legend.textContent = `batch view: the strongest map of ${m.layer} projected to pixels, images ${m.indices[0]}–${m.indices[m.indices.length - 1]}`;
      batchNote.hidden = true;
      batch.replaceChildren(...m.indices.map((idx, i) => {
        const a = drawImage(h("canvas"), b.data.subarray(2 * i * size, (2 * i + 1) * size), H, W, C, sc);
        const p = drawImage(h("canvas"), b.data.subarray((2 * i + 1) * size, (2 * i + 2) * size), H, W, C, sc);
        const node = thumb(idx, "cnnw-batch-item", [a, p], `#${idx} · channel ${m.channels[i]}`);
        node.dataset.channel = String(m.channels[i]);
        return node;
      }));
      batchSec.hidden = false;
    } else if (m.note) {
      legend.textContent = "batch view";
      batchNote.textContent = m.note;
      batchNote.hidden = false;
      batch.replaceChildren();
      batchSec.hidden = false;
    } else {
      batch.replaceChildren();
      batchSec.hidden = true;
    }
  }

  function syncLayers() {
    const labels = model.get("layer_labels") || {};
    layerSel.fill((model.get("layers") || []).map((l) => [l, labels[l] ? `${l} · ${labels[l]}` : l]));
  }

  function syncStatus() {
    const p = model.get("progress");
    progress.hidden = !(p >= 0);
    stopBtn.hidden = !(p >= 0);
    progress.value = Math.max(0, p);
    status.textContent = model.get("status") || "";
    root.dataset.busy = String(model.get("busy"));
  }

  const drawAll = () => {
    drawInput();
    drawMaps();
    drawRecon();
    drawOverlay();
  };
  const unbind = bindTraits(model, {
    "_image _image_info": () => { drawInput(); drawOverlay(); },
    "_maps _maps_info _order _map_stats _lut layer_labels": () => { drawMaps(); drawInput(); drawOverlay(); drawRecon(); },
    channel: () => { drawMaps(); drawOverlay(); },
    opacity: () => {
      opacity.value = String(model.get("opacity"));
      drawOverlay();
    },
    "_recon _recon_info color_scales": drawRecon,
    "_top _top_info": drawTop,
    "_batch _batch_info": drawBatch,
    "layers layer_labels": syncLayers,
    "n_images _export_images": () => stepper.update(),
    "progress status busy": syncStatus,
  });
  // canvases drawn with theme colours (the placeholders) follow a theme switch; the maps grid
  // redraws its gaps itself
  const offTheme = onThemeChange(drawAll);

  return () => {
    unbind();
    offTheme();
    view.canvas.removeEventListener("mousemove", onHover);
    view.canvas.removeEventListener("mouseleave", onLeave);
    view.canvas.removeEventListener("blur", onBlur);
    for (const s of [layerSel, sortSel, scaleSel, stepper]) s.dispose();
    view.dispose();
    shell.dispose();
  };
}

export default { render };
