// TSNEScatter front end. Python side: cnnwidgets/widgets/tsne_scatter.py
// Traits read: index, selected, color_by, hidden_classes, class_names, k, point_size, width,
//   height, running, iteration, status, progress, _positions (float32 N x 2), _labels and
//   _predicted (int16 N; empty when the model's output gives no class scores), _atlas (pages
//   of uint8 thumbnails), _atlas_meta, _neighbors.
// Traits written: index, selected, color_by, hidden_classes.
// Hover never talks to the kernel: thumbnails come from the atlas already in the page.
import { bytesView, float32View } from "../lib/codecs.js";
import { boundSelect, h, labelled, modelNote } from "../lib/dom.js";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
  "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"];
const RIGHT = "#2ca02c";
const WRONG = "#d62728";
const BUCKETS = 64;

function int16View(v) {
  const b = bytesView(v);
  return new Int16Array(b.slice().buffer);
}

function render({ model, el }) {
  const root = h("div", { class: "cnnw-root cnnw-tsne-scatter" });
  const note = modelNote(model);
  root.append(note.node);
  el.append(root);
  const set = (k, v) => {
    model.set(k, v);
    model.save_changes();
  };
  const colorSel = boundSelect(model, "color_by", [["label", "true label"], ["predicted", "predicted label"], ["correct", "correct vs wrong"]], "cnnw-color-by");
  const status = h("span", { class: "cnnw-status" });
  const progress = h("progress", { class: "cnnw-progress", max: "1", value: "0" });
  const resetBtn = h("button", { class: "cnnw-reset-view" }, ["reset view"]);
  let boxMode = false;
  const boxBtn = h("button", { class: "cnnw-box-mode", title: "drag to select a box of points (or hold Shift)" }, ["box select"]);
  boxBtn.addEventListener("click", () => {
    boxMode = !boxMode;
    boxBtn.style.fontWeight = boxMode ? "700" : "400";
    root.dataset.boxMode = String(boxMode);
  });
  root.append(h("div", { class: "cnnw-toolbar" }, [labelled("colour by", colorSel.node), boxBtn, resetBtn, progress, status]));
  const canvas = h("canvas", { class: "cnnw-scatter", style: { cursor: "crosshair", border: "1px solid #ddd" } });
  const legend = h("div", { class: "cnnw-legend", style: { display: "flex", flexDirection: "column", gap: "2px" } });
  const tip = h("div", { class: "cnnw-tip cnnw-hover" });
  const tipCanvas = h("canvas", { class: "cnnw-hover-thumb", style: { imageRendering: "pixelated", display: "block" } });
  const tipText = h("div");
  tip.append(tipCanvas, tipText);
  const wrap = h("div", { style: { position: "relative" } }, [canvas, tip]);
  root.append(h("div", { class: "cnnw-panels" }, [wrap, legend]));
  const neigh = h("div", { class: "cnnw-neighbors" });
  root.append(neigh);
  const ctx = canvas.getContext("2d");

  let pos = new Float32Array(0);
  let labels = new Int16Array(0);
  let pred = new Int16Array(0);
  let n = 0;
  let bounds = null; // data bounds
  let view = { s: 1, tx: 0, ty: 0 }; // screen = data * s + t (y flipped)
  let userView = false;
  let grid = null;
  let pages = [];
  let atlas = {};
  let frames = 0;
  let box = null;

  const W = () => model.get("width");
  const H = () => model.get("height");

  function computeBounds() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = pos[2 * i], y = pos[2 * i + 1];
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    bounds = { x0, x1, y0, y1 };
  }
  function fitView() {
    if (!bounds) return;
    const pad = 16;
    const sx = (W() - 2 * pad) / Math.max(1e-9, bounds.x1 - bounds.x0);
    const sy = (H() - 2 * pad) / Math.max(1e-9, bounds.y1 - bounds.y0);
    const s = Math.min(sx, sy);
    view = { s, tx: pad - bounds.x0 * s + (W() - 2 * pad - (bounds.x1 - bounds.x0) * s) / 2,
      ty: pad + bounds.y1 * s + (H() - 2 * pad - (bounds.y1 - bounds.y0) * s) / 2 };
  }
  const sx = (i) => pos[2 * i] * view.s + view.tx;
  const sy = (i) => -pos[2 * i + 1] * view.s + view.ty;

  function buildGrid() {
    // buckets over the data bounds, for nearest-point lookups in O(points nearby)
    grid = Array.from({ length: BUCKETS * BUCKETS }, () => []);
    const bw = (bounds.x1 - bounds.x0) / BUCKETS || 1, bh = (bounds.y1 - bounds.y0) / BUCKETS || 1;
    grid.bw = bw; grid.bh = bh;
    for (let i = 0; i < n; i++) {
      const gx = Math.min(BUCKETS - 1, Math.floor((pos[2 * i] - bounds.x0) / bw));
      const gy = Math.min(BUCKETS - 1, Math.floor((pos[2 * i + 1] - bounds.y0) / bh));
      grid[gy * BUCKETS + gx].push(i);
    }
  }

  const groupOf = (i) => {
    const by = model.get("color_by");
    if (by === "correct") return labels[i] < 0 ? -1 : labels[i] === pred[i] ? 1 : 0;
    return by === "predicted" ? pred[i] : labels[i];
  };
  const colorOf = (g) => {
    if (model.get("color_by") === "correct") return g === 1 ? RIGHT : g === 0 ? WRONG : "#999";
    return g < 0 ? "#999" : PALETTE[g % PALETTE.length];
  };
  const visible = (i) => {
    const hidden = model.get("hidden_classes") || [];
    if (!hidden.length) return true;
    const c = model.get("color_by") === "predicted" ? pred[i] : labels[i];
    return !hidden.includes(c);
  };

  function draw() {
    canvas.width = W();
    canvas.height = H();
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, W(), H());
    if (!n) return;
    const r = model.get("point_size");
    const groups = new Map();
    for (let i = 0; i < n; i++) {
      if (!visible(i)) continue;
      const g = groupOf(i);
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push(i);
    }
    for (const [g, idx] of groups) {
      ctx.fillStyle = colorOf(g);
      ctx.beginPath();
      for (const i of idx) ctx.rect(sx(i) - r / 2, sy(i) - r / 2, r, r);
      ctx.fill();
    }
    const sel = model.get("selected") || [];
    if (sel.length) {
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 1;
      for (const i of sel.slice(0, 5000)) ctx.strokeRect(sx(i) - r, sy(i) - r, 2 * r, 2 * r);
    }
    const cur = model.get("index");
    if (cur >= 0 && cur < n) {
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(sx(cur), sy(cur), 3 * r, 0, 2 * Math.PI);
      ctx.stroke();
    }
    if (box) {
      ctx.strokeStyle = "#333";
      ctx.setLineDash([4, 3]);
      ctx.strokeRect(Math.min(box.x0, box.x1), Math.min(box.y0, box.y1), Math.abs(box.x1 - box.x0), Math.abs(box.y1 - box.y0));
      ctx.setLineDash([]);
    }
    frames += 1;
    root.dataset.frame = String(frames);
    root.dataset.scale = String(view.s);
    root.dataset.tx = String(view.tx);
    root.dataset.ty = String(view.ty);
    root.dataset.points = String(n);
  }

  function nearest(mx, my, radius = 8) {
    if (!grid || !n) return -1;
    const dx = (mx - view.tx) / view.s, dy = -(my - view.ty) / view.s;
    const rr = radius / view.s;
    const gx0 = Math.max(0, Math.floor((dx - rr - bounds.x0) / grid.bw)), gx1 = Math.min(BUCKETS - 1, Math.floor((dx + rr - bounds.x0) / grid.bw));
    const gy0 = Math.max(0, Math.floor((dy - rr - bounds.y0) / grid.bh)), gy1 = Math.min(BUCKETS - 1, Math.floor((dy + rr - bounds.y0) / grid.bh));
    let best = -1, bd = radius * radius;
    for (let gy = gy0; gy <= gy1; gy++) for (let gx = gx0; gx <= gx1; gx++) {
      for (const i of grid[gy * BUCKETS + gx]) {
        if (!visible(i)) continue;
        const ex = sx(i) - mx, ey = sy(i) - my, d = ex * ex + ey * ey;
        if (d <= bd) { bd = d; best = i; }
      }
    }
    return best;
  }

  // ---- thumbnails from the atlas (decoded into canvases once per page)
  function decodeAtlas() {
    atlas = model.get("_atlas_meta") || {};
    const raw = model.get("_atlas") || [];
    pages = raw.map((p) => {
      const b = bytesView(p);
      const c = document.createElement("canvas");
      c.width = atlas.page_w;
      const rows = Math.floor(b.length / (atlas.page_w * atlas.c));
      c.height = rows;
      const cx = c.getContext("2d");
      const img = cx.createImageData(atlas.page_w, rows);
      for (let k = 0, o = 0; k < atlas.page_w * rows; k++, o += 4) {
        const s = k * atlas.c;
        img.data[o] = b[s];
        img.data[o + 1] = atlas.c === 1 ? b[s] : b[s + 1];
        img.data[o + 2] = atlas.c === 1 ? b[s] : b[s + 2];
        img.data[o + 3] = 255;
      }
      cx.putImageData(img, 0, 0);
      return c;
    });
  }
  function drawThumb(target, i, scale) {
    const p = Math.floor(i / atlas.per_page), k = i % atlas.per_page;
    const page = pages[p];
    if (!page) return false;
    const sxp = (k % atlas.per_row) * atlas.thumb_w, syp = Math.floor(k / atlas.per_row) * atlas.thumb_h;
    target.width = atlas.thumb_w * scale;
    target.height = atlas.thumb_h * scale;
    const c = target.getContext("2d", { willReadFrequently: true });
    c.imageSmoothingEnabled = false;
    c.drawImage(page, sxp, syp, atlas.thumb_w, atlas.thumb_h, 0, 0, atlas.thumb_w * scale, atlas.thumb_h * scale);
    return true;
  }
  const names = () => model.get("class_names") || [];
  const nameOf = (c) => (c >= 0 && c < names().length ? names()[c] : String(c));

  // ---- interaction
  let drag = null;
  const local = (e) => {
    const r = canvas.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  };
  canvas.addEventListener("mousemove", (e) => {
    const t0 = performance.now();
    const [mx, my] = local(e);
    if (drag) {
      if (drag.box) {
        box = { x0: drag.x, y0: drag.y, x1: mx, y1: my };
      } else {
        view.tx += mx - drag.x;
        view.ty += my - drag.y;
        drag.x = mx;
        drag.y = my;
        drag.moved = true;
        userView = true;
      }
      draw();
      return;
    }
    const i = nearest(mx, my);
    if (i < 0) {
      tip.style.display = "none";
      root.dataset.hoverIndex = "-1";
      return;
    }
    drawThumb(tipCanvas, i, 3);
    const lab = labels[i] >= 0 ? `label ${nameOf(labels[i])} · ` : "";
    tipText.textContent = `#${i} · ${lab}` + (pred[i] >= 0 ? `predicted ${nameOf(pred[i])}` : "no prediction");
    tip.style.left = `${mx + 14}px`;
    tip.style.top = `${my + 14}px`;
    tip.style.display = "block";
    root.dataset.hoverIndex = String(i);
    root.dataset.hoverMs = (performance.now() - t0).toFixed(2);
  });
  canvas.addEventListener("mouseleave", () => {
    tip.style.display = "none";
    root.dataset.hoverIndex = "-1";
  });
  canvas.addEventListener("mousedown", (e) => {
    const [mx, my] = local(e);
    drag = { x: mx, y: my, box: e.shiftKey || boxMode, moved: false };
  });
  window.addEventListener("mouseup", onUp);
  function onUp(e) {
    if (!drag) return;
    const d = drag;
    drag = null;
    if (d.box && box) {
      const x0 = Math.min(box.x0, box.x1), x1 = Math.max(box.x0, box.x1);
      const y0 = Math.min(box.y0, box.y1), y1 = Math.max(box.y0, box.y1);
      const picked = [];
      for (let i = 0; i < n; i++) {
        if (!visible(i)) continue;
        const x = sx(i), y = sy(i);
        if (x >= x0 && x <= x1 && y >= y0 && y <= y1) picked.push(i);
      }
      box = null;
      set("selected", picked);
      draw();
    }
  }
  canvas.addEventListener("click", (e) => {
    if (e.shiftKey || boxMode) return;
    const [mx, my] = local(e);
    const i = nearest(mx, my);
    if (i >= 0) set("index", i);
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [mx, my] = local(e);
    const f = Math.exp(-e.deltaY * 0.0015);
    view.tx = mx - (mx - view.tx) * f;
    view.ty = my - (my - view.ty) * f;
    view.s *= f;
    userView = true;
    draw();
  }, { passive: false });
  resetBtn.addEventListener("click", () => {
    userView = false;
    fitView();
    draw();
  });

  function drawLegend() {
    const by = model.get("color_by");
    const hidden = model.get("hidden_classes") || [];
    if (by === "correct") {
      legend.replaceChildren(
        h("div", {}, [h("span", { style: { color: RIGHT } }, ["■ "]), "correct"]),
        h("div", {}, [h("span", { style: { color: WRONG } }, ["■ "]), "wrong"]),
      );
      return;
    }
    legend.replaceChildren(
      ...names().map((nm, c) => h("div", {
        class: "cnnw-legend-item", "data-class": String(c),
        style: { cursor: "pointer", opacity: hidden.includes(c) ? "0.35" : "1" },
        onclick: () => set("hidden_classes", hidden.includes(c) ? hidden.filter((x) => x !== c) : [...hidden, c]),
      }, [h("span", { style: { color: PALETTE[c % PALETTE.length] } }, ["■ "]), nm])),
    );
  }

  function drawNeighbors() {
    const nb = model.get("_neighbors") || {};
    if (nb.index === undefined) {
      neigh.replaceChildren();
      return;
    }
    const row = (title, idx, cls) => h("div", { class: `cnnw-thumbs ${cls}` }, [
      h("span", { style: { width: "150px" } }, [title]),
      ...idx.map((i) => {
        const c = h("canvas");
        drawThumb(c, i, 2);
        return h("div", { class: "cnnw-thumb", "data-index": String(i), onclick: () => set("index", i) }, [c, `#${i}`]);
      }),
    ]);
    const me = h("canvas");
    drawThumb(me, nb.index, 2);
    neigh.replaceChildren(
      h("div", { class: "cnnw-info" }, [`image #${nb.index} and its ${nb.feature.length} nearest neighbours`]),
      h("div", { class: "cnnw-thumbs" }, [h("span", { style: { width: "150px" } }, ["selected"]), me]),
      row("in feature space", nb.feature, "cnnw-neighbors-feature"),
      row("in pixel space", nb.pixel, "cnnw-neighbors-pixel"),
    );
  }

  function onPositions() {
    pos = float32View(model.get("_positions"));
    n = Math.floor(pos.length / 2);
    computeBounds();
    if (!userView) fitView();
    buildGrid();
    draw();
  }
  function onLabels() {
    labels = int16View(model.get("_labels"));
    pred = int16View(model.get("_predicted"));
    if (pred.length !== labels.length) pred = new Int16Array(labels.length).fill(-1);
    draw();
    drawLegend();
  }
  function syncStatus() {
    const p = model.get("progress");
    progress.style.visibility = p >= 0 ? "visible" : "hidden";
    progress.value = Math.max(0, p);
    const it = model.get("iteration");
    status.textContent = model.get("status") + (model.get("running") && it ? ` iteration ${it}` : "");
    root.dataset.running = String(model.get("running"));
  }

  const handlers = [
    [["_positions"], onPositions],
    [["_labels", "_predicted"], onLabels],
    [["_atlas", "_atlas_meta"], () => { decodeAtlas(); drawNeighbors(); }],
    [["color_by", "hidden_classes", "class_names"], () => { draw(); drawLegend(); }],
    [["index", "selected", "point_size", "width", "height"], draw],
    [["_neighbors"], drawNeighbors],
    [["status", "progress", "running", "iteration"], syncStatus],
  ];
  const bound = [];
  for (const [traits, fn] of handlers) for (const tr of traits) {
    model.on(`change:${tr}`, fn);
    bound.push([tr, fn]);
  }
  decodeAtlas();
  onLabels();
  onPositions();
  drawLegend();
  drawNeighbors();
  syncStatus();

  return () => {
    note.dispose();
    for (const [tr, fn] of bound) model.off(`change:${tr}`, fn);
    colorSel.dispose();
    window.removeEventListener("mouseup", onUp);
  };
}

export default { render };
