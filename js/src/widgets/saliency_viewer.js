// SaliencyViewer front end. Python side: cnnwidgets/widgets/saliency_viewer.py
// Traits read: index, n_images, method, methods, method_info, target, class_names, layer, layers,
//   layer_labels, mode, opacity, view, grid_size, steps, samples, noise, baseline, busy, status,
//   status_error, progress; arrays (decodeArray): _image (H x W x C), _probs (K), _heat (h x w
//   codes), _heat_lut (256 x 3), _panels (K x h x w codes), _panel_images (K x H x W x C);
//   _image_meta, _heat_meta (vmin/vmax: the attribution at the ends of the colour scale; value:
//   what it is; note; error), _panels_meta (kind, mode, failed, items[k]: index, method,
//   target_name, vmin, vmax, value, note, error); chart (a bqplot Figure, rendered as a child
//   view; in an exported page, with no widget manager, a static SVG bar chart from _probs).
// Traits written: index, method, target, layer, mode, opacity, view, grid_size, steps, samples,
//   noise, baseline. Message sent: stop.
import { bindTraits } from "../lib/bind.js";
import { barChart } from "../lib/charts.js";
import { decodeArray } from "../lib/codecs.js";
import { mountChild } from "../lib/children.js";
import { colorbar } from "../lib/colorbar.js";
import { boundNumber, boundSelect, h, labelled, live, viewShell } from "../lib/dom.js";
import { attributionOverlay, drawImage, fitScale } from "../lib/image.js";
import { sender } from "../lib/messages.js";
import { imageStepper } from "../lib/stepper.js";


const shown = (v) => v !== null && v !== undefined;


