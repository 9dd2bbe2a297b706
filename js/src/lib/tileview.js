// A scrollable grid of tiles drawn on a canvas that covers only the visible part: the cost of
// a frame is the viewport's size, whatever the number of tiles. Used by FilterGrid and
// ActivationExplorer. The root element gets data-frame (frames drawn), data-x0/data-y0
// (grid pixel at the canvas's top-left) and data-hover-tile, for tests and tools.
import { gridSize, renderTiles, tileAt, tileOrigin } from "./tiles.js";
import { h } from "./dom.js";

const BACKGROUND = [255, 255, 255];

export class TileView {
  /**
   * @param {HTMLElement} root   element that carries the data-* attributes
   * @param {object} opts        { canvasClass, describe(t) -> string, onClick(t), maxHeight }
   */
  constructor(root, opts) {
    this.root = root;
    this.opts = opts;
    this.frames = 0;
    this.state = null;
    this.highlight = [];
    this.scroller = h("div", { class: "cnnw-scroll" });
    this.spacer = h("div", { class: "cnnw-spacer" });
    this.canvas = h("canvas", { class: opts.canvasClass || "cnnw-canvas" });
    this.overlay = h("canvas", { class: "cnnw-overlay", style: { pointerEvents: "none" } });
    this.tip = h("div", { class: "cnnw-tip" });
    this.spacer.append(this.canvas, this.overlay);
    this.scroller.append(this.spacer);
    this.node = h("div", { style: { position: "relative" } }, [this.scroller, this.tip]);
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    this.octx = this.overlay.getContext("2d");
    this.pending = false;
    this.schedule = this.schedule.bind(this);
    this._move = (e) => this.onMove(e);
    this._leave = () => {
      this.tip.style.display = "none";
      this.root.dataset.hoverTile = "-1";
    };
    this._click = (e) => {
      const t = this.tileFromEvent(e);
      if (t >= 0 && this.opts.onClick) this.opts.onClick(t);
    };
    this.canvas.addEventListener("mousemove", this._move);
    this.canvas.addEventListener("mouseleave", this._leave);
    this.canvas.addEventListener("click", this._click);
    this.scroller.addEventListener("scroll", this.schedule, { passive: true });
    this.ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(this.schedule) : null;
    if (this.ro) this.ro.observe(this.scroller);
  }

  /** state: { codes, lut, grid, zoom, padding, order? } */
  set(state) {
    this.state = state;
    this.schedule();
  }

  setHighlight(tiles) {
    this.highlight = tiles;
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const s = this.state;
    if (!s || !s.grid || !s.grid.n_tiles) return;
    const { width, height } = gridSize(s.grid, s.zoom, s.padding);
    this.spacer.style.width = `${width}px`;
    this.spacer.style.height = `${height}px`;
    this.scroller.style.maxHeight = `${this.opts.maxHeight ? this.opts.maxHeight() : 480}px`;
    const vw = Math.max(1, Math.min(width, this.scroller.clientWidth || width));
    const vh = Math.max(1, Math.min(height, this.scroller.clientHeight || height));
    const x0 = Math.min(this.scroller.scrollLeft, Math.max(0, width - vw));
    const y0 = Math.min(this.scroller.scrollTop, Math.max(0, height - vh));
    for (const c of [this.canvas, this.overlay]) {
      if (c.width !== vw) c.width = vw;
      if (c.height !== vh) c.height = vh;
      c.style.left = `${x0}px`;
      c.style.top = `${y0}px`;
    }
    const img = this.ctx.createImageData(vw, vh);
    renderTiles(img, { ...s, x0, y0, background: BACKGROUND });
    this.ctx.putImageData(img, 0, 0);
    this.drawHighlight(x0, y0, vw, vh);
    this.frames += 1;
    this.root.dataset.frame = String(this.frames);
    this.root.dataset.x0 = String(x0);
    this.root.dataset.y0 = String(y0);
  }

  drawHighlight(x0, y0, vw, vh) {
    const s = this.state;
    this.octx.clearRect(0, 0, vw, vh);
    const tw = s.grid.tile_w * s.zoom;
    const th = s.grid.tile_h * s.zoom;
    this.octx.strokeStyle = "#ff8c00";
    this.octx.lineWidth = 2;
    for (const t of this.highlight) {
      if (t < 0 || t >= s.grid.n_tiles) continue;
      const o = tileOrigin(s.grid, s.zoom, s.padding, t);
      if (o.x + tw < x0 || o.y + th < y0 || o.x > x0 + vw || o.y > y0 + vh) continue;
      this.octx.strokeRect(o.x - x0 + 1, o.y - y0 + 1, tw - 2, th - 2);
    }
  }

  tileFromEvent(e) {
    const s = this.state;
    if (!s || !s.grid || !s.grid.n_tiles) return -1;
    const rect = this.canvas.getBoundingClientRect();
    const gx = Math.floor(e.clientX - rect.left) + Number(this.root.dataset.x0 || 0);
    const gy = Math.floor(e.clientY - rect.top) + Number(this.root.dataset.y0 || 0);
    return tileAt(s.grid, s.zoom, s.padding, gx, gy);
  }

  onMove(e) {
    const t = this.tileFromEvent(e);
    this.root.dataset.hoverTile = String(t);
    if (t < 0) {
      this.tip.style.display = "none";
      return;
    }
    this.tip.textContent = this.opts.describe(t);
    const box = this.scroller.getBoundingClientRect();
    this.tip.style.left = `${e.clientX - box.left + 12}px`;
    this.tip.style.top = `${e.clientY - box.top + 12}px`;
    this.tip.style.display = "block";
  }

  dispose() {
    this.canvas.removeEventListener("mousemove", this._move);
    this.canvas.removeEventListener("mouseleave", this._leave);
    this.canvas.removeEventListener("click", this._click);
    this.scroller.removeEventListener("scroll", this.schedule);
    if (this.ro) this.ro.disconnect();
  }
}
