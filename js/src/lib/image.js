// Raw uint8 images (H x W x C, C = 1 or 3) on canvases, and map overlays.
// blendOverlay must match cnnwidgets/widgets/activation_explorer.py:blend_overlay and
// attributionOverlay cnnwidgets/widgets/saliency_viewer.py:attribution_overlay exactly.

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
 * The loop both overlays share: an h x w map of codes over an H x W x C image, upsampled by
 * nearest neighbour (map row floor(iy * h / H)), each pixel a scale x scale block;
 * `pixel(d, o, image, s, code)` writes the RGB of output offset `o` from image offset `s`.
 */
function mapOverImage(canvas, image, H, W, C, codes, h, w, scale, pixel) {
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
      const o = (y * OW + x) * 4;
      pixel(d, o, image, (iy * W + ix) * C, codes[my * w + mx]);
      d[o + 3] = 255;
    }
  }
  ctx.putImageData(out, 0, 0);
  return canvas;
}

/**
 * Image (H x W x C) with an h x w map of codes drawn over it through `lut`, at `opacity`
 * (ActivationExplorer's overlay); integer blending.
 */
export function blendOverlay(canvas, image, H, W, C, codes, h, w, lut, opacity, scale = 1) {
  const a = Math.floor(opacity * 255 + 0.5);
  return mapOverImage(canvas, image, H, W, C, codes, h, w, scale, (d, o, img, s, code) => {
    const k = code * 3;
    for (let ch = 0; ch < 3; ch++) {
      const v = C === 1 ? img[s] : img[s + ch];
      d[o + ch] = Math.floor((v * (255 - a) + lut[k + ch] * a + 127) / 255);
    }
  });
}

/** Brightness of the brightest pixel of an image under an attribution map (saliency_viewer.py:
 *  BASE_LEVEL): dimmed gray, so white ink never looks like the top of the colour scale. */
export const BASE_LEVEL = 128;
const MAX_CODE = 254, MID_CODE = 127, NONFINITE_CODE = 255;

/**
 * An attribution map over its image (SaliencyViewer): the image as dimmed gray, each pixel of
 * the map covering it in proportion to its value (at most `opacity`; for a `signed` map, to
 * its distance from the middle code). Must match attribution_overlay() in
 * cnnwidgets/widgets/saliency_viewer.py exactly (integer arithmetic).
 */
export function attributionOverlay(canvas, image, H, W, C, codes, h, w, lut, opacity, signed, scale = 1) {
  const a = Math.floor(opacity * 255 + 0.5);
  return mapOverImage(canvas, image, H, W, C, codes, h, w, scale, (d, o, img, s, code) => {
    const k = code * 3;
    const gray = C === 1 ? img[s] : (77 * img[s] + 150 * img[s + 1] + 29 * img[s + 2] + 128) >> 8;
    const base = Math.floor((gray * BASE_LEVEL + 127) / 255);
    const cover = code === NONFINITE_CODE ? a
      : signed ? Math.floor((a * Math.abs(code - MID_CODE) + (MID_CODE >> 1)) / MID_CODE)
        : Math.floor((a * code + (MAX_CODE >> 1)) / MAX_CODE);
    for (let ch = 0; ch < 3; ch++) d[o + ch] = Math.floor((base * (255 - cover) + lut[k + ch] * cover + 127) / 255);
  });
}

/** Integer scale so that the larger side is about `target` pixels. */
export function fitScale(h, w, target) {
  return Math.max(1, Math.floor(target / Math.max(h, w, 1)));
}
