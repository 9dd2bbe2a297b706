// Binary codecs: traits of type Bytes arrive as DataView (or ArrayBuffer) buffers.
// Mirrors cnnwidgets/widgets/*.py, which send numpy arrays with .tobytes().

/** Uint8Array over a DataView/ArrayBuffer/typed array without copying. */
export function bytesView(v) {
  if (!v) return new Uint8Array(0);
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  return new Uint8Array(0);
}

/** Float32Array over the same bytes (copied only when the offset is not 4-byte aligned). */
export function float32View(v) {
  const b = bytesView(v);
  if (b.byteOffset % 4 === 0) return new Float32Array(b.buffer, b.byteOffset, Math.floor(b.byteLength / 4));
  return new Float32Array(b.slice().buffer);
}
