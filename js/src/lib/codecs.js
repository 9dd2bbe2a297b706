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

const TYPED = {
  uint8: Uint8Array, int8: Int8Array, uint16: Uint16Array, int16: Int16Array,
  uint32: Uint32Array, int32: Int32Array, float32: Float32Array, float64: Float64Array,
};

/**
 * An array trait (cnnwidgets/widgets/_base.py: array_to_json) as {data, dtype, shape}: `data` a
 * typed array of `dtype` over the received bytes (copied only when misaligned). null -> an
 * empty uint8 array of shape [0].
 */
export function decodeArray(v) {
  if (!v || !v.view) return { data: new Uint8Array(0), dtype: "uint8", shape: [0] };
  const T = TYPED[v.dtype];
  if (!T) throw new Error(`cnnwidgets: array dtype ${v.dtype} is not one the page can read`);
  let b = bytesView(v.view);
  if (b.byteOffset % T.BYTES_PER_ELEMENT) b = b.slice();
  return { data: new T(b.buffer, b.byteOffset, Math.floor(b.byteLength / T.BYTES_PER_ELEMENT)), dtype: v.dtype, shape: v.shape || [] };
}
