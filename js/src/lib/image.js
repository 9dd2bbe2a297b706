// Raw uint8 images (H x W x C, C = 1 or 3) on canvases, and map overlays.
// blendOverlay must match cnnwidgets/widgets/activation_explorer.py:blend_overlay exactly.

/** Draw an H x W x C uint8 image into `canvas`, each pixel as a scale x scale block. */
export function drawImage(canvas, bytes, h, w, c, scale = 1) {
  canvas.width = w * scale;
  canvas.height = h * scale;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const img = ctx.createImageData(w * scale, h * scale);
  const d = img.data;
  const W = w * scale;
  for (let y = 0; y < h * scale; y++) {
    const sy = Math.floor(y / scale);
    for (let x = 0; x < W; x++) {
      const sx = Math.floor(x / scale);
      const s = (sy * w + sx) * c;
      const o = (y * W + x) * 4;
      if (c === 1) {
        d[o] = d[o + 1] = d[o + 2] = bytes[s];
      } else {
        d[o] = bytes[s];
        d[o + 1] = bytes[s + 1];
        d[o + 2] = bytes[s + 2];
      }
      d[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

/**
 * Image (H x W x C) with an h x w map of codes drawn over it through `lut`, at `opacity`,
 * upsampled by nearest neighbour (source row floor(y * h / H)); integer blending.
 */
export function blendOverlay(canvas, image, H, W, C, codes, h, w, lut, opacity, scale = 1) {
  const a = Math.floor(opacity * 255 + 0.5);
  canvas.width = W * scale;
  canvas.height = H * scale;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const out = ctx.createImageData(W * scale, H * scale);
  const d = out.data;
  const OW = W * scale;
  for (let y = 0; y < H * scale; y++) {
    const iy = Math.floor(y / scale);
    const my = Math.floor((iy * h) / H);
    for (let x = 0; x < OW; x++) {
      const ix = Math.floor(x / scale);
      const mx = Math.floor((ix * w) / W);
      const k = codes[my * w + mx] * 3;
      const s = (iy * W + ix) * C;
      const o = (y * OW + x) * 4;
      for (let ch = 0; ch < 3; ch++) {
        const v = C === 1 ? image[s] : image[s + ch];
        d[o + ch] = Math.floor((v * (255 - a) + lut[k + ch] * a + 127) / 255);
      }
      d[o + 3] = 255;
    }
  }
  ctx.putImageData(out, 0, 0);
  return canvas;
}

/** Integer scale so that the larger side is about `target` pixels. */
export function fitScale(h, w, target) {
  return Math.max(1, Math.floor(target / Math.max(h, w, 1)));
}
