// OIPOptimizer front end. Python side: cnnwidgets/widgets/oip_optimizer.py
// Traits written (the controls): layer, channel, objective, negate, class_index, init, param,
//   dataset_index, seed, precursors, steps, lr, step_rule, converge, l2, tv, blur_every,
//   blur_sigma, clip_percentile, clip_by, jitter, rotate, scale.
// Read: layers, layer_labels ({name: "Conv2d 128x3x3"}), batch_channels, n_classes, classes,
//   class_note (why the class objective is off), n_images, running, paused, step (1-based:
//   steps done), steps_per_second, value, status, status_kind ("info" | "warning" | "error"),
//   selection_note, probabilities, _image (array uint8 B x H x W x C) with _image_info
//   ({step, final, channels, labels, predictions, dead}), _snapshots (array uint8 K x H x W x C)
//   with snapshot_steps (1-based), chart (bqplot Figure child view), _curve (array float32
//   2 x n: the steps and the objective the chart shows). Where child views cannot be rendered
//   (marimo, an exported page: hasWidgetManager) the view draws _curve itself as an SVG line,
//   live while a run goes on.
// Messages sent (cnnwidgets/widgets/messages.json): start, pause, resume, stop, reset.
import { lineChart } from "../lib/charts.js";
import { decodeArray } from "../lib/codecs.js";
import { hasWidgetManager, mountChild } from "../lib/children.js";
import { bindTraits } from "../lib/bind.js";
import { boundCheck, boundNumber, boundSelect, h, labelled, section, viewShell } from "../lib/dom.js";
import { drawImage, fitScale } from "../lib/image.js";
import { sender } from "../lib/messages.js";

const OBJECTIVES = [["channel", "channel (mean of the map)"], ["neuron", "neuron (centre unit)"], ["class", "class logit"]];
const INITS = [["gray", "gray + noise"], ["multiscale", "multi-scale noise"], ["dataset", "a dataset image"]];

/** Mark a control (and its label) as needing the kernel: an exported page hides it. */
function needsKernel(node) {
  node.setAttribute("data-needs-kernel", "");
  return node;
}

