// TSNEScatter front end. Python side: cnnwidgets/widgets/tsne_scatter.py
// Traits read: index, selected, color_by, hidden_classes, class_names, k, point_size, aspect,
//   running, phase, iteration, n_iter, status, progress, selection_note, _positions (float32
//   N x 2), _labels and _predicted (int16 N; _predicted null without class scores),
//   _thumbnails (uint8 N x h x w x c, packed here into canvas pages), _neighbors.
// Traits written: index, selected, color_by, hidden_classes, k.
// Hover never talks to the kernel: thumbnails come from the page's own copy.
//
// Coordinates: a point's screen position, in CSS pixels from the canvas's top-left corner, is
// (x * s + tx, -y * s + ty) for its data position (x, y); s, tx, ty are on the root as
// data-scale, data-tx, data-ty (the browser tests and the exported page read them).
import { decodeArray } from "../lib/codecs.js";
import { bindTraits } from "../lib/bind.js";
import { boundNumber, boundSelect, h, hasFocus, labelled, live, viewShell } from "../lib/dom.js";
import { observeWidth } from "../lib/resize.js";
import { luminance, onThemeChange, themeColors } from "../lib/theme.js";
import { sender } from "../lib/messages.js";
import { pointLayer } from "../lib/points.js";

// the colour of each class (one table, cnnwidgets/widgets/palette.json, which the picture a
// saved notebook keeps of the map uses too: cnnwidgets/widgets/_static.py)
import PALETTE from "../../../cnnwidgets/widgets/palette.json";
/** Least contrast of a point colour against the canvas background (WCAG's for graphics). */
const MIN_CONTRAST = 3;
const BUCKETS = 64;
/** Largest side of a thumbnail page (pixels): within every browser's canvas limits. */
const ATLAS_PAGE = 4096;
const PAD = 16;
const COLOR_CHOICES = [["label", "true label"], ["predicted", "predicted class"], ["correct", "correct vs wrong"]];
const LEGEND_TITLE = { label: "colour: label", predicted: "colour: predicted class", correct: "colour: correct?" };

// ---- colours readable on the theme's background

function rgbOf(css) {
  const m = /^#([0-9a-f]{6})$/i.exec(css);
  if (m) return [0, 2, 4].map((k) => parseInt(m[1].slice(k, k + 2), 16));
  const r = /rgba?\(([^)]+)\)/.exec(css || "");
  return r ? r[1].split(/[ ,/]+/).filter(Boolean).slice(0, 3).map(Number) : [128, 128, 128];
}
const cssOf = (c) => `rgb(${c.map((v) => Math.round(v)).join(", ")})`;
const contrast = (a, b) => {
  const x = luminance(cssOf(a)), y = luminance(cssOf(b));
  return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
};

/** `color` (CSS) with its hue kept, mixed toward white on a dark background (toward black on a
 *  light one) until it stands out from `bg` by MIN_CONTRAST. */
export function readable(color, bg) {
  const c = rgbOf(color), b = rgbOf(bg);
  const target = luminance(cssOf(b)) < 0.4 ? [255, 255, 255] : [0, 0, 0];
  for (let t = 0; t <= 1.0001; t += 0.05) {
    const m = c.map((v, k) => v + (target[k] - v) * t);
    if (contrast(m, b) >= MIN_CONTRAST) return cssOf(m);
  }
  return cssOf(target);
}

// ---- thumbnails: (N, h, w, c) uint8 packed into canvas pages of at most ATLAS_PAGE pixels

