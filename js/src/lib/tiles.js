// Tile-grid geometry and rasterization, shared by every widget that shows a grid of small
// images. Must match cnnwidgets/core/filters.py:render_grid pixel for pixel:
// tile t at row t // columns, column t % columns; each tile zoom x its size; `padding`
// pixels between tiles; no outer border; codes coloured through a 256 x 3 LUT.

export const NONFINITE_CODE = 255;

/** Pixel size of the whole grid and of one cell (tile + padding). */
export function gridSize(grid, zoom, padding) {
  const cellW = grid.tile_w * zoom + padding;
  const cellH = grid.tile_h * zoom + padding;
  return {
    width: Math.max(0, grid.columns * cellW - padding),
    height: Math.max(0, grid.rows * cellH - padding),
    cellW,
    cellH,
  };
}

/** Index of the tile under grid pixel (x, y), or -1 over padding / outside. */
export function tileAt(grid, zoom, padding, x, y) {
  const { cellW, cellH } = gridSize(grid, zoom, padding);
  if (x < 0 || y < 0) return -1;
  const c = Math.floor(x / cellW);
  const r = Math.floor(y / cellH);
  if (c >= grid.columns || r >= grid.rows) return -1;
  if (x - c * cellW >= grid.tile_w * zoom || y - r * cellH >= grid.tile_h * zoom) return -1;
  const t = r * grid.columns + c;
  return t < grid.n_tiles ? t : -1;
}

/** Top-left grid pixel of tile t. */
export function tileOrigin(grid, zoom, padding, t) {
  const { cellW, cellH } = gridSize(grid, zoom, padding);
  return { x: (t % grid.columns) * cellW, y: Math.floor(t / grid.columns) * cellH };
}

/**
 * Rasterize the part of the grid whose top-left grid pixel is (x0, y0) into `image`
 * (an ImageData). Only visible pixels are touched, so the cost is the viewport's size,
 * not the number of tiles. With `order`, grid cell t shows tile order[t].
 */
export function renderTiles(image, { codes, lut, grid, zoom, padding, x0, y0, background, order = null }) {
  const W = image.width;
  const H = image.height;
  const data = image.data;
  const { tile_w: tw, tile_h: th, columns: cols, rows, n_tiles: n, rgb } = grid;
  const cellW = tw * zoom + padding;
  const cellH = th * zoom + padding;
  const [bgR, bgG, bgB] = background;
  const colTile = new Int32Array(W);
  const colPx = new Int32Array(W);
  for (let x = 0; x < W; x++) {
    const gx = x + x0;
    const c = Math.floor(gx / cellW);
    const ox = gx - c * cellW;
    if (gx < 0 || c >= cols || ox >= tw * zoom) colTile[x] = -1;
    else {
      colTile[x] = c;
      colPx[x] = Math.floor(ox / zoom);
    }
  }
  const nan = NONFINITE_CODE * 3;
  for (let y = 0; y < H; y++) {
    const gy = y + y0;
    const r = Math.floor(gy / cellH);
    const oy = gy - r * cellH;
    const rowOk = gy >= 0 && r < rows && oy < th * zoom;
    const py = Math.floor(oy / zoom);
    let idx = y * W * 4;
    for (let x = 0; x < W; x++, idx += 4) {
      const c = colTile[x];
      const cell = r * cols + c;
      if (!rowOk || c < 0 || cell >= n) {
        data[idx] = bgR;
        data[idx + 1] = bgG;
        data[idx + 2] = bgB;
        data[idx + 3] = 255;
        continue;
      }
      const t = order ? order[cell] : cell;
      if (!rgb) {
        const k = codes[(t * th + py) * tw + colPx[x]] * 3;
        data[idx] = lut[k];
        data[idx + 1] = lut[k + 1];
        data[idx + 2] = lut[k + 2];
      } else {
        const p = ((t * th + py) * tw + colPx[x]) * 3;
        const cr = codes[p];
        const cg = codes[p + 1];
        const cb = codes[p + 2];
        if (cr === NONFINITE_CODE || cg === NONFINITE_CODE || cb === NONFINITE_CODE) {
          data[idx] = lut[nan];
          data[idx + 1] = lut[nan + 1];
          data[idx + 2] = lut[nan + 2];
        } else {
          data[idx] = lut[cr * 3];
          data[idx + 1] = lut[cg * 3 + 1];
          data[idx + 2] = lut[cb * 3 + 2];
        }
      }
      data[idx + 3] = 255;
    }
  }
  return image;
}