function render({ model, el }) {
  const shell = viewShell(model, el, "cnnw-oip-optimizer");
  const root = shell.root;
  const send = sender(model, "oip_optimizer");
  const disposables = [shell.dispose];
  const bound = (b) => {
    disposables.push(b.dispose);
    needsKernel(b.node);
    return b;
  };
  const sel = (trait, choices, cls, title) => bound(boundSelect(model, trait, choices, cls, { title })).node;
  const num = (trait, cls, opts) => bound(boundNumber(model, trait, cls, opts)).node;
  const chk = (trait, cls, title) => bound(boundCheck(model, trait, cls, { title })).node;
  const field = (text, control, title, cls = "") => {
    const f = labelled(text, control, title);
    if (cls) f.classList.add(cls);
    return needsKernel(f);
  };

  // ---- objective
  const layerSel = bound(boundSelect(model, "layer", [], "cnnw-layer", { title: "The layer whose channel, neuron or unit is maximized (type and output shape)" }));
  const objectiveSel = sel("objective", OBJECTIVES, "cnnw-objective", "What is maximized: a feature map's mean, its centre neuron, or a class logit");
  const channelLabel = h("span", {}, ["channel"]);
  const channelInput = num("channel", "cnnw-channel", { int: true, min: 0, width: "4.5em", title: "The channel (feature map) of the layer to maximize" });
  const channelField = needsKernel(h("label", { class: "cnnw-field cnnw-channel-field", title: "The channel (feature map) of the layer to maximize" }, [channelLabel, channelInput]));
  const batchNote = h("span", { class: "cnnw-info cnnw-batch-note", title: "Batch mode: one image per channel (set batch_channels = [] in Python for a single channel)" });
  const classInput = num("class_index", "cnnw-class", { int: true, min: 0, width: "4.5em", title: "The class whose logit is maximized" });
  const className = h("span", { class: "cnnw-class-name" });
  const classField = field("class", classInput, "The class whose logit is maximized", "cnnw-class-field");
  classField.append(className);
  const objectiveBox = section("objective", [
    field("layer", layerSel.node, "The layer whose channel, neuron or unit is maximized (type and output shape)"),
    field("objective", objectiveSel, "What is maximized: a feature map's mean, its centre neuron, or a class logit"),
    channelField, batchNote, classField,
    field("minimize", chk("negate", "cnnw-negate", "Minimize the objective instead (the pattern the target responds to least)"),
      "Minimize the objective instead (the pattern the target responds to least)"),
  ], { cls: "cnnw-oip-objective" });

  // ---- start image
  const initSel = sel("init", INITS, "cnnw-init", "The starting image: gray with a little noise, noise at several scales, or an image of images=");
  const initField = field("start from", initSel, "The starting image: gray with a little noise, noise at several scales, or an image of images=", "cnnw-init-field");
  const datasetField = field("image", num("dataset_index", "cnnw-dataset-index", { int: true, min: 0, width: "4.5em", title: "Which image of images= the run starts from" }),
    "Which image of images= the run starts from", "cnnw-dataset-field");
  const precursorsField = field("precursors", num("precursors", "cnnw-precursors", { int: true, min: 0, width: "4.5em", title: "Random starting images tried first; the run starts from the best (0 = off)" }),
    "Random starting images tried first; the run starts from the best (0 = off)", "cnnw-precursors-field");
  const fourierNote = h("span", { class: "cnnw-info cnnw-fourier-note" }, ["Fourier starts from a random spectrum"]);
  const startBox = section("start image", [
    field("image as", sel("param", [["pixel", "pixels"], ["fourier", "Fourier spectrum"]], "cnnw-param", "How the image is parameterized: its pixels, or a Fourier spectrum (smoother images)"),
      "How the image is parameterized: its pixels, or a Fourier spectrum (smoother images)"),
    initField, datasetField, precursorsField, fourierNote,
    field("seed", num("seed", "cnnw-seed", { int: true, min: 0, width: "6em", title: "Seed of the starting noise and the random transforms (same seed, same result)" }),
      "Seed of the starting noise and the random transforms (same seed, same result)"),
  ], { cls: "cnnw-oip-start" });

  // ---- regularizers (collapsible, closed)
  const sigmaField = field("σ", num("blur_sigma", "cnnw-blur-sigma", { min: 0, width: "4.5em", title: "Width of the Gaussian blur in pixels" }), "Width of the Gaussian blur in pixels", "cnnw-blur-sigma-field");
  const clipByField = field("by", sel("clip_by", [["norm", "pixel norm"], ["contribution", "contribution"]], "cnnw-clip-by", "Which pixels count as weak: small deviation from gray, or small contribution (pixel x gradient)"),
    "Which pixels count as weak: small deviation from gray, or small contribution (pixel x gradient)", "cnnw-clip-by-field");
  const blurField = field("blur every", num("blur_every", "cnnw-blur-every", { int: true, min: 0, width: "4.5em", title: "Blur the image after every n-th step (0 = off; pixels only)" }),
    "Blur the image after every n-th step (0 = off; pixels only)", "cnnw-blur-field");
  const clipField = field("clip weak %", num("clip_percentile", "cnnw-clip", { min: 0, max: 100, width: "4.5em", title: "Set this percentage of the weakest pixels back to gray after each step (0 = off; pixels only)" }),
    "Set this percentage of the weakest pixels back to gray after each step (0 = off; pixels only)", "cnnw-clip-field");
  const pixelOnlyNote = h("span", { class: "cnnw-info cnnw-pixel-only-note" }, ["blur and clipping act on pixels: off with Fourier"]);
  const regBox = section("regularizers", [
    field("L2", num("l2", "cnnw-l2", { min: 0, width: "4.5em", title: "Weight of the L2 penalty on the deviation from gray (0 = off)" }), "Weight of the L2 penalty on the deviation from gray (0 = off)"),
    field("total variation", num("tv", "cnnw-tv", { min: 0, width: "4.5em", title: "Weight of the total-variation penalty: smoother images (0 = off)" }), "Weight of the total-variation penalty: smoother images (0 = off)"),
    blurField, sigmaField, clipField, clipByField, pixelOnlyNote,
    field("jitter", num("jitter", "cnnw-jitter", { int: true, min: 0, width: "4.5em", title: "Random shift of up to this many pixels each step (robustness; 0 = off)" }), "Random shift of up to this many pixels each step (robustness; 0 = off)"),
    field("rotate °", num("rotate", "cnnw-rotate", { min: 0, width: "4.5em", title: "Random rotation by -rotate, 0 or +rotate degrees each step (0 = off)" }), "Random rotation by -rotate, 0 or +rotate degrees each step (0 = off)"),
    field("scale ±", num("scale", "cnnw-scale", { min: 0, max: 0.99, width: "4.5em", title: "Random rescale by 1 - s, 1 or 1 + s each step (0 = off)" }), "Random rescale by 1 - s, 1 or 1 + s each step (0 = off)"),
  ], { collapsible: true, open: false, cls: "cnnw-oip-regularizers" });
  needsKernel(regBox);
  regBox.querySelector("summary").setAttribute("title", "Penalties, image operations and random transforms that keep the pattern natural");

  // ---- run
  const button = (cls, text, title, fn) => needsKernel(h("button", { class: cls, title, onclick: fn }, [text]));
  const startBtn = button("cnnw-start", "start", "Start the optimization in the background", () => send("start"));
  const pauseBtn = button("cnnw-pause", "pause", "Pause after the current step (resume goes on)", () => send(model.get("paused") ? "resume" : "pause"));
  const stopBtn = button("cnnw-stop", "stop", "Stop the run within a step; the image reached so far stays", () => send("stop"));
  const resetBtn = button("cnnw-reset", "reset", "Stop, forget the result and show the starting image again", () => send("reset"));
  const progress = h("progress", { class: "cnnw-progress", max: "1", value: "0", title: "Steps done of the steps to run" });
  const info = h("span", { class: "cnnw-info cnnw-run-info" });
  const runBox = section("run", [
    field("steps", num("steps", "cnnw-steps", { int: true, min: 1, width: "6em", title: "Steps to run (Enter commits)" }), "Steps to run (Enter commits)"),
    field("learning rate", num("lr", "cnnw-lr", { min: 0, width: "5em", title: "Step size: how far the image moves per step" }), "Step size: how far the image moves per step"),
    field("step rule", sel("step_rule", [["rms", "gradient / RMS"], ["adam", "Adam"]], "cnnw-step-rule", "How a step follows the gradient: normalized by its RMS, or Adam"),
      "How a step follows the gradient: normalized by its RMS, or Adam"),
    field("stop when converged", chk("converge", "cnnw-converge", "End the run once the objective stops changing"), "End the run once the objective stops changing"),
    h("div", { class: "cnnw-oip-buttons" }, [startBtn, pauseBtn, stopBtn, resetBtn]),
    progress, info,
  ], { cls: "cnnw-oip-run" });
  const status = h("div", { class: "cnnw-status cnnw-oip-status", role: "status", "aria-live": "polite" });
  root.append(h("div", { class: "cnnw-oip-controls" }, [objectiveBox, startBox, regBox, runBox]), status);

  // ---- the image, the gallery, the chart, the snapshots
  const imageCanvas = h("canvas", { class: "cnnw-oip-image", title: "The optimized image" });
  const gallery = h("div", { class: "cnnw-thumbs cnnw-oip-gallery" });
  const chartBox = h("div", { class: "cnnw-chart cnnw-oip-chart" });
  const snaps = h("div", { class: "cnnw-thumbs cnnw-snapshots" });
  root.append(
    h("div", { class: "cnnw-panels cnnw-oip-panels" }, [h("div", { class: "cnnw-panel cnnw-oip-image-panel" }, [imageCanvas, gallery]), chartBox]),
    snaps,
  );
  let chartView = null;
  const charted = hasWidgetManager(model);
  if (charted) mountChild(model, "chart", chartBox).then((v) => { chartView = v; });

  // no child views here: the curve the bqplot chart shows, drawn from _curve
  function drawCurve() {
    if (charted) return;
    const curve = decodeArray(model.get("_curve"));
    const n = curve.shape.length === 2 ? curve.shape[1] : 0;
    lineChart(chartBox, curve.data.subarray(n, 2 * n), {
      xs: curve.data.subarray(0, n), title: "objective per step", xLabel: "step", yLabel: "objective",
      empty: "not optimized yet",
    });
  }

  const className_ = (k) => {
    const names = model.get("classes") || [];
    return k >= 0 && k < names.length ? `'${names[k]}' (${k})` : `class ${k}`;
  };
  let frames = 0;

  function drawMain() {
    const img = decodeArray(model.get("_image"));
    const meta = model.get("_image_info") || {};
    if (img.shape.length !== 4 || !img.shape[0]) return;
    const [b, hh, w, c] = img.shape;
    const size = hh * w * c;
    if (b === 1) {
      imageCanvas.hidden = false;
      gallery.replaceChildren();
      drawImage(imageCanvas, img.data, hh, w, c, fitScale(hh, w, 224));
      imageCanvas.dataset.channel = String((meta.channels || [])[0] ?? "");
    } else {
      // the batch: one labelled tile per image (which channel it maximizes, the class the model gives it)
      imageCanvas.hidden = true;
      const scale = fitScale(hh, w, 96);
      const labels = meta.labels || [];
      const preds = meta.predictions || [];
      const dead = meta.dead || [];
      const tiles = [];
      for (let i = 0; i < b; i++) {
        const canvas = drawImage(h("canvas", { class: "cnnw-oip-tile" }), img.data.subarray(i * size, (i + 1) * size), hh, w, c, scale);
        const p = preds[i];
        const lines = [h("span", { class: "cnnw-oip-tile-target" }, [labels[i] ?? `image ${i}`])];
        if (dead[i]) lines.push(h("span", { class: "cnnw-warning cnnw-oip-tile-dead" }, ["dead: stayed 0"]));
        else if (p) lines.push(h("span", { class: "cnnw-oip-tile-class" }, [`→ ${p.name != null ? p.name : `class ${p.class}`} ${(100 * p.p).toFixed(0)}%`]));
        const tile = h("div", {
          class: "cnnw-thumb cnnw-oip-tile-box", "data-channel": String((meta.channels || [])[i] ?? ""),
          title: `${labels[i] ?? ""}${p ? ` · the model says ${className_(p.class)}, p = ${p.p.toFixed(3)}` : ""}`,
        }, [canvas, ...lines]);
        tiles.push(tile);
      }
      gallery.replaceChildren(...tiles);
    }
    frames += 1;
    root.dataset.frame = String(frames);
    root.dataset.step = String(meta.step);
    root.dataset.final = String(!!meta.final);
    root.dataset.batch = String(b);
  }

  function drawSnapshots() {
    const arr = decodeArray(model.get("_snapshots"));
    const steps = model.get("snapshot_steps") || [];
    if (arr.shape.length !== 4 || !steps.length) {
      snaps.replaceChildren();
      return;
    }
    const [, hh, w, c] = arr.shape;
    const size = hh * w * c;
    snaps.replaceChildren(
      h("span", { class: "cnnw-snapshots-title" }, [model.get("batch_channels")?.length ? "snapshots (first image)" : "snapshots"]),
      ...steps.map((s, i) => h("div", { class: "cnnw-thumb", "data-step": String(s), title: `The image after ${s} steps` },
        [drawImage(h("canvas"), arr.data.subarray(i * size, (i + 1) * size), hh, w, c, fitScale(hh, w, 64)), `step ${s}`])),
    );
  }

  function syncObjective() {
    // only the field that applies to the objective is shown
    const kind = model.get("objective");
    const batch = model.get("batch_channels") || [];
    channelLabel.textContent = kind === "neuron" ? "neuron (channel)" : "channel";
    channelField.hidden = kind === "class" || batch.length > 0;
    batchNote.hidden = kind === "class" || batch.length === 0;
    if (batch.length) {
      const shown = batch.length > 8 ? `${batch.slice(0, 8).join(", ")}, ...` : batch.join(", ");
      batchNote.textContent = `${kind === "neuron" ? "neurons of channels" : "channels"} ${shown} (${batch.length} images)`;
    }
    classField.hidden = kind !== "class";
    const n = model.get("n_classes") || 0;
    const classOption = objectiveSel.querySelector('option[value="class"]');
    classOption.disabled = n === 0;
    classOption.title = n === 0 ? model.get("class_note") || "" : "";
    classOption.textContent = n === 0 ? "class logit (off: no class scores)" : "class logit";
    classInput.disabled = n === 0;
    if (n > 0) classInput.max = String(n - 1);
    else classInput.removeAttribute("max");
    const names = model.get("classes") || [];
    const k = model.get("class_index");
    className.textContent = names.length && k >= 0 && k < names.length ? names[k] : "";
    className.hidden = !className.textContent;
    root.dataset.classes = String(n);
    root.dataset.objective = kind;
  }

  function syncLayers() {
    const labels = model.get("layer_labels") || {};
    layerSel.fill((model.get("layers") || []).map((l) => [l, labels[l] ? `${l} · ${labels[l]}` : l]));
  }

  function syncStart() {
    const fourier = model.get("param") === "fourier";
    const hasImages = (model.get("n_images") || 0) > 0;
    initField.hidden = fourier;
    precursorsField.hidden = fourier;
    fourierNote.hidden = !fourier;
    datasetField.hidden = fourier || model.get("init") !== "dataset";
    const dsOption = initSel.querySelector('option[value="dataset"]');
    dsOption.disabled = !hasImages;
    dsOption.title = hasImages ? "" : "needs images=... (dataset images)";
    const dsInput = datasetField.querySelector("input");
    if (hasImages) dsInput.max = String(model.get("n_images") - 1);
    // blur and clipping act on the pixels; their second setting only while they are on
    blurField.hidden = fourier;
    clipField.hidden = fourier;
    pixelOnlyNote.hidden = !fourier;
    sigmaField.hidden = fourier || !(model.get("blur_every") > 0);
    clipByField.hidden = fourier || !(model.get("clip_percentile") > 0);
  }

  function syncState() {
    const running = model.get("running");
    startBtn.disabled = running;
    pauseBtn.disabled = !running;
    stopBtn.disabled = !running;
    pauseBtn.textContent = model.get("paused") ? "resume" : "pause";
    const step = model.get("step") || 0;
    const steps = model.get("steps") || 1;
    progress.max = steps;
    progress.value = Math.min(step, steps);
    const sps = model.get("steps_per_second") || 0;
    const value = model.get("value");
    info.textContent = `step ${step} / ${steps} · ${sps.toFixed(1)} steps/s · objective ${value == null ? "n/a" : value.toFixed(4)}`;
    const kind = model.get("status_kind") || "info";
    const probs = model.get("probabilities") || [];
    let text = model.get("status") || "";
    // the class probabilities belong to the finished result only, never to a run going on
    if (probs.length && !running && kind === "info") {
      const top = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 3);
      text += ` · class probabilities of the result: ${top.map(([p, i]) => `${className_(i)} ${p == null ? "n/a" : `${(100 * p).toFixed(1)}%`}`).join(", ")}`;
    }
    status.textContent = text;
    status.hidden = !text;
    status.classList.toggle("cnnw-oip-status-error", kind === "error");
    status.classList.toggle("cnnw-oip-status-warning", kind === "warning");
    status.setAttribute("role", kind === "info" ? "status" : "alert");
    root.dataset.statusKind = kind;
    root.dataset.running = String(running);
    root.dataset.paused = String(model.get("paused"));
  }

  disposables.push(bindTraits(model, {
    "_image _image_info": drawMain,
    "_snapshots snapshot_steps": drawSnapshots,
    _curve: drawCurve,
    "layers layer_labels": syncLayers,
    "objective batch_channels n_classes class_note classes class_index": syncObjective,
    "param init n_images blur_every clip_percentile": syncStart,
    "running paused step steps steps_per_second value status status_kind probabilities classes": syncState,
  }));
  return () => {
    for (const d of disposables) d();
    if (chartView) chartView.remove();
  };
}

export default { render };
