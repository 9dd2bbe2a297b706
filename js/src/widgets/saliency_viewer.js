// SaliencyViewer front end. Python side: cnnwidgets/widgets/saliency_viewer.py
// Traits read: index, n_images, method, methods, method_info, target, class_names, layer, layers, display,
//   cmap, opacity, view, busy, status, progress, _image/_image_meta, _heat (uint8 H x W codes),
//   _heat_meta, _heat_lut (256 x 3), _panels (K x H x W codes), _panel_images, _panels_meta,
//   chart (a bqplot Figure, rendered as a child view), _probs (float32 K, the class
//   probabilities of _image_meta.index, or the share of pixels per class when
//   _image_meta.probs_label says so: drawn as a static SVG bar chart instead of the bqplot
//   child when there is no widget manager, i.e. in a standalone HTML export).
// _heat_meta.note / _panels_meta.items[k].note: what the method reported (the caption under a
//   panel); .error: the method failed there, and the image is drawn alone with the error.
// Traits written: index, method, target, layer, display, opacity, view, steps, samples, noise, baseline.
import { barChart } from "../lib/charts.js";
import { bytesView, float32View } from "../lib/codecs.js";
import { hasWidgetManager, mountChild } from "../lib/children.js";
import { boundSelect, h, labelled, modelNote } from "../lib/dom.js";
import { blendOverlay, drawImage, fitScale } from "../lib/image.js";

