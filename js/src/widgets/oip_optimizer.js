// OIPOptimizer front end. Python side: cnnwidgets/widgets/oip_optimizer.py
// Traits read/written: layer, layers, channel, objective, negate, class_index, steps, lr,
//   step_rule, param, init, seed, precursors, converge, l2, tv, blur_every, blur_sigma,
//   clip_percentile, clip_by, jitter, rotate, scale. Read: running, paused, step, steps_per_second, value,
//   status, probabilities, n_classes, class_note (why the class objective is off), _image/_image_meta (uint8 B x H x W x C), _snapshots/_snapshots_meta,
//   chart (bqplot Figure child view). With no widget manager (a standalone HTML export) the
//   objective curve is a static SVG drawn from _history (float32 per step), which only the
//   export writes (OIPOptimizer._export_state); live, the bqplot chart shows it.
// Messages sent: {type: "start" | "pause" | "resume" | "stop" | "reset"}.
import { lineChart } from "../lib/charts.js";
import { bytesView, float32View } from "../lib/codecs.js";
import { hasWidgetManager, mountChild } from "../lib/children.js";
import { boundCheck, boundNumber, boundSelect, h, labelled, modelNote } from "../lib/dom.js";
import { drawImage, fitScale } from "../lib/image.js";

function drawGallery(canvas, bytes, b, hh, w, c, scale, cols) {
  const rows = Math.ceil(b / cols);
  const cellW = w * scale + 2, cellH = hh * scale + 2;
  canvas.width = cols * cellW - 2;
  canvas.height = rows * cellH - 2;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const tmp = document.createElement("canvas");
  const size = hh * w * c;
  for (let i = 0; i < b; i++) {
    drawImage(tmp, bytes.subarray(i * size, (i + 1) * size), hh, w, c, scale);
    ctx.drawImage(tmp, (i % cols) * cellW, Math.floor(i / cols) * cellH);
  }
}