function thumbnailPages(arr) {
  const [n, th, tw, c] = arr.shape.length === 4 ? arr.shape : [0, 1, 1, 1];
  const perRow = Math.max(1, Math.floor(ATLAS_PAGE / tw));
  const perPage = perRow * Math.max(1, Math.floor(ATLAS_PAGE / th));
  const count = n ? Math.ceil(n / perPage) : 0;
  const pages = new Array(count).fill(null);
  const build = (p) => {
    const first = p * perPage, m = Math.min(perPage, n - first);
    const rows = Math.ceil(m / perRow), pw = perRow * tw, ph = rows * th;
    const canvas = document.createElement("canvas");
    canvas.width = pw;
    canvas.height = ph;
    const cx = canvas.getContext("2d");
    const img = cx.createImageData(pw, ph);
    const d = img.data, src = arr.data;
    for (let k = 0; k < m; k++) {
      const x0 = (k % perRow) * tw, y0 = Math.floor(k / perRow) * th;
      let s = (first + k) * th * tw * c;
      for (let y = 0; y < th; y++) {
        let o = ((y0 + y) * pw + x0) * 4;
        for (let x = 0; x < tw; x++, o += 4, s += c) {
          d[o] = src[s];
          d[o + 1] = c === 1 ? src[s] : src[s + 1];
          d[o + 2] = c === 1 ? src[s] : src[s + 2];
          d[o + 3] = 255;
        }
      }
    }
    cx.putImageData(img, 0, 0);
    return canvas;
  };
  return {
    n, th, tw, count,
    side: count ? Math.max(perRow * tw, Math.ceil(Math.min(perPage, n) / perRow) * th) : 0,
    /** Draw thumbnail i into `target` at `scale` (pages are built on first use). */
    draw(target, i, scale) {
      if (i < 0 || i >= n) return false;
      const p = Math.floor(i / perPage), k = i % perPage;
      if (!pages[p]) pages[p] = build(p);
      target.width = tw * scale;
      target.height = th * scale;
      const cx = target.getContext("2d", { willReadFrequently: true });
      cx.imageSmoothingEnabled = false;
      cx.drawImage(pages[p], (k % perRow) * tw, Math.floor(k / perRow) * th, tw, th, 0, 0, tw * scale, th * scale);
      return true;
    },
  };
}

