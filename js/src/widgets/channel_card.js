// ChannelCard front end. Python side: cnnwidgets/widgets/channel_card.py
// Traits read: layer, layers, layer_labels, channel, n_channels, k, patterns, steps, busy, status,
//   progress; arrays (decodeArray): _weights (T x kh x kw codes, or 1 x kh x kw x 3 RGB),
//   _weights_lut (256 x 3), _patterns (P x H x W x C), _top (k x H x W x C), _hist (bins);
//   _weights_meta (kind, in_channels, vmin, vmax, note), _patterns_meta (state, step, steps,
//   values, error), _top_meta (state, items[i]: index, value, box, position, label; error),
//   _stats_meta (state, edges, fraction_active, quantiles, dead, mean, n_images, n_valid,
//   by_class, class_names, error).
// Traits written: layer, channel. No messages.
import { bindTraits } from "../lib/bind.js";
import { barChart } from "../lib/charts.js";
import { decodeArray } from "../lib/codecs.js";
import { colorbar } from "../lib/colorbar.js";
import { boundNumber, boundSelect, formatNumber, h, labelled, viewShell } from "../lib/dom.js";
import { drawImage, fitScale } from "../lib/image.js";

/** The accent colour of a top image's region (the Python side's top_overlays() draws the same). */
const BOX = [245, 133, 24];

/** An H x W x C image with a one-pixel frame around box [x0, y0, x1, y1) (as RGB). */
function framed(bytes, H, W, C, box) {
  const out = new Uint8ClampedArray(H * W * 3);
  for (let i = 0; i < H * W; i++) {
    for (let ch = 0; ch < 3; ch++) out[3 * i + ch] = C === 1 ? bytes[i] : bytes[C * i + ch];
  }
  const [x0, y0, x1, y1] = box;
  const paint = (x, y) => {
    const o = 3 * (y * W + x);
    out[o] = BOX[0];
    out[o + 1] = BOX[1];
    out[o + 2] = BOX[2];
  };
  for (let x = x0; x < x1; x++) {
    paint(x, y0);
    paint(x, y1 - 1);
  }
  for (let y = y0; y < y1; y++) {
    paint(x0, y);
    paint(x1 - 1, y);
  }
  return out;
}

