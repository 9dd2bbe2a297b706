// SaliencyViewer front end. Python side: cnnwidgets/widgets/saliency_viewer.py
// Traits read: index, n_images, method, methods, method_info, target, class_names, layer, layers,
//   layer_labels, mode, opacity, view, grid_size, steps, samples, noise, baseline, busy, status,
//   status_error, progress; arrays (decodeArray): _image (H x W x C), _probs (K), _heat (h x w
//   codes), _heat_lut (256 x 3), _panels (K x h x w codes), _panel_images (K x H x W x C);
//   _image_meta, _heat_meta (vmin/vmax: the attribution at the ends of the colour scale; value:
//   what it is; note; error), _panels_meta (kind, mode, failed, items[k]: index, method,
//   target_name, vmin, vmax, value, note, error, deletion_auc, insertion_auc, evidence); chart (a
//   bqplot Figure, rendered as a child view; where child views cannot be rendered, in marimo and
//   an exported page, an SVG bar chart from _probs, whose bars explain their class on a click
//   while a kernel is behind the page); evidence, _evidence (3 x S+1: fractions, deletion, insertion),
//   _evidence_meta (state, deletion_auc, insertion_auc, error, note), _sanity (L: Spearman per
//   randomized layer), _sanity_meta (state, layers, done, total, error).
// Traits written: index, method, target, layer, mode, opacity, view, grid_size, steps, samples,
//   noise, baseline, window, stride, lrp_rule, evidence. Messages sent: stop, sanity_check.
import { bindTraits } from "../lib/bind.js";
import { barChart, curveChart } from "../lib/charts.js";
import { decodeArray } from "../lib/codecs.js";
import { hasWidgetManager, mountChild } from "../lib/children.js";
import { colorbar } from "../lib/colorbar.js";
import { boundCheck, boundNumber, boundSelect, formatNumber, h, labelled, live, viewShell } from "../lib/dom.js";
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
  const windowIn = keep(boundNumber(model, "window", "cnnw-window", { int: true, min: 0, width: "4.5em",
    title: "occlusion: the side of the covered square in pixels (0: a seventh of the image; Enter applies)" }));
  const strideIn = keep(boundNumber(model, "stride", "cnnw-stride", { int: true, min: 0, width: "4.5em",
    title: "occlusion: how many pixels the square moves between positions (0: half the window; Enter applies)" }));
  const kernel = (node) => {
    node.setAttribute("data-needs-kernel", "");
    return node;
  };
  const ruleSel = keep(boundSelect(model, "lrp_rule", [["epsilon", "epsilon"], ["gamma", "gamma"],
    ["alpha_beta", "alpha-beta"], ["zplus", "z+"]], "cnnw-lrp-rule",
  { title: "LRP: the rule of the convolution and linear layers (epsilon conserves the score; gamma and z+ favour positive evidence)" }));
  const ruleField = kernel(labelled("rule", ruleSel.node));
  const windowField = kernel(labelled("window", windowIn.node));
  const strideField = kernel(labelled("stride", strideIn.node));
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
  const evidenceBox = keep(boundCheck(model, "evidence", "cnnw-evidence-toggle",
    { title: "compute the deletion and insertion curves of each map: does removing its top pixels lower the class probability?" }));
  const sanityButton = kernel(h("button", { class: "cnnw-sanity-run",
    title: "randomize the model's layers from the top, one more at a time, and see how much the map changes",
    onclick: () => send("sanity_check") }, ["randomization check"]));
  const modeField = kernel(labelled("display", modeSel.node));
  const viewField = kernel(labelled("view", viewSel.node));
  const gridField = kernel(labelled("images", gridSize.node));
  root.append(
    h("div", { class: "cnnw-toolbar" }, [stepper.node, methodField, targetField, layerField, stepsField, baselineField,
      samplesField, noiseField, windowField, strideField, ruleField]),
    h("div", { class: "cnnw-toolbar" }, [modeField, labelled("opacity", opacity), viewField, gridField,
      kernel(labelled("evidence", evidenceBox.node)), sanityButton]),
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
  // the evidence beside the map: deletion and insertion curves, their areas, the randomization check
  const evidenceChart = h("div", { class: "cnnw-chart cnnw-sv-evidence-chart" });
  const evidenceText = h("div", { class: "cnnw-info cnnw-sv-evidence-text", "aria-live": "polite" });
  const sanityChart = h("div", { class: "cnnw-chart cnnw-sv-sanity-chart" });
  const sanityText = h("div", { class: "cnnw-info cnnw-sv-sanity-text", "aria-live": "polite" });
  const evidence = h("div", { class: "cnnw-panel cnnw-sv-evidence" }, [evidenceChart, evidenceText, sanityChart, sanityText]);
  const table = h("div", { class: "cnnw-sv-faithfulness" });
  root.append(
    h("div", { class: "cnnw-panels cnnw-sv-main" }, [
      h("div", { class: "cnnw-panel cnnw-sv-heat" }, [heatCanvas, heatBar.node, caption]), chartBox, evidence]),
    h("div", { class: "cnnw-toolbar cnnw-sv-status" }, [progress, stop, status]),
    panels,
    table,
  );
  let chartView = null;
  let closed = false;
  const charted = hasWidgetManager(model);
  if (charted) {
    mountChild(model, "chart", chartBox).then((v) => {
      if (closed) v?.remove();
      else chartView = v;
    });
  }

  // no child views here: the class probabilities the bqplot chart shows, as an SVG bar chart
  function drawBars() {
    if (charted) return;
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
      pick: isLive ? (k) => set("target", k) : null,
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

  const pct = (v) => `${Math.round(100 * v)}%`;
  const probTicks = [0, 0.5, 1].map((v) => [v, pct(v)]);

  // the deletion and insertion curves of the map shown (drawn once they match it)
  function drawEvidence() {
    const em = model.get("_evidence_meta") || {};
    const hm = model.get("_heat_meta") || {};
    const current = em.index === hm.index && em.method === hm.method && em.target === hm.target;
    root.dataset.evidenceState = current ? (em.state || "") : "stale";
    evidenceText.classList.toggle("cnnw-wrong", current && em.state === "failed");
    if (!current || em.state !== "done") {
      evidenceChart.replaceChildren();
      evidenceText.textContent = !current || em.state === "computing" ? "evidence: computing the deletion and insertion curves ..."
        : em.state === "failed" ? `evidence failed: ${em.error}` : (em.note || "");
      return;
    }
    const ev = decodeArray(model.get("_evidence"));
    const [, n] = ev.shape;
    const row = (r) => ev.data.subarray(r * n, (r + 1) * n);
    const chart = curveChart(evidenceChart, [
      { ys: row(1), label: `deletion (AUC ${em.deletion_auc.toFixed(3)})`, cls: "cnnw-line-deletion" },
      { ys: row(2), label: `insertion (AUC ${em.insertion_auc.toFixed(3)})`, cls: "cnnw-line-insertion" },
    ], { xs: row(0), xTicks: probTicks, yRange: [0, 1], yTicks: probTicks, title: `is the map faithful? class ${em.target_name}`,
      xLabel: "pixels removed / added, in map order", yLabel: "probability",
      tip: (k) => (k === 0 ? "deletion: the class probability as the map's top pixels are removed (lower area: more faithful)"
        : "insertion: the class probability as the map's top pixels are added to the baseline image (higher area: more faithful)") });
    chart.dataset.deletionAuc = String(em.deletion_auc);
    chart.dataset.insertionAuc = String(em.insertion_auc);
    const base = em.baseline === "zeros" ? "0 (black, or the mean colour of normalized images)"
      : em.baseline === "blur" ? "a blurred copy of the image" : em.baseline === "mean" ? "the image's mean colour" : em.baseline;
    evidenceText.textContent = `deletion AUC ${em.deletion_auc.toFixed(3)} (lower is better) · insertion AUC `
      + `${em.insertion_auc.toFixed(3)} (higher is better) · ${em.steps} steps; a removed pixel is set to ${base}`;
    root.dataset.deletionAuc = String(em.deletion_auc);
    root.dataset.insertionAuc = String(em.insertion_auc);
  }

  // the randomization check: Spearman correlation with the original map per randomized layer
  function drawSanity() {
    const sm = model.get("_sanity_meta") || {};
    const hm = model.get("_heat_meta") || {};
    const current = sm.state && sm.index === hm.index && sm.method === hm.method && sm.target === hm.target;
    root.dataset.sanityState = current ? sm.state : "";
    sanityText.classList.toggle("cnnw-wrong", sm.state === "failed");
    if (sm.state === "failed" && !shown(sm.index)) {
      sanityChart.replaceChildren();
      sanityText.textContent = `randomization check failed: ${sm.error}`;
      return;
    }
    if (!current) {
      sanityChart.replaceChildren();
      sanityText.textContent = "";
      return;
    }
    if (sm.state !== "done") {
      sanityChart.replaceChildren();
      sanityText.textContent = sm.state === "computing"
        ? `randomization check: ${sm.total ? `layer ${sm.done} of ${sm.total}` : "starting"} ...`
        : sm.state === "stopped" ? "randomization check stopped" : `randomization check failed: ${sm.error}`;
      return;
    }
    const rho = decodeArray(model.get("_sanity")).data;
    const layers = sm.layers || [];
    const n = rho.length;
    const ticks = n ? [...new Set([0, Math.floor((n - 1) / 2), n - 1])].map((i) => [i + 1, String(i + 1)]) : [];
    curveChart(sanityChart, [{ ys: rho }], { xTicks: ticks, yRange: [-1, 1], yTicks: [[-1, "-1"], [0, "0"], [1, "1"]],
      title: "randomization check", xLabel: "layers randomized, from the top", yLabel: "rank correlation",
      tip: () => layers.map((l, i) => `${i + 1}. ${l}: ${formatNumber(rho[i])}`).join("\n") });
    const last = n ? rho[n - 1] : NaN;
    sanityText.textContent = `with all ${n} layers randomized the map's rank correlation with the original is `
      + `${formatNumber(last)}: ${Math.abs(last) < 0.3 ? "the map depends on what the model learned"
        : "the map stays alike on a random model, so it shows the image more than the model"}`;
    root.dataset.sanityLast = String(last);
  }

  // compare view: one row of numbers per method, the most faithful in bold
  function drawTable() {
    const m = model.get("_panels_meta") || {};
    if (model.get("view") !== "compare" || !m.items || !m.items.some((it) => shown(it.deletion_auc) || it.evidence)) {
      table.replaceChildren();
      delete root.dataset.tableRows;
      return;
    }
    const rows = m.items.filter((it) => !it.error);
    const del = rows.filter((it) => shown(it.deletion_auc)).map((it) => it.deletion_auc);
    const ins = rows.filter((it) => shown(it.insertion_auc)).map((it) => it.insertion_auc);
    const best = (v, vs, low) => shown(v) && vs.length > 1 && v === (low ? Math.min(...vs) : Math.max(...vs));
    const cell = (v, vs, low) => h("td", { class: best(v, vs, low) ? "cnnw-best" : "" },
      [shown(v) ? v.toFixed(3) : "…"]);
    table.replaceChildren(h("table", { class: "cnnw-table" }, [
      h("caption", {}, [`faithfulness of each map for image ${rows[0]?.index ?? ""} (${m.evidence_steps || ""} steps)`]),
      h("thead", {}, [h("tr", {}, [h("th", {}, ["method"]), h("th", { title: "area under the deletion curve" }, ["deletion AUC ↓"]),
        h("th", { title: "area under the insertion curve" }, ["insertion AUC ↑"])])]),
      h("tbody", {}, rows.map((it) => h("tr", { "data-method": it.method }, shown(it.deletion_auc)
        ? [h("th", {}, [label(it.method)]), cell(it.deletion_auc, del, true), cell(it.insertion_auc, ins, false)]
        : [h("th", {}, [label(it.method)]), h("td", { colspan: "2" }, [it.evidence || "…"])]))),
    ]));
    root.dataset.tableRows = String(rows.filter((it) => shown(it.deletion_auc)).length);
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
    windowField.hidden = strideField.hidden = !spec.window;
    ruleField.hidden = !spec.rule;
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
    "_panels _panels_meta _panel_images view": () => {
      drawPanels();
      drawTable();
    },
    "_evidence _evidence_meta _heat_meta": drawEvidence,
    "_sanity _sanity_meta _heat_meta": drawSanity,
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