function render({ model, el }) {
  const shell = viewShell(model, el, "cnnw-tsne-scatter");
  const root = shell.root;
  const disposers = [shell.dispose];
  const set = (values) => {
    for (const [k, v] of Object.entries(values)) model.set(k, v);
    model.save_changes();
  };

  // ---- controls
  const colorSel = boundSelect(model, "color_by", COLOR_CHOICES, "cnnw-color-by", { title: "What the point colours show: the true label, the predicted class, or whether the prediction is right" });
  const kField = boundNumber(model, "k", "cnnw-k", { int: true, min: 1, max: 64, width: "4em", title: "How many nearest neighbours of the selected image are shown below the map" });
  disposers.push(colorSel.dispose, kField.dispose);
  let boxMode = false;
  const boxBtn = h("button", { class: "cnnw-box-mode", "aria-pressed": "false", title: "Drag on the map to select the points in a box (or hold Shift while dragging)" }, ["box select"]);
  const resetBtn = h("button", { class: "cnnw-reset-view", title: "Fit all points in the map again after zooming or panning" }, ["reset view"]);
  const kLabel = labelled("neighbours", kField, "How many nearest neighbours of the selected image are shown below the map");
  kLabel.setAttribute("data-needs-kernel", "");
  const progress = h("progress", { class: "cnnw-progress", max: "1", title: "How far the feature pass or the t-SNE run is" });
  const progressText = h("span", { class: "cnnw-progress-text" });
  const phaseBadge = h("span", { class: "cnnw-phase", role: "status" });
  const status = h("span", { class: "cnnw-status" });
  const send = sender(model, "tsne_scatter");
  const stopBtn = h("button", { class: "cnnw-stop", "data-needs-kernel": "", title: "Stop the feature pass or the t-SNE run after its current step (the map keeps the positions reached)",
    onclick: () => send("stop") }, ["stop"]);
  const againBtn = h("button", { class: "cnnw-start", "data-needs-kernel": "", title: "Compute the features and the map again from the start",
    onclick: () => send("start") }, ["run again"]);
  root.append(
    h("div", { class: "cnnw-toolbar" }, [labelled("colour by", colorSel, "What the point colours show: the true label, the predicted class, or whether the prediction is right"), boxBtn, resetBtn, kLabel]),
    h("div", { class: "cnnw-toolbar cnnw-tsne-progress" }, [progress, progressText, phaseBadge, stopBtn, againBtn, status]),
  );
  const selCount = h("span", { class: "cnnw-selection-count", "aria-live": "polite" });
  const clearBtn = h("button", { class: "cnnw-clear-selection", title: "Clear the box selection (Escape, or a click on empty space, does the same)" }, ["clear selection"]);
  root.append(h("div", { class: "cnnw-toolbar cnnw-selection-bar" }, [selCount, clearBtn]));

  // ---- map, hover tip and legend
  const canvas = h("canvas", {
    class: "cnnw-scatter", tabindex: "0", role: "application", "aria-label": "feature map of the images, one point per image",
    title: "Hover: image · click: select · drag: pan · wheel: zoom · Shift-drag: box select · arrows, Enter: move, select · Esc: clear",
  });
  const tipCanvas = h("canvas", { class: "cnnw-hover-thumb" });
  const tipText = h("div");
  const tip = h("div", { class: "cnnw-tip cnnw-hover" }, [tipCanvas, tipText]);
  const wrap = h("div", { class: "cnnw-scatter-wrap" }, [canvas, tip]);
  const legendTitle = h("div", { class: "cnnw-legend-title" });
  const legendItems = h("div", { class: "cnnw-legend-items" });
  const legendFoot = h("div", { class: "cnnw-legend-foot" });
  const legend = h("div", { class: "cnnw-legend", role: "group", "aria-label": "legend" }, [legendTitle, legendItems, legendFoot]);
  root.append(h("div", { class: "cnnw-tsne-main" }, [wrap, legend]));
  const neigh = h("div", { class: "cnnw-neighbors" });
  root.append(neigh);
  const ctx = canvas.getContext("2d");
  // the points: one WebGL draw call (copied into the canvas, the overlay drawn on top), or
  // Canvas 2D where WebGL is not available
  const gl = pointLayer();
  root.dataset.renderer = gl ? "webgl" : "canvas";
  let glPositions = null; // the positions array last uploaded
  let glColorKey = "";
  let dataVersion = 0; // bumped when labels or predictions change

  let pos = new Float32Array(0);
  let labels = new Int16Array(0);
  let pred = new Int16Array(0);
  let n = 0;
  let bounds = null; // data bounds
  let view = { s: 1, tx: 0, ty: 0 }; // screen = (x * s + tx, -y * s + ty), CSS pixels
  let userView = false;
  let W = 0, H = 0; // canvas size, CSS pixels
  let grid = null;
  let thumbs = thumbnailPages({ data: new Uint8Array(0), shape: [0] });
  let frames = 0;
  let box = null;
  let cursor = -1; // the keyboard's point (Enter selects it)
  let theme = null;
  let colors = { palette: PALETTE, right: "#2ca02c", wrong: "#d62728", none: "#999" };

  function readTheme() {
    theme = themeColors(root);
    const bg = theme.bg || "rgb(255, 255, 255)";
    colors = {
      palette: PALETTE.map((c) => readable(c, bg)),
      right: readable(theme.good || "#2e7d32", bg),
      wrong: readable(theme.error || "#c62828", bg),
      none: readable(theme.fgMuted || "#777", bg),
    };
    root.dataset.dark = String(!!theme.dark);
  }

  function computeBounds() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = pos[2 * i], y = pos[2 * i + 1];
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    bounds = n ? { x0, x1, y0, y1 } : null;
  }
  function fitView() {
    if (!bounds || !W) return;
    const s = Math.min((W - 2 * PAD) / Math.max(1e-9, bounds.x1 - bounds.x0), (H - 2 * PAD) / Math.max(1e-9, bounds.y1 - bounds.y0));
    view = { s, tx: PAD - bounds.x0 * s + (W - 2 * PAD - (bounds.x1 - bounds.x0) * s) / 2,
      ty: PAD + bounds.y1 * s + (H - 2 * PAD - (bounds.y1 - bounds.y0) * s) / 2 };
  }
  const sx = (i) => pos[2 * i] * view.s + view.tx;
  const sy = (i) => -pos[2 * i + 1] * view.s + view.ty;

  function buildGrid() {
    // buckets over the data bounds, for nearest-point lookups in O(points nearby)
    if (!bounds) {
      grid = null;
      return;
    }
    grid = Array.from({ length: BUCKETS * BUCKETS }, () => []);
    const bw = (bounds.x1 - bounds.x0) / BUCKETS || 1, bh = (bounds.y1 - bounds.y0) / BUCKETS || 1;
    grid.bw = bw; grid.bh = bh;
    for (let i = 0; i < n; i++) {
      const gx = Math.min(BUCKETS - 1, Math.floor((pos[2 * i] - bounds.x0) / bw));
      const gy = Math.min(BUCKETS - 1, Math.floor((pos[2 * i + 1] - bounds.y0) / bh));
      grid[gy * BUCKETS + gx].push(i);
    }
  }

  const hasPred = () => pred.some((v) => v >= 0);
  /** The class the legend shows and hides for point i (the predicted class when colouring by
   *  it, else the label; -1: none). Python: TSNEScatter._legend_classes. */
  const classOf = (i) => (model.get("color_by") === "predicted" ? pred[i] : labels[i]);
  const groupOf = (i) => {
    if (model.get("color_by") === "correct") return labels[i] < 0 || pred[i] < 0 ? -1 : labels[i] === pred[i] ? 1 : 0;
    return classOf(i);
  };
  const colorOf = (g) => {
    if (model.get("color_by") === "correct") return g === 1 ? colors.right : g === 0 ? colors.wrong : colors.none;
    return g < 0 ? colors.none : colors.palette[g % colors.palette.length];
  };
  let hiddenSet = new Set();
  const visible = (i) => !hiddenSet.size || !hiddenSet.has(classOf(i));
  const visibleSelection = () => (model.get("selected") || []).filter((i) => i >= 0 && i < n && visible(i));

  /** RGBA per point for the WebGL layer (alpha 0: hidden in the legend). */
  function pointColors() {
    const out = new Uint8Array(4 * n);
    const rgb = new Map();
    for (let i = 0; i < n; i++) {
      if (!visible(i)) continue;
      const g = groupOf(i);
      let c = rgb.get(g);
      if (!c) rgb.set(g, (c = rgbOf(colorOf(g))));
      out[4 * i] = c[0]; out[4 * i + 1] = c[1]; out[4 * i + 2] = c[2]; out[4 * i + 3] = 255;
    }
    return out;
  }

  function draw() {
    if (!W) return;
    if (!theme) readTheme();
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
    canvas.style.height = `${H}px`;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = theme.bg || "#fff";
    ctx.fillRect(0, 0, W, H);
    root.dataset.width = String(W);
    root.dataset.height = String(H);
    root.dataset.scale = String(view.s);
    root.dataset.tx = String(view.tx);
    root.dataset.ty = String(view.ty);
    root.dataset.points = String(n);
    if (!n) {
      ctx.fillStyle = theme.fgMuted;
      ctx.font = "12px sans-serif";
      ctx.fillText(model.get("phase") === "failed" ? "no map: the feature pass failed" : "computing the map ...", PAD, PAD + 12);
      return;
    }
    const r = model.get("point_size");
    if (gl && !gl.lost) {
      if (glPositions !== pos) {
        gl.setPositions(pos.subarray(0, 2 * n));
        glPositions = pos;
      }
      const key = [n, dataVersion, model.get("color_by"), [...hiddenSet].join(","), theme.bg, colors.palette[0]].join("|");
      if (key !== glColorKey) {
        gl.setColors(pointColors());
        glColorKey = key;
      }
      gl.draw(W, H, dpr, view, r, rgbOf(theme.bg || "rgb(255, 255, 255)"));
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.drawImage(gl.canvas, 0, 0);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    } else {
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
    }
    const sel = visibleSelection(); // marks only for points that are shown
    if (sel.length) {
      ctx.strokeStyle = theme.fg;
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (const i of sel.slice(0, 20000)) ctx.rect(sx(i) - r, sy(i) - r, 2 * r, 2 * r);
      ctx.stroke();
    }
    root.dataset.marks = String(sel.length);
    const ring = (i, radius, inner, dash) => {
      ctx.setLineDash(dash);
      ctx.lineWidth = 4;
      ctx.strokeStyle = theme.bg;
      ctx.beginPath();
      ctx.arc(sx(i), sy(i), radius, 0, 2 * Math.PI);
      ctx.stroke();
      ctx.lineWidth = 2;
      ctx.strokeStyle = inner;
      ctx.stroke();
      ctx.setLineDash([]);
    };
    const cur = model.get("index");
    if (cur >= 0 && cur < n && visible(cur)) ring(cur, Math.max(6, 3 * r), theme.highlight || "#ff8c00", []);
    if (cursor >= 0 && cursor < n && cursor !== cur && hasFocus(canvas)) ring(cursor, Math.max(6, 3 * r), theme.accent, [3, 2]);
    if (box) {
      const x = Math.min(box.x0, box.x1), y = Math.min(box.y0, box.y1), w = Math.abs(box.x1 - box.x0), bh = Math.abs(box.y1 - box.y0);
      ctx.fillStyle = theme.accent;
      ctx.globalAlpha = 0.12;
      ctx.fillRect(x, y, w, bh);
      ctx.globalAlpha = 1;
      ctx.strokeStyle = theme.fg;
      ctx.setLineDash([4, 3]);
      ctx.strokeRect(x, y, w, bh);
      ctx.setLineDash([]);
    }
    frames += 1;
    root.dataset.frame = String(frames);
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
        if (d < bd || (d === bd && i < best)) { bd = d; best = i; }
      }
    }
    return best;
  }

  /** The nearest shown point from point `c` in direction `key` (an arrow key): among the points
   *  within 45 degrees of that direction on the screen, the closest (the lower index on a tie);
   *  `c` itself when there is none. */
  function step(c, key) {
    const [ax, ay] = { ArrowRight: [1, 0], ArrowLeft: [-1, 0], ArrowDown: [0, 1], ArrowUp: [0, -1] }[key];
    let best = c, bd = Infinity;
    const x0 = sx(c), y0 = sy(c);
    for (let j = 0; j < n; j++) {
      if (j === c || !visible(j)) continue;
      const dx = sx(j) - x0, dy = sy(j) - y0;
      const along = dx * ax + dy * ay, across = Math.abs(dx * ay - dy * ax);
      if (along <= 0 || across > along) continue;
      const d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = j; }
    }
    return best;
  }

  const names = () => model.get("class_names") || [];
  const nameOf = (c) => (c >= 0 && c < names().length ? names()[c] : String(c));

  function showTip(i, mx, my) {
    if (i < 0) {
      tip.style.display = "none";
      root.dataset.hoverIndex = "-1";
      return;
    }
    // thumbnails arrive while the feature pass reads the images: a point may not have one yet
    const has = thumbs.draw(tipCanvas, i, Math.max(1, Math.round(84 / Math.max(thumbs.th, thumbs.tw, 1))));
    tipCanvas.hidden = !has;
    const lab = labels[i] >= 0 ? `label ${nameOf(labels[i])} · ` : "";
    tipText.textContent = `#${i} · ${lab}` + (pred[i] >= 0 ? `predicted ${nameOf(pred[i])}` : "no prediction")
      + (has ? "" : " · thumbnail loading ...");
    tip.style.display = "block";
    // inside the map: to the left of / above the point near the right / bottom edge
    const tw = tip.offsetWidth, th = tip.offsetHeight;
    tip.style.left = `${mx + 14 + tw > W ? Math.max(0, mx - 14 - tw) : mx + 14}px`;
    tip.style.top = `${my + 14 + th > H ? Math.max(0, my - 14 - th) : my + 14}px`;
    root.dataset.hoverIndex = String(i);
  }

  // ---- pointer
  let drag = null;
  let dragged = false; // the last press moved (a pan or a box): its click is not a click
  const local = (e) => {
    const r = canvas.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  };
  canvas.addEventListener("mousemove", (e) => {
    const t0 = performance.now();
    const [mx, my] = local(e);
    if (drag) {
      if (Math.hypot(mx - drag.x0, my - drag.y0) > 3) drag.moved = true;
      if (!drag.moved) return;
      if (drag.box) box = { x0: drag.x0, y0: drag.y0, x1: mx, y1: my };
      else {
        view.tx += mx - drag.x;
        view.ty += my - drag.y;
        userView = true;
      }
      drag.x = mx;
      drag.y = my;
      draw();
      return;
    }
    showTip(nearest(mx, my), mx, my);
    root.dataset.hoverMs = (performance.now() - t0).toFixed(2);
  });
  canvas.addEventListener("mouseleave", () => showTip(-1));
  canvas.addEventListener("mousedown", (e) => {
    const [mx, my] = local(e);
    drag = { x0: mx, y0: my, x: mx, y: my, box: e.shiftKey || boxMode, moved: false };
  });
  function onUp() {
    if (!drag) return;
    const d = drag;
    drag = null;
    dragged = d.moved;
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
      set({ selected: picked });
      draw();
    }
  }
  window.addEventListener("mouseup", onUp);
  disposers.push(() => window.removeEventListener("mouseup", onUp));
  canvas.addEventListener("click", (e) => {
    if (dragged) {
      dragged = false;
      return;
    }
    const [mx, my] = local(e);
    const i = nearest(mx, my);
    if (i >= 0) {
      cursor = i;
      root.dataset.cursor = String(i);
      set({ index: i });
    } else if ((model.get("selected") || []).length) set({ selected: [] }); // a click on empty space
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

  // ---- keyboard: arrows move the cursor to the nearest point that way, Enter selects it
  const showCursor = () => {
    root.dataset.cursor = String(cursor);
    if (cursor >= 0) showTip(cursor, sx(cursor), sy(cursor));
    draw();
  };
  canvas.addEventListener("focus", () => {
    if (!n) return;
    const cur = model.get("index");
    if (!(cursor >= 0 && cursor < n && visible(cursor))) cursor = cur >= 0 && cur < n && visible(cur) ? cur : nearest(W / 2, H / 2, Infinity);
    showCursor();
  });
  canvas.addEventListener("blur", () => {
    showTip(-1);
    draw();
  });
  canvas.addEventListener("keydown", (e) => {
    if (e.key.startsWith("Arrow") && n && cursor >= 0) {
      e.preventDefault();
      cursor = step(cursor, e.key);
      showCursor();
    } else if ((e.key === "Enter" || e.key === " ") && cursor >= 0) {
      e.preventDefault();
      set({ index: cursor });
    }
  });
  root.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    if (box || drag) {
      box = null;
      drag = null;
      draw();
    } else if ((model.get("selected") || []).length) set({ selected: [] });
  });

  // ---- toolbar actions
  boxBtn.addEventListener("click", () => {
    boxMode = !boxMode;
    boxBtn.setAttribute("aria-pressed", String(boxMode));
    boxBtn.classList.toggle("cnnw-active", boxMode);
    root.dataset.boxMode = String(boxMode);
  });
  resetBtn.addEventListener("click", () => {
    userView = false;
    fitView();
    draw();
  });
  clearBtn.addEventListener("click", () => set({ selected: [] }));

  function syncSelection() {
    const shown = visibleSelection().length;
    selCount.textContent = shown ? `${shown} point${shown === 1 ? "" : "s"} selected` : "no points selected (Shift-drag on the map to select a box)";
    clearBtn.hidden = !shown; // (a disabled button would be unreadably faint)
    root.dataset.selectedCount = String(shown);
  }

  // ---- legend
  function toggleClass(c) {
    const hidden = model.get("hidden_classes") || [];
    if (hidden.includes(c)) return set({ hidden_classes: hidden.filter((x) => x !== c) });
    // a hidden class's points leave the selection too (the kernel does the same)
    const next = new Set([...hidden, c]);
    const by = model.get("color_by") === "predicted" ? pred : labels;
    set({ hidden_classes: [...next], selected: (model.get("selected") || []).filter((i) => !next.has(by[i])) });
  }
  function drawLegend() {
    const by = model.get("color_by");
    const hidden = model.get("hidden_classes") || [];
    legendTitle.textContent = LEGEND_TITLE[by] || by;
    const swatch = (color, off = false) => h("span", { class: "cnnw-swatch", style: off ? { borderColor: color } : { background: color, borderColor: color } });
    const counts = new Map();
    const src = by === "predicted" ? pred : labels;
    if (by === "correct") {
      for (let i = 0; i < n; i++) if (visible(i)) counts.set(groupOf(i), (counts.get(groupOf(i)) || 0) + 1);
      const rows = [[1, "correct"], [0, "wrong"], [-1, hasPred() ? "no label" : "no prediction"]].filter(([g]) => counts.get(g) || g >= 0);
      legendItems.replaceChildren(...rows.map(([g, text]) => h("div", { class: "cnnw-legend-row", "data-group": String(g) }, [swatch(colorOf(g)), `${text} (${counts.get(g) || 0})`])));
    } else {
      for (let i = 0; i < n; i++) counts.set(src[i], (counts.get(src[i]) || 0) + 1);
      const classes = new Set(names().map((_, c) => c));
      for (const c of counts.keys()) if (c >= 0) classes.add(c);
      const items = [...classes].sort((a, b) => a - b).map((c) => {
        const off = hidden.includes(c);
        const nm = nameOf(c);
        const text = nm === String(c) ? nm : `${c} · ${nm}`;
        return h("button", {
          class: `cnnw-legend-item${off ? " cnnw-off" : ""}`, "data-class": String(c), "aria-pressed": String(!off),
          title: off ? `Show class ${nm} again` : `Hide class ${nm} (its points leave the selection)`,
          onclick: () => toggleClass(c),
        }, [swatch(colorOf(c), off), `${text} (${counts.get(c) || 0})`]);
      });
      if (counts.get(-1)) items.push(h("div", { class: "cnnw-legend-row", "data-group": "-1" }, [swatch(colors.none), `${by === "predicted" ? "no prediction" : "no label"} (${counts.get(-1)})`]));
      legendItems.replaceChildren(...items);
    }
    const showAll = h("button", { class: "cnnw-show-all", title: "Show every class again", onclick: () => set({ hidden_classes: [] }) }, ["show all"]);
    legendFoot.replaceChildren(...(hidden.length ? [h("span", {}, [`${hidden.length} class${hidden.length === 1 ? "" : "es"} hidden${by === "correct" ? " (by label)" : ""} `]), showAll] : []));
  }

  // ---- neighbours of the selected image (computed by the kernel)
  function drawNeighbors() {
    const nb = model.get("_neighbors") || {};
    const cur = model.get("index");
    if (cur < 0 || cur >= n) {
      neigh.replaceChildren();
      return;
    }
    if (nb.index !== cur) {
      neigh.replaceChildren(h("div", { class: "cnnw-info" }, [live(model) ? `image #${cur}: finding its nearest neighbours ...`
        : `image #${cur}: its neighbours are not in this static copy`]));
      return;
    }
    const thumb = (i, attrs = {}) => {
      const c = h("canvas");
      thumbs.draw(c, i, 2);
      return h("div", { class: "cnnw-thumb", "data-index": String(i), ...attrs }, [c, `#${i}`]);
    };
    const row = (title, idx, cls) => h("div", { class: `cnnw-thumbs ${cls}` }, [
      h("span", { class: "cnnw-thumbs-title" }, [title]),
      ...idx.map((i) => thumb(i, { role: "button", tabindex: "0", title: `Select image #${i}`, onclick: () => set({ index: i }),
        onkeydown: (e) => { if (e.key === "Enter") set({ index: i }); } })),
    ]);
    neigh.replaceChildren(
      h("div", { class: "cnnw-info" }, [`image #${nb.index} and its ${nb.feature.length} nearest neighbours`]),
      h("div", { class: "cnnw-thumbs" }, [h("span", { class: "cnnw-thumbs-title" }, ["selected"]), thumb(nb.index)]),
      row("in feature space", nb.feature, "cnnw-neighbors-feature"),
      row("in pixel space", nb.pixel, "cnnw-neighbors-pixel"),
    );
  }

  // ---- progress and status
  function syncStatus() {
    const phase = model.get("phase") || "idle";
    const it = model.get("iteration"), total = model.get("n_iter");
    const p = model.get("progress");
    const tsneRun = phase === "embedding" && model.get("method") === "tsne" && it > 0;
    let text = "";
    if (phase === "features" && p >= 0) {
      progress.value = p / 0.9;
      text = `features: ${Math.round((100 * p) / 0.9)}%`;
    } else if (tsneRun) {
      progress.value = Math.min(1, it / Math.max(1, total));
      text = `iteration ${it} of ${total}`;
    } else if (phase === "embedding") progress.removeAttribute("value"); // a step without steps
    else if (phase === "stopped" && model.get("method") === "tsne" && it > 0) text = `stopped at iteration ${it} of ${total}`;
    progress.hidden = !["features", "embedding"].includes(phase);
    progressText.textContent = text;
    progressText.hidden = !text;
    const badge = { done: "done", stopped: "stopped", failed: "failed", features: "running", embedding: "running" }[phase] || "";
    phaseBadge.textContent = badge;
    phaseBadge.hidden = !badge;
    phaseBadge.className = `cnnw-phase cnnw-phase-${phase}`;
    stopBtn.hidden = !model.get("running");
    againBtn.hidden = !!model.get("running") || phase === "idle";
    status.textContent = model.get("status") || "";
    root.dataset.running = String(model.get("running"));
    root.dataset.phase = phase;
  }

  // ---- data from the kernel
  function onPositions() {
    const a = decodeArray(model.get("_positions"));
    pos = a.dtype === "float32" ? a.data : new Float32Array(0);
    n = Math.floor(pos.length / 2);
    if (n !== labels.length && labels.length) n = Math.min(n, labels.length);
    computeBounds();
    if (!userView) fitView();
    buildGrid();
    if (cursor >= n) cursor = -1;
    draw();
  }
  function onLabels() {
    labels = Int16Array.from(decodeArray(model.get("_labels")).data);
    const p = decodeArray(model.get("_predicted")).data;
    pred = p.length === labels.length ? Int16Array.from(p) : new Int16Array(labels.length).fill(-1);
    dataVersion += 1;
  }
  const onHidden = () => {
    hiddenSet = new Set(model.get("hidden_classes") || []);
  };

  function resize(width) {
    if (!theme || !theme.bg) readTheme(); // the first width: the view is in the page now
    const old = W;
    W = width;
    H = Math.max(120, Math.round(width * (model.get("aspect") || 0.75)));
    if (userView && old) {
      const f = W / old; // the same part of the map, at the new size
      view = { s: view.s * f, tx: view.tx * f, ty: view.ty * f };
    } else fitView();
    draw();
  }

  disposers.push(
    bindTraits(model, {
      "_labels _predicted": () => { onLabels(); draw(); drawLegend(); },
      _positions: () => { onPositions(); drawLegend(); drawNeighbors(); syncSelection(); },
      _thumbnails: () => {
        thumbs = thumbnailPages(decodeArray(model.get("_thumbnails")));
        root.dataset.atlasPages = String(thumbs.count);
        root.dataset.atlasSide = String(thumbs.side);
        drawNeighbors();
      },
      "color_by hidden_classes class_names": () => { onHidden(); draw(); drawLegend(); syncSelection(); },
      "index point_size": () => {
        const cur = model.get("index");
        if (cur >= 0 && cur < n) cursor = cur; // the keyboard goes on from the selected point
        root.dataset.cursor = String(cursor);
        draw();
        drawNeighbors();
      },
      selected: () => { draw(); syncSelection(); },
      _neighbors: drawNeighbors,
      aspect: () => W && resize(W),
      "status progress running iteration n_iter phase method": () => { syncStatus(); if (!n) draw(); },
    }),
    observeWidth(wrap, resize),
    onThemeChange(() => {
      readTheme();
      draw();
      drawLegend();
    }),
  );

  if (gl) disposers.push(() => gl.dispose());
  return () => disposers.forEach((d) => d());
}

export default { render };