function render({ model, el }) {
  const { root, dispose: disposeShell } = viewShell(model, el, "cnnw-channel-card");
  const disposers = [];
  const keep = (x) => {
    disposers.push(x.dispose || x);
    return x;
  };
  const kernel = (node) => {
    node.setAttribute("data-needs-kernel", "");
    return node;
  };

  // ---- toolbar: which channel
  const layerSel = keep(boundSelect(model, "layer", [], "cnnw-layer",
    { title: "the layer whose channel the card shows (its type and output shape beside its name)" }));
  const channelIn = keep(boundNumber(model, "channel", "cnnw-channel", { int: true, min: -1, width: "5em",
    title: "the channel shown (Enter applies); a click on a map or a filter in a linked view sets it too" }));
  const title = h("div", { class: "cnnw-card-title", role: "heading", "aria-level": "3" });
  const status = h("div", { class: "cnnw-info cnnw-status", "aria-live": "polite" });
  const progress = h("progress", { class: "cnnw-progress", max: "1", value: "0" });
  root.append(
    h("div", { class: "cnnw-toolbar" }, [kernel(labelled("layer", layerSel.node)),
      kernel(labelled("channel", channelIn.node)), progress]),
    title, status,
  );

  // ---- the four sections
  const section = (cls, heading, children) => h("section", { class: `cnnw-card-section ${cls}` },
    [h("h4", { class: "cnnw-card-heading" }, [heading]), ...children]);
  const weightsBox = h("div", { class: "cnnw-card-weights" });
  const weightsBar = colorbar({ cls: "cnnw-card-weights-colorbar" });
  const weightsNote = h("div", { class: "cnnw-info cnnw-card-weights-note" });
  const patternsBox = h("div", { class: "cnnw-thumbs cnnw-card-patterns" });
  const patternsNote = h("div", { class: "cnnw-info cnnw-card-patterns-note", "aria-live": "polite" });
  const topBox = h("div", { class: "cnnw-thumbs cnnw-card-top" });
  const topNote = h("div", { class: "cnnw-info cnnw-card-top-note" });
  const histBox = h("div", { class: "cnnw-chart cnnw-card-hist" });
  const statsNote = h("div", { class: "cnnw-info cnnw-card-stats-note" });
  const classBox = h("div", { class: "cnnw-chart cnnw-card-classes" });
  root.append(h("div", { class: "cnnw-card-grid" }, [
    section("cnnw-card-filter", "filter weights", [weightsBox, weightsBar.node, weightsNote]),
    section("cnnw-card-oip", "optimized input patterns", [patternsBox, patternsNote]),
    section("cnnw-card-images", "images that excite it most", [topBox, topNote]),
    section("cnnw-card-stats", "activation over the data", [histBox, statsNote, classBox]),
  ]));

  const same = (meta) => meta && meta.layer === model.get("layer") && meta.channel === model.get("channel");

  function drawTitle() {
    const ch = model.get("channel");
    title.textContent = ch < 0 ? `${model.get("layer")} · no channel selected`
      : `${model.get("layer")} · channel ${ch} of ${model.get("n_channels")}`;
    root.dataset.layer = model.get("layer");
    root.dataset.channel = String(ch);
  }

  function drawWeights() {
    const m = model.get("_weights_meta") || {};
    weightsNote.textContent = m.note || "";
    root.dataset.weightsKind = m.kind || "";
    if (!same(m) || m.kind === "none" || !m.kind) {
      weightsBox.replaceChildren();
      weightsBar.clear();
      return;
    }
    const codes = decodeArray(model.get("_weights"));
    const lut = decodeArray(model.get("_weights_lut")).data;
    const canvases = [];
    if (m.kind === "rgb") {
      const [, kh, kw] = codes.shape;
      const c = h("canvas", { class: "cnnw-card-kernel", role: "img", "aria-label": "the RGB filter" });
      drawImage(c, codes.data, kh, kw, 3, fitScale(kh, kw, 72));
      canvases.push(c);
    } else {
      const [T, kh, kw] = codes.shape;
      const sc = fitScale(kh, kw, T > 16 ? 24 : 48);
      for (let t = 0; t < Math.min(T, 256); t++) {
        const rgb = new Uint8ClampedArray(kh * kw * 3);
        for (let i = 0; i < kh * kw; i++) {
          const k = 3 * codes.data[t * kh * kw + i];
          rgb[3 * i] = lut[k];
          rgb[3 * i + 1] = lut[k + 1];
          rgb[3 * i + 2] = lut[k + 2];
        }
        const c = h("canvas", { class: "cnnw-card-kernel", title: `input channel ${t}` });
        drawImage(c, rgb, kh, kw, 3, sc);
        canvases.push(c);
      }
    }
    weightsBox.replaceChildren(...canvases);
    weightsBar.set({ lut: m.kind === "rgb" ? ["#000", "#fff"] : lut, min: m.vmin, max: m.vmax, label: "weight",
      diverging: m.kind !== "rgb" });
    root.dataset.weightTiles = String(canvases.length);
  }

  function drawPatterns() {
    const m = model.get("_patterns_meta") || {};
    root.dataset.patternsState = same(m) ? (m.state || "") : "stale";
    patternsNote.classList.toggle("cnnw-wrong", m.state === "failed");
    if (!same(m) || m.state === "off") {
      patternsBox.replaceChildren();
      patternsNote.textContent = m.state === "off" ? "no patterns asked for (patterns=0)" : "";
      return;
    }
    if (m.state === "failed") {
      patternsBox.replaceChildren();
      patternsNote.textContent = `the optimization failed: ${m.error}`;
      return;
    }
    const imgs = decodeArray(model.get("_patterns"));
    if (imgs.shape.length === 4) {
      const [P, H, W, C] = imgs.shape;
      const sc = fitScale(H, W, 96);
      patternsBox.replaceChildren(...Array.from({ length: P }, (_, p) => {
        const c = h("canvas", { class: "cnnw-card-pattern", role: "img",
          "aria-label": `pattern ${p + 1}: objective ${formatNumber(m.values?.[p])}` });
        drawImage(c, imgs.data.subarray(p * H * W * C, (p + 1) * H * W * C), H, W, C, sc);
        return h("figure", { class: "cnnw-thumb" }, [c, h("figcaption", {}, [`${formatNumber(m.values?.[p])}`])]);
      }));
    } else patternsBox.replaceChildren();
    patternsNote.textContent = m.state === "done"
      ? `${m.step} steps · the channel's mean activation under each; a diversity objective keeps them apart`
      : `growing: step ${m.step || 0} of ${m.steps} ...`;
    root.dataset.patterns = String(imgs.shape[0] || 0);
    root.dataset.patternStep = String(m.step || 0);
  }

  function drawTop() {
    const m = model.get("_top_meta") || {};
    root.dataset.topState = same(m) ? (m.state || "") : "stale";
    topNote.classList.toggle("cnnw-wrong", m.state === "failed");
    if (!same(m) || m.state !== "done") {
      topBox.replaceChildren();
      topNote.textContent = m.state === "failed" ? `failed: ${m.error}` : m.state === "computing" ? "reading the data ..." : "";
      return;
    }
    const imgs = decodeArray(model.get("_top"));
    const [, H, W, C] = imgs.shape;
    const sc = fitScale(H, W, 84);
    topBox.replaceChildren(...m.items.map((it, i) => {
      const c = h("canvas", { class: "cnnw-card-top-image", role: "img",
        "aria-label": `image ${it.index}: maximum ${formatNumber(it.value)}; its region outlined` });
      drawImage(c, framed(imgs.data.subarray(i * H * W * C, (i + 1) * H * W * C), H, W, C, it.box), H, W, 3, sc);
      return h("figure", { class: "cnnw-thumb", "data-index": String(it.index),
        title: `image ${it.index}${it.label !== null && it.label !== undefined ? ` (${it.label})` : ""}: the channel's `
          + `maximum ${formatNumber(it.value)} at row ${it.position[0]}, column ${it.position[1]} of its map; `
          + `outlined: the ${it.box[2] - it.box[0]} x ${it.box[3] - it.box[1]} pixels that position sees` },
      [c, h("figcaption", {}, [`#${it.index} · ${formatNumber(it.value)}`])]);
    }));
    topNote.textContent = "outlined: the receptive field of the channel's strongest position in each image";
    root.dataset.top = String(m.items.length);
  }

  function drawStats() {
    const m = model.get("_stats_meta") || {};
    statsNote.classList.toggle("cnnw-wrong", m.state === "failed" || !!m.dead);
    if (!same(m) || m.state !== "done") {
      histBox.replaceChildren();
      classBox.replaceChildren();
      statsNote.textContent = m.state === "failed" ? `failed: ${m.error}` : "";
      return;
    }
    const counts = decodeArray(model.get("_hist")).data;
    let top = 0;
    for (const v of counts) top = Math.max(top, v);
    const edges = m.edges || [];
    const labels = Array.from(counts, (_, i) => formatNumber((edges[i] + edges[i + 1]) / 2));
    barChart(histBox, Array.from(counts, (v) => (top ? v / top : 0)), labels, {
      title: `maximum activation per image (${m.n_valid} images)`, xLabel: "maximum activation", yLabel: "share of the tallest bin",
      ends: true,
    });
    const q = m.quantiles || [];
    statsNote.textContent = m.dead ? `dead on these images: the channel never rises above 0 in any of the ${m.n_valid} images`
      : `fires (maximum > 0) in ${(100 * m.fraction_active).toFixed(1)}% of the images · maximum: median ${formatNumber(q[2])}, `
        + `quartiles ${formatNumber(q[1])} to ${formatNumber(q[3])}, largest ${formatNumber(q[4])}`;
    if (m.by_class) {
      let hi = 0;
      for (const v of m.by_class) if (v !== null) hi = Math.max(hi, v);
      let best = -1;
      m.by_class.forEach((v, i) => {
        if (v !== null && (best < 0 || v > m.by_class[best])) best = i;
      });
      barChart(classBox, m.by_class.map((v) => (v !== null && hi > 0 ? Math.max(0, v) / hi : 0)), m.class_names || [], {
        highlight: best, title: "mean maximum per class", xLabel: "class", yLabel: "share of the largest",
      });
      root.dataset.bestClass = String(best);
    } else classBox.replaceChildren();
    root.dataset.statsImages = String(m.n_valid);
  }

  function syncStatus() {
    const p = model.get("progress");
    progress.style.visibility = p >= 0 ? "visible" : "hidden";
    progress.value = Math.max(0, p);
    status.textContent = model.get("status");
    root.dataset.busy = String(model.get("busy"));
  }

  function fillMenus() {
    const labels = model.get("layer_labels") || {};
    layerSel.fill((model.get("layers") || []).map((l) => [l, labels[l] ? `${l} · ${labels[l]}` : l]));
    channelIn.node.max = String(Math.max(0, (model.get("n_channels") || 1) - 1));
  }

  disposers.push(bindTraits(model, {
    "layers layer_labels n_channels": fillMenus,
    "layer channel n_channels": () => {
      drawTitle();
      drawWeights();
      drawPatterns();
      drawTop();
      drawStats();
    },
    "_weights _weights_meta _weights_lut": drawWeights,
    "_patterns _patterns_meta": drawPatterns,
    "_top _top_meta": drawTop,
    "_hist _stats_meta": drawStats,
    "progress status busy": syncStatus,
  }));

  return () => {
    for (const d of disposers) d();
    disposeShell();
  };
}

export default { render };