function render({ model, el }) {
  const root = h("div", { class: "cnnw-root cnnw-oip-optimizer" });
  const note = modelNote(model);
  root.append(note.node);
  el.append(root);
  const send = (type) => model.send({ type });
  const disposables = [];
  const sel = (...a) => { const s = boundSelect(model, ...a); disposables.push(s); return s.node; };
  const num = (...a) => { const s = boundNumber(model, ...a); disposables.push(s); return s.node; };
  const chk = (...a) => { const s = boundCheck(model, ...a); disposables.push(s); return s.node; };

  const layerSel = boundSelect(model, "layer", [], "cnnw-layer");
  disposables.push(layerSel);
  const objectiveSel = sel("objective", [["channel", "channel (mean of the map)"], ["neuron", "neuron (centre)"], ["class", "class logit"]], "cnnw-objective");
  const classInput = num("class_index", "cnnw-class", { int: true, min: 0, width: "3.5em" });
  root.append(
    h("div", { class: "cnnw-toolbar" }, [
      labelled("layer", layerSel.node),
      labelled("objective", objectiveSel),
      labelled("channel", num("channel", "cnnw-channel", { int: true, min: 0 })),
      labelled("class", classInput),
      labelled("minimize", chk("negate", "cnnw-negate")),
    ]),
    h("div", { class: "cnnw-toolbar" }, [
      labelled("steps", num("steps", "cnnw-steps", { int: true, min: 1 })),
      labelled("learning rate", num("lr", "cnnw-lr", { min: 0 })),
      labelled("step", sel("step_rule", [["rms", "gradient / RMS"], ["adam", "Adam"]], "cnnw-step-rule")),
      labelled("image", sel("param", [["pixel", "pixels"], ["fourier", "Fourier"]], "cnnw-param")),
      labelled("start from", sel("init", [["gray", "gray + noise"], ["multiscale", "multi-scale noise"], ["dataset", "a dataset image"]], "cnnw-init")),
      labelled("seed", num("seed", "cnnw-seed", { int: true, width: "4em" })),
      labelled("precursors", num("precursors", "cnnw-precursors", { int: true, min: 0, width: "3.5em" })),
      labelled("stop when converged", chk("converge", "cnnw-converge")),
    ]),
    h("div", { class: "cnnw-toolbar" }, [
      labelled("L2", num("l2", "cnnw-l2", { min: 0 })),
      labelled("total variation", num("tv", "cnnw-tv", { min: 0 })),
      labelled("blur every", num("blur_every", "cnnw-blur-every", { int: true, min: 0, width: "3.5em" })),
      labelled("σ", num("blur_sigma", "cnnw-blur-sigma", { min: 0, width: "3.5em" })),
      labelled("clip weak %", num("clip_percentile", "cnnw-clip", { min: 0, max: 100, width: "3.5em" })),
      labelled("by", sel("clip_by", [["norm", "pixel norm"], ["contribution", "contribution"]], "cnnw-clip-by")),
      labelled("jitter", num("jitter", "cnnw-jitter", { int: true, min: 0, width: "3.5em" })),
      labelled("rotate °", num("rotate", "cnnw-rotate", { min: 0, width: "3.5em" })),
      labelled("scale ±", num("scale", "cnnw-scale", { min: 0, max: 0.99, width: "3.5em" })),
    ]),
  );
  const startBtn = h("button", { class: "cnnw-start", onclick: () => send("start") }, ["start"]);
  const pauseBtn = h("button", { class: "cnnw-pause", onclick: () => send(model.get("paused") ? "resume" : "pause") }, ["pause"]);
  const stopBtn = h("button", { class: "cnnw-stop", onclick: () => send("stop") }, ["stop"]);
  const resetBtn = h("button", { class: "cnnw-reset", onclick: () => send("reset") }, ["reset"]);
  const info = h("span", { class: "cnnw-info cnnw-run-info" });
  root.append(h("div", { class: "cnnw-toolbar" }, [startBtn, pauseBtn, stopBtn, resetBtn, info]));

  const imageCanvas = h("canvas", { class: "cnnw-oip-image" });
  const chartBox = h("div", { class: "cnnw-chart" });
  const status = h("div", { class: "cnnw-status cnnw-caption", style: { maxWidth: "640px" } });
  const snaps = h("div", { class: "cnnw-thumbs cnnw-snapshots" });
  root.append(h("div", { class: "cnnw-panels" }, [h("div", { class: "cnnw-panel" }, [imageCanvas]), chartBox]), status, snaps);
  let chartView = null;
  const staticChart = !hasWidgetManager(model);
  if (!staticChart) mountChild(model, "chart", chartBox).then((v) => { chartView = v; });

  function drawCurve() {
    if (!staticChart) return;
    lineChart(chartBox, float32View(model.get("_history")), {
      title: "objective per step", xLabel: "step", yLabel: "objective", empty: "not optimized yet",
    });
  }
  let frames = 0;

  function drawMain() {
    const m = model.get("_image_meta") || {};
    if (!m.b) return;
    const bytes = bytesView(model.get("_image"));
    if (m.b === 1) {
      drawImage(imageCanvas, bytes, m.h, m.w, m.c, fitScale(m.h, m.w, 224));
    } else {
      const cols = Math.ceil(Math.sqrt(m.b));
      drawGallery(imageCanvas, bytes, m.b, m.h, m.w, m.c, Math.max(1, Math.floor(480 / cols / Math.max(m.h, m.w))), cols);
    }
    frames += 1;
    root.dataset.frame = String(frames);
    root.dataset.step = String(m.step);
    root.dataset.final = String(!!m.final);
    root.dataset.batch = String(m.b);
  }

  function drawSnapshots() {
    const m = model.get("_snapshots_meta") || {};
    if (!m.steps) {
      snaps.replaceChildren();
      return;
    }
    const bytes = bytesView(model.get("_snapshots"));
    const size = m.h * m.w * m.c;
    snaps.replaceChildren(
      h("span", { style: { width: "90px" } }, ["snapshots"]),
      ...m.steps.map((s, i) => h("div", { class: "cnnw-thumb", "data-step": String(s) },
        [drawImage(h("canvas"), bytes.subarray(i * size, (i + 1) * size), m.h, m.w, m.c, fitScale(m.h, m.w, 64)), `step ${s}`])),
    );
  }

  function syncClasses() {
    // no class scores (or an output structure that needs output=): the class objective is off,
    // and its option says why
    const n = model.get("n_classes") || 0;
    const classOption = objectiveSel.querySelector('option[value="class"]');
    classOption.disabled = n === 0;
    classOption.title = n === 0 ? model.get("class_note") || "" : "";
    classOption.textContent = n === 0 ? "class logit (off: no class scores)" : "class logit";
    classInput.disabled = n === 0;
    if (n > 0) classInput.max = String(n - 1);
    else classInput.removeAttribute("max");
    root.dataset.classes = String(n);
  }

  function syncState() {
    layerSel.fill((model.get("layers") || []).map((l) => [l, l]));
    const running = model.get("running");
    startBtn.disabled = running;
    pauseBtn.disabled = !running;
    stopBtn.disabled = !running;
    pauseBtn.textContent = model.get("paused") ? "resume" : "pause";
    const sps = model.get("steps_per_second");
    info.textContent = `step ${model.get("step")} / ${model.get("steps")} · ${sps.toFixed(1)} steps/s · objective ${model.get("value").toFixed(4)}`;
    const probs = model.get("probabilities") || [];
    let text = model.get("status");
    if (probs.length) {
      const top = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 3);
      text += ` · class probabilities of the result: ${top.map(([p, i]) => `${i}: ${(100 * p).toFixed(1)}%`).join(", ")}`;
    }
    status.textContent = text;
    root.dataset.running = String(running);
    root.dataset.paused = String(model.get("paused"));
  }

  const handlers = [
    [["_image", "_image_meta"], drawMain],
    [["_snapshots", "_snapshots_meta"], drawSnapshots],
    [["_history"], drawCurve],
    [["layers", "running", "paused", "step", "steps", "steps_per_second", "value", "status", "probabilities"], syncState],
    [["n_classes", "class_note"], syncClasses],
  ];
  const bound = [];
  for (const [traits, fn] of handlers) for (const tr of traits) {
    model.on(`change:${tr}`, fn);
    bound.push([tr, fn]);
  }
  drawMain();
  drawSnapshots();
  drawCurve();
  syncState();
  syncClasses();
  return () => {
    note.dispose();
    for (const [tr, fn] of bound) model.off(`change:${tr}`, fn);
    for (const d of disposables) d.dispose();
    if (chartView) chartView.remove();
  };
}

export default { render };