function render({ model, el }) {
  const root = h("div", { class: "cnnw-root cnnw-saliency-viewer" });
  const note = modelNote(model);
  root.append(note.node);
  el.append(root);
  const set = (k, v) => {
    model.set(k, v);
    model.save_changes();
  };
  let frames = 0;
  // a method's menu label, from the core's registry (Python sends it as method_info)
  const label = (m) => ((model.get("method_info") || {})[m] || {}).label || m;

  // ---- toolbar
  const number = h("input", { type: "number", min: "0", step: "1", class: "cnnw-index-number", style: { width: "5em" } });
  number.addEventListener("change", () => {
    const n = model.get("n_images");
    set("index", Math.max(0, Math.min(n - 1, Math.floor(Number(number.value) || 0))));
  });
  const step = (d) => () => set("index", Math.max(0, Math.min(model.get("n_images") - 1, model.get("index") + d)));
  const methodSel = boundSelect(model, "method", [], "cnnw-method");
  const targetSel = h("select", { class: "cnnw-target" });
  targetSel.addEventListener("change", () => set("target", Number(targetSel.value)));
  const layerSel = boundSelect(model, "layer", [], "cnnw-layer");
  const displaySel = boundSelect(model, "display", [["abs", "absolute"], ["signed", "signed"]], "cnnw-display");
  const viewSel = boundSelect(model, "view", [["single", "one image"], ["compare", "compare methods"], ["grid", "many images"]], "cnnw-view");
  const opacity = h("input", { type: "range", min: "0", max: "1", step: "0.01", class: "cnnw-opacity" });
  opacity.addEventListener("input", () => set("opacity", Number(opacity.value)));
  const steps = h("input", { type: "number", min: "1", max: "1000", class: "cnnw-steps", style: { width: "4.5em" } });
  steps.addEventListener("change", () => set("steps", Math.max(1, Math.floor(Number(steps.value) || 1))));
  const samples = h("input", { type: "number", min: "1", max: "1000", class: "cnnw-samples", style: { width: "4.5em" } });
  samples.addEventListener("change", () => set("samples", Math.max(1, Math.floor(Number(samples.value) || 1))));
  const baseline = boundSelect(model, "baseline", [["black", "black"], ["blur", "blurred"], ["noise", "noise"]], "cnnw-baseline");
  const igOpts = h("span", { class: "cnnw-field" }, [labelled("steps", steps), labelled("baseline", baseline.node)]);
  const sgOpts = h("span", { class: "cnnw-field" }, [labelled("samples", samples)]);
  const layerField = labelled("layer", layerSel.node);
  root.append(
    h("div", { class: "cnnw-toolbar" }, [
      labelled("image", h("span", {}, [h("button", { class: "cnnw-prev", onclick: step(-1) }, ["◀"]), number,
        h("button", { class: "cnnw-next", onclick: step(1) }, ["▶"])])),
      labelled("method", methodSel.node),
      labelled("explain class", targetSel),
      layerField, igOpts, sgOpts,
    ]),
    h("div", { class: "cnnw-toolbar" }, [
      labelled("display", displaySel.node),
      labelled("opacity", opacity),
      labelled("view", viewSel.node),
    ]),
  );

  // ---- main panel: heatmap over the image, and the probability chart
  const heatCanvas = h("canvas", { class: "cnnw-heat" });
  const caption = h("div", { class: "cnnw-caption cnnw-heat-caption" });
  const chartBox = h("div", { class: "cnnw-chart" });
  const status = h("div", { class: "cnnw-info cnnw-status" });
  const progress = h("progress", { class: "cnnw-progress", max: "1", value: "0" });
  const panels = h("div", { class: "cnnw-thumbs cnnw-panels-grid" });
  root.append(
    h("div", { class: "cnnw-panels" }, [h("div", { class: "cnnw-panel" }, [heatCanvas, caption]), chartBox]),
    h("div", { class: "cnnw-toolbar" }, [progress, status]),
    panels,
  );
  let chartView = null;
  const staticChart = !hasWidgetManager(model);
  if (!staticChart) {
    mountChild(model, "chart", chartBox).then((v) => {
      chartView = v;
    });
  }

  // no widget manager (an exported page): the class probabilities as a static bar chart
  function drawBars() {
    if (!staticChart) return;
    const im = model.get("_image_meta") || {};
    const hm = model.get("_heat_meta") || {};
    const probs = float32View(model.get("_probs"));
    let top = -1;
    for (let i = 0; i < probs.length; i++) if (top < 0 || probs[i] > probs[top]) top = i;
    const shares = im.probs_label === "share of pixels";
    barChart(chartBox, probs, model.get("class_names") || [], {
      highlight: hm.index === im.index ? hm.target : -1,
      marked: top,
      title: shares ? "share of pixels per class" : "class probabilities",
      xLabel: "class",
      yLabel: im.probs_label || "probability",
    });
    root.dataset.chartIndex = String(im.index);
  }

  const scaleOf = (m) => fitScale(m.h || 1, m.w || 1, 224);

  function drawHeat() {
    const im = model.get("_image_meta") || {};
    const hm = model.get("_heat_meta") || {};
    if (!im.h || !hm.h || hm.index !== im.index) return;
    if (hm.error) {
      drawImage(heatCanvas, bytesView(model.get("_image")), im.h, im.w, im.c, scaleOf(im));
    } else {
      blendOverlay(heatCanvas, bytesView(model.get("_image")), im.h, im.w, im.c, bytesView(model.get("_heat")),
        hm.h, hm.w, bytesView(model.get("_heat_lut")), model.get("opacity"), scaleOf(im));
    }
    frames += 1;
    root.dataset.frame = String(frames);
    root.dataset.heatIndex = String(hm.index);
    root.dataset.heatMethod = hm.method;
    root.dataset.heatTarget = String(hm.target);
    root.dataset.heatError = hm.error ? "true" : "false";
    const pred = im.probability === null || im.probability === undefined ? "n/a"
      : `${im.predicted} (${(100 * im.probability).toFixed(1)}%)`;
    const what = hm.error ? `${label(hm.method)} failed: ${hm.error}` : `${label(hm.method)} for class ${hm.target_name}`;
    caption.textContent = `image ${im.index}` + (im.label !== null && im.label !== undefined ? ` · label ${im.label}` : "") +
      ` · predicted ${pred} · ${what}`;
    caption.classList.toggle("cnnw-wrong", Boolean(hm.error));
  }

  function drawPanels() {
    const m = model.get("_panels_meta") || {};
    if (model.get("view") === "single" || !m.items) {
      panels.replaceChildren();
      return;
    }
    const heat = bytesView(model.get("_panels"));
    const imgs = bytesView(model.get("_panel_images"));
    const lut = bytesView(model.get("_heat_lut"));
    const n = m.h * m.w;
    const sc = fitScale(m.h, m.w, 112);
    panels.replaceChildren(
      ...m.items.map((it, k) => {
        const img = imgs.subarray(k * n * m.c, (k + 1) * n * m.c);
        const canvas = h("canvas", { class: "cnnw-panel-canvas" });
        const c = it.error ? drawImage(canvas, img, m.h, m.w, m.c, sc)
          : blendOverlay(canvas, img, m.h, m.w, m.c, heat.subarray(k * n, (k + 1) * n), m.h, m.w, lut, model.get("opacity"), sc);
        const text = m.kind === "compare" ? label(it.method)
          : `#${it.index}` + (it.target_name !== null && it.target_name !== undefined ? ` · class ${it.target_name}` : "");
        // what the method reported (or why it failed), under the picture
        const sub = it.error
          ? h("div", { class: "cnnw-panel-note cnnw-panel-error cnnw-wrong", style: { maxWidth: "180px" } }, [`failed: ${it.error}`])
          : h("div", { class: "cnnw-panel-note", style: { maxWidth: "180px", color: "#555" } }, [it.note || ""]);
        return h("div", { class: "cnnw-thumb cnnw-panel-item", "data-index": String(it.index), "data-method": it.method,
          "data-error": it.error ? "true" : "false",
          onclick: () => (m.kind === "compare" ? set("method", it.method) : set("index", it.index)) }, [c, text, sub]);
      }),
    );
    root.dataset.panels = String(m.items.length);
    root.dataset.panelsFailed = String(m.failed || 0);
    root.dataset.panelsKind = m.kind;
  }

  function syncControls() {
    number.max = String(model.get("n_images") - 1);
    number.value = String(model.get("index"));
    const info = model.get("method_info") || {};
    methodSel.fill((model.get("methods") || []).map((m) => [m, label(m)]));
    const names = model.get("class_names") || [];
    targetSel.replaceChildren(
      h("option", { value: "-1" }, ["predicted class"]),
      h("option", { value: "-2" }, ["true label"]),
      ...names.map((n, i) => h("option", { value: String(i) }, [`class ${n}`])),
    );
    targetSel.value = String(model.get("target"));
    layerSel.fill((model.get("layers") || []).map((l) => [l, l]));
    const spec = info[model.get("method")] || {};
    layerField.style.display = spec.layer ? "" : "none";
    igOpts.style.display = spec.steps ? "" : "none";
    sgOpts.style.display = spec.samples ? "" : "none";
    steps.value = String(model.get("steps"));
    samples.value = String(model.get("samples"));
    opacity.value = String(model.get("opacity"));
    const p = model.get("progress");
    progress.style.visibility = p >= 0 ? "visible" : "hidden";
    progress.value = Math.max(0, p);
    status.textContent = model.get("status");
    root.dataset.busy = String(model.get("busy"));
  }

  const handlers = [
    [["_image", "_image_meta", "_heat", "_heat_meta", "_heat_lut"], drawHeat],
    [["_probs", "_image_meta", "_heat_meta", "class_names"], drawBars],
    [["opacity"], () => { syncControls(); drawHeat(); drawPanels(); }],
    [["_panels", "_panels_meta", "_panel_images", "view"], drawPanels],
    [["index", "n_images", "method", "methods", "method_info", "target", "class_names", "layers", "steps", "samples", "progress", "status", "busy"], syncControls],
  ];
  const bound = [];
  for (const [traits, fn] of handlers) for (const tr of traits) {
    model.on(`change:${tr}`, fn);
    bound.push([tr, fn]);
  }
  syncControls();
  drawHeat();
  drawBars();
  drawPanels();

  return () => {
    note.dispose();
    for (const [tr, fn] of bound) model.off(`change:${tr}`, fn);
    for (const s of [methodSel, layerSel, displaySel, viewSel, baseline]) s.dispose();
    if (chartView) chartView.remove();
  };
}

export default { render };
