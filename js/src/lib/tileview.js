// A scrollable grid of tiles drawn on a canvas that covers only the visible part: the cost of
// a frame is the viewport's size, whatever the number of tiles. Used by FilterGrid and
// ActivationExplorer. The root element gets data-frame (frames drawn), data-x0/data-y0
// (grid pixel at the canvas's top-left) and data-hover-tile, for tests and tools.
//
// Theme: the gaps between tiles are the theme's sunken background (lib/theme.js), redrawn when
// the theme changes; the highlight is two rings (dark outside, light inside) so it shows on any
// tile colour. Keyboard: the canvas takes focus (Tab); the arrow keys move a cursor tile,
// Enter (or Space) selects it (opts.onClick), Home/End jump to the first/last tile; the cursor
// is kept in view. data-cursor-tile says where it is.
import { gridSize, renderTiles, tileAt, tileOrigin } from "./tiles.js";
import { h, hasFocus } from "./dom.js";
import { onThemeChange, rgbOf, themeColors } from "./theme.js";


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
    this.cursor = -1;
    this.background = null;
    this.scroller = h("div", { class: "cnnw-scroll" });
    this.spacer = h("div", { class: "cnnw-spacer" });
    this.canvas = h("canvas", { class: opts.canvasClass || "cnnw-canvas", tabindex: "0", role: "grid",
      "aria-label": opts.label || "tiles: arrow keys move, Enter selects" });
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
    this._key = (e) => this.onKey(e);
    this._blur = (e) => {
      // the keyboard cursor's tooltip goes with the focus
      if (e && e.type === "blur") this.tip.style.display = "none";
      this.schedule();
    };
    this.canvas.addEventListener("mousemove", this._move);
    this.canvas.addEventListener("mouseleave", this._leave);
    this.canvas.addEventListener("click", this._click);
    this.canvas.addEventListener("keydown", this._key);
    this.canvas.addEventListener("focus", this._blur);
    this.canvas.addEventListener("blur", this._blur);
    this.offTheme = onThemeChange(() => {
      this.background = null;
      this.schedule();
    });
    this.scroller.addEventListener("scroll", this.schedule, { passive: true });
    this.ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(this.schedule) : null;
    if (this.ro) this.ro.observe(this.scroller);
  }

  /** state: { codes, lut, grid, zoom, padding, order? } */
  set(state) {
    const before = this.state && this.state.grid;
    // a new grid (another layer): the tooltip of the old one goes, the cursor starts over
    if (before && state.grid && (before.label !== state.grid.label || before.n_tiles !== state.grid.n_tiles)) {
      this._leave();
      this.cursor = -1;
    }
    this.state = state;
    this.schedule();
  }

  /** The theme's colour for the gaps between tiles, as [r, g, b] (the grid's background). */
  backgroundRGB() {
    if (!this.background) this.background = rgbOf(themeColors(this.root).bgSunken) || [255, 255, 255];
    return this.background;
  }

  /** Scroll so that tile t is in view (the selected filter after a layer change or a click
   *  in another view). */
  reveal(t) {
    const s = this.state;
    if (!s || !s.grid || t < 0 || t >= s.grid.n_tiles) return;
    const o = tileOrigin(s.grid, s.zoom, s.padding, t);
    const tw = s.grid.tile_w * s.zoom, th = s.grid.tile_h * s.zoom;
    const sc = this.scroller;
    if (o.x < sc.scrollLeft || o.x + tw > sc.scrollLeft + sc.clientWidth) sc.scrollLeft = Math.max(0, o.x - sc.clientWidth / 3);
    if (o.y < sc.scrollTop || o.y + th > sc.scrollTop + sc.clientHeight) sc.scrollTop = Math.max(0, o.y - sc.clientHeight / 3);
    this.schedule();
  }

  onKey(e) {
    const s = this.state;
    if (!s || !s.grid || !s.grid.n_tiles) return;
    const n = s.grid.n_tiles, cols = s.grid.columns;
    const start = this.cursor >= 0 ? this.cursor : (this.highlight.find((t) => t >= 0) ?? 0);
    let t = start;
    if (e.key === "ArrowRight") t = Math.min(n - 1, start + 1);
    else if (e.key === "ArrowLeft") t = Math.max(0, start - 1);
    else if (e.key === "ArrowDown") t = Math.min(n - 1, start + cols);
    else if (e.key === "ArrowUp") t = start - cols >= 0 ? start - cols : start;
    else if (e.key === "Home") t = 0;
    else if (e.key === "End") t = n - 1;
    else if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      e.stopPropagation();
      if (this.opts.onClick) this.opts.onClick(start);
      return;
    } else return;
    e.preventDefault();
    e.stopPropagation();
    this.cursor = t;
    this.root.dataset.cursorTile = String(t);
    this.reveal(t);
    // the tooltip says what the cursor is on, next to it
    const o = tileOrigin(s.grid, s.zoom, s.padding, t);
    this.tip.textContent = this.opts.describe(t);
    this.tip.style.display = "block";
    // beside the tile, kept inside the scroll area (left of the tile near the right edge)
    const right = o.x - this.scroller.scrollLeft + s.grid.tile_w * s.zoom + 6;
    const left = Math.max(0, o.x - this.scroller.scrollLeft - this.tip.offsetWidth - 6);
    this.tip.style.left = `${right + this.tip.offsetWidth <= this.scroller.clientWidth ? right : left}px`;
    this.tip.style.top = `${o.y - this.scroller.scrollTop + 4}px`;
    if (this.opts.onCursor) this.opts.onCursor(t);
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
    renderTiles(img, { ...s, x0, y0, background: this.backgroundRGB() });
    this.ctx.putImageData(img, 0, 0);
    this.drawHighlight(x0, y0, vw, vh);
    this.frames += 1;
    this.root.dataset.frame = String(this.frames);
    this.root.dataset.x0 = String(x0);
    this.root.dataset.y0 = String(y0);
    // the gap colour, for tests that render the same grid in Python (render_grid(background=))
    this.root.dataset.background = this.backgroundRGB().join(",");
  }

  drawHighlight(x0, y0, vw, vh) {
    const s = this.state;
    const c = this.octx;
    c.clearRect(0, 0, vw, vh);
    const tw = s.grid.tile_w * s.zoom;
    const th = s.grid.tile_h * s.zoom;
    const ring = (t, colour) => {
      if (t < 0 || t >= s.grid.n_tiles) return;
      const o = tileOrigin(s.grid, s.zoom, s.padding, t);
      if (o.x + tw < x0 || o.y + th < y0 || o.x > x0 + vw || o.y > y0 + vh) return;
      // dark outer ring, bright inner ring: visible on white, black and saturated tiles
      c.lineWidth = 2;
      c.strokeStyle = "rgba(0,0,0,0.9)";
      c.strokeRect(o.x - x0 + 1, o.y - y0 + 1, tw - 2, th - 2);
      if (tw > 6 && th > 6) {
        c.strokeStyle = colour;
        c.strokeRect(o.x - x0 + 3, o.y - y0 + 3, tw - 6, th - 6);
      }
    };
    for (const t of this.highlight) ring(t, "#ffb000");
    if (this.cursor >= 0 && hasFocus(this.canvas)) {
      c.setLineDash([3, 2]);
      ring(this.cursor, "#ffffff");
      c.setLineDash([]);
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
    this.canvas.removeEventListener("keydown", this._key);
    this.canvas.removeEventListener("focus", this._blur);
    this.canvas.removeEventListener("blur", this._blur);
    this.offTheme();
    this.scroller.removeEventListener("scroll", this.schedule);
    if (this.ro) this.ro.disconnect();
  }
}