function render({ model, el }) {
  const { root, dispose: disposeShell } = viewShell(model, el, "cnnw-saliency-viewer");
  const isLive = live(model);
  const send = sender(model, "saliency_viewer");
  const set = (k, v) => {
    model.set(k, v);
    model.save_changes();
  };
  const disposers = [];
  const keep = (x) => {
    disposers.push(x.dispose || x);
    return x;
  };
  let frames = 0;
  // a method's menu label, from the core's registry (Python sends it as method_info)
  const info = (m) => (model.get("method_info") || {})[m] || {};
  const label = (m) => info(m).label || m;

  // ---- toolbar: image, method, class, method options
  const allImages = () => Array.from({ length: model.get("n_images") || 0 }, (_, i) => i);
  const stepper = keep(imageStepper(model, {
    values: isLive ? allImages : () => model.get("_export_images") || [],
  }));
  const methodSel = keep(boundSelect(model, "method", [], "cnnw-method",
    { title: "the attribution method that computes the map (hover an entry for what it is)" }));
  const targetSel = h("select", { class: "cnnw-target", "data-trait": "target",
    title: "the class whose score the map explains (a click on a class in the chart does the same)" });
  targetSel.addEventListener("change", () => set("target", Number(targetSel.value)));
  const layerSel = keep(boundSelect(model, "layer", [], "cnnw-layer",
    { title: "the layer Grad-CAM and the layer gradient read (its type and output shape beside its name)" }));
  const steps = keep(boundNumber(model, "steps", "cnnw-steps", { int: true, min: 1, max: 1000, width: "5em",
    title: "Integrated Gradients: steps along the path from the baseline to the image (1-1000; Enter applies)" }));
  const baseline = keep(boundSelect(model, "baseline", [["black", "black"], ["blur", "blurred"], ["noise", "noise"]],
    "cnnw-baseline", { title: "Integrated Gradients: the image the path starts from" }));
  const samples = keep(boundNumber(model, "samples", "cnnw-samples", { int: true, min: 1, max: 1000, width: "5em",
    title: "SmoothGrad: how many noisy copies of the image are averaged (1-1000; Enter applies)" }));
  const noise = keep(boundNumber(model, "noise", "cnnw-noise", { min: 0, max: 1, step: "0.05", width: "5em",
    title: "SmoothGrad: the noise, as a fraction of the image's value range (0-1; Enter applies)" }));
  const kernel = (node) => {
    node.setAttribute("data-needs-kernel", "");
    return node;
  };
  const methodField = kernel(labelled("method", methodSel.node));
  const targetField = kernel(labelled("explain class", targetSel));
  const layerField = kernel(labelled("layer", layerSel.node));
  const stepsField = kernel(labelled("steps", steps.node));
  const baselineField = kernel(labelled("baseline", baseline.node));
  const samplesField = kernel(labelled("samples", samples.node));
  const noiseField = kernel(labelled("noise", noise.node));

  // ---- toolbar: how the map is drawn, and the view
  const modeSel = keep(boundSelect(model, "mode", [["abs", "absolute"], ["signed", "signed"]], "cnnw-mode",
    { title: "absolute: |attribution| on one colour ramp; signed: positive red, negative blue, zero uncoloured" }));
  const opacity = h("input", { type: "range", min: "0", max: "1", step: "0.01", class: "cnnw-opacity",
    "data-trait": "opacity", title: "how strongly the largest attribution covers the image (smaller values cover it less)" });
  opacity.addEventListener("input", () => set("opacity", Number(opacity.value)));
  const viewSel = keep(boundSelect(model, "view",
    [["single", "one image"], ["compare", "compare methods"], ["grid", "many images"]], "cnnw-view",
    { title: "one map; several methods side by side for this image; this method on the next images" }));
  const gridSize = keep(boundNumber(model, "grid_size", "cnnw-grid-size", { int: true, min: 1, max: 100, width: "4.5em",
    title: "how many images the grid shows, from the current one (1-100; Enter applies)" }));
  const modeField = kernel(labelled("display", modeSel.node));
  const viewField = kernel(labelled("view", viewSel.node));
  const gridField = kernel(labelled("images", gridSize.node));
  root.append(
    h("div", { class: "cnnw-toolbar" }, [stepper.node, methodField, targetField, layerField, stepsField, baselineField,
      samplesField, noiseField]),
    h("div", { class: "cnnw-toolbar" }, [modeField, labelled("opacity", opacity), viewField, gridField]),
  );

  // ---- main panel: the map over the image with its colour scale, and the class chart
  const heatCanvas = h("canvas", { class: "cnnw-heat", role: "img" });
  const heatBar = colorbar({ cls: "cnnw-heat-colorbar" });
  const caption = h("div", { class: "cnnw-caption cnnw-heat-caption", "aria-live": "polite" });
  const chartBox = h("div", { class: "cnnw-chart cnnw-sv-chart" });
  const status = h("div", { class: "cnnw-info cnnw-status", "aria-live": "polite" });
  const progress = h("progress", { class: "cnnw-progress", max: "1", value: "0" });
  const stop = kernel(h("button", { class: "cnnw-stop", title: "stop computing the compare/grid panels",
    onclick: () => send("stop") }, ["Stop"]));
  const panels = h("div", { class: "cnnw-thumbs cnnw-panels-grid" });
  root.append(
    h("div", { class: "cnnw-panels cnnw-sv-main" }, [
      h("div", { class: "cnnw-panel cnnw-sv-heat" }, [heatCanvas, heatBar.node, caption]), chartBox]),
    h("div", { class: "cnnw-toolbar cnnw-sv-status" }, [progress, stop, status]),
    panels,
  );
  let chartView = null;
  let closed = false;
  if (isLive) {
    mountChild(model, "chart", chartBox).then((v) => {
      if (closed) v?.remove();
      else chartView = v;
    });
  }

  // no widget manager (an exported page): the class probabilities as a static bar chart
  function drawBars() {
    if (isLive) return;
    const im = model.get("_image_meta") || {};
    const hm = model.get("_heat_meta") || {};
    const probs = decodeArray(model.get("_probs")).data;
    let top = -1;
    for (let i = 0; i < probs.length; i++) if (top < 0 || probs[i] > probs[top]) top = i;
    barChart(chartBox, probs, model.get("class_names") || [], {
      highlight: hm.index === im.index ? hm.target : -1,
      marked: top,
      title: `${im.title || "class probabilities"} of image ${im.index}`,
      xLabel: "class",
      yLabel: im.probs_label || "probability",
    });
    root.dataset.chartIndex = String(im.index);
  }

  const scaleOf = (hh, ww) => fitScale(hh || 1, ww || 1, 224);

  function drawHeat() {
    const im = model.get("_image_meta") || {};
    const hm = model.get("_heat_meta") || {};
    const img = decodeArray(model.get("_image"));
    const heat = decodeArray(model.get("_heat"));
    const [H, W, C] = img.shape;
    if (!H || hm.index !== im.index || heat.shape.length !== 2) return;
    const lut = decodeArray(model.get("_heat_lut")).data;
    const signed = hm.mode === "signed";
    if (hm.error) {
      drawImage(heatCanvas, img.data, H, W, C, scaleOf(H, W));
      heatBar.clear();
    } else {
      attributionOverlay(heatCanvas, img.data, H, W, C, heat.data, heat.shape[0], heat.shape[1], lut,
        model.get("opacity"), signed, scaleOf(H, W));
      heatBar.set({ lut, min: hm.vmin, max: hm.vmax, label: hm.value, diverging: signed });
    }
    frames += 1;
    root.dataset.frame = String(frames);
    root.dataset.heatIndex = String(hm.index);
    root.dataset.heatMethod = hm.method;
    root.dataset.heatTarget = String(hm.target);
    root.dataset.heatError = hm.error ? "true" : "false";
    const what = hm.error ? `${label(hm.method)} failed: ${hm.error}` : `${label(hm.method)} for class ${hm.target_name}`;
    heatCanvas.setAttribute("aria-label", `image ${im.index}: ${what}`);
    const pred = shown(im.probability)
      ? h("span", { class: `cnnw-sv-predicted ${im.correct === false ? "cnnw-wrong" : ""}`.trim(),
        title: im.correct === false ? "a wrong prediction: not the true label" : "" },
      [`${im.predicted} (${(100 * im.probability).toFixed(1)}%)`])
      : h("span", { class: "cnnw-wrong" }, ["n/a"]);
    caption.replaceChildren(
      `image ${im.index}` + (shown(im.label) ? ` · label ${im.label}` : "") + " · predicted ", pred, " · ",
      h("span", { class: hm.error ? "cnnw-wrong cnnw-heat-error" : "" }, [what]),
    );
  }

  function panelNode(m, it, k, imgs, heat, lut) {
    const [, H, W, C] = imgs.shape;
    const [, hh, ww] = heat.shape;
    const img = imgs.data.subarray(k * H * W * C, (k + 1) * H * W * C);
    const canvas = h("canvas", { class: "cnnw-panel-canvas" });
    const sc = fitScale(H, W, 112);
    const signed = m.mode === "signed";
    const bar = colorbar({ cls: "cnnw-panel-colorbar" });
    if (it.error) drawImage(canvas, img, H, W, C, sc);
    else {
      attributionOverlay(canvas, img, H, W, C, heat.data.subarray(k * hh * ww, (k + 1) * hh * ww), hh, ww, lut,
        model.get("opacity"), signed, sc);
      bar.set({ lut, min: it.vmin, max: it.vmax, label: it.value, diverging: signed });
    }
    const text = m.kind === "compare" ? label(it.method)
      : `#${it.index}` + (shown(it.target_name) ? ` · class ${it.target_name}` : "");
    // what the method reported (or why it failed), under the picture
    const sub = it.error
      ? h("div", { class: "cnnw-panel-note cnnw-panel-error cnnw-wrong" }, [`failed: ${it.error}`])
      : h("div", { class: "cnnw-panel-note" }, [it.note || ""]);
    const pick = () => (m.kind === "compare" ? set("method", it.method) : set("index", it.index));
    const attrs = { class: "cnnw-thumb cnnw-panel-item", "data-index": String(it.index), "data-method": it.method,
      "data-error": it.error ? "true" : "false" };
    if (isLive) {
      Object.assign(attrs, { tabindex: "0", role: "button",
        title: m.kind === "compare" ? `show ${label(it.method)} as the main map` : `show image ${it.index}` });
    }
    const node = h("div", attrs, [canvas, h("div", { class: "cnnw-panel-title" }, [text]), bar.node, sub]);
    if (isLive) {
      node.addEventListener("click", pick);
      node.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          pick();
        }
      });
    }
    return node;
  }

  function drawPanels() {
    const m = model.get("_panels_meta") || {};
    if (model.get("view") === "single" || !m.items) {
      panels.replaceChildren();
      delete root.dataset.panels;
      return;
    }
    const heat = decodeArray(model.get("_panels"));
    const imgs = decodeArray(model.get("_panel_images"));
    const lut = decodeArray(model.get("_heat_lut")).data;
    panels.replaceChildren(...(imgs.shape.length === 4 ? m.items.map((it, k) => panelNode(m, it, k, imgs, heat, lut)) : []));
    root.dataset.panels = String(m.items.length);
    root.dataset.panelsFailed = String(m.failed || 0);
    root.dataset.panelsKind = m.kind;
  }

  function fillMenus() {
    methodSel.fill((model.get("methods") || []).map((m) => [m, label(m)]));
    for (const opt of methodSel.node.options) {
      const spec = info(opt.value);
      opt.title = (spec.tip || spec.label || opt.value) + (spec.reference ? ` (${spec.reference})` : "");
    }
    const labels = model.get("layer_labels") || {};
    layerSel.fill((model.get("layers") || []).map((l) => [l, labels[l] ? `${l} · ${labels[l]}` : l]));
    const names = model.get("class_names") || [];
    targetSel.replaceChildren(
      h("option", { value: "-1" }, ["predicted class"]),
      h("option", { value: "-2" }, ["true label"]),
      ...names.map((n, i) => h("option", { value: String(i) }, [String(n) === String(i) ? `class ${n}` : `${i} · ${n}`])),
    );
    targetSel.value = String(model.get("target"));
  }

  function syncControls() {
    targetSel.value = String(model.get("target"));
    const spec = info(model.get("method"));
    layerField.hidden = !spec.layer;
    stepsField.hidden = baselineField.hidden = !spec.steps;
    samplesField.hidden = noiseField.hidden = !spec.samples;
    gridField.hidden = model.get("view") !== "grid";
    opacity.value = String(model.get("opacity"));
  }

  function syncStatus() {
    const p = model.get("progress");
    const running = p >= 0;
    progress.style.visibility = running ? "visible" : "hidden";
    progress.value = Math.max(0, p);
    stop.hidden = !running;
    status.textContent = model.get("status");
    status.classList.toggle("cnnw-wrong", !!model.get("status_error"));
    root.dataset.busy = String(model.get("busy"));
  }

  disposers.push(bindTraits(model, {
    "_image _image_meta _heat _heat_meta _heat_lut": drawHeat,
    "_probs _image_meta _heat_meta class_names": drawBars,
    opacity: () => {
      syncControls();
      drawHeat();
      drawPanels();
    },
    "_panels _panels_meta _panel_images view": drawPanels,
    "methods method_info layers layer_labels class_names": () => {
      fillMenus();
      syncControls();
    },
    "method target view": syncControls,
    "progress status status_error busy": syncStatus,
    n_images: () => stepper.update(),
  }));

  return () => {
    closed = true;
    for (const d of disposers) d();
    disposeShell();
    if (chartView) chartView.remove();
  };
}

export default { render };
