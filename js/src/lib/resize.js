// Width-following layout: canvases and charts fill their container and follow its width.

/**
 * Call `cb(width)` with `node`'s content width now and whenever it changes (ResizeObserver),
 * at most once per animation frame. Returns a dispose function.
 */
export function observeWidth(node, cb) {
  let last = -1, frame = 0;
  const fire = () => {
    frame = 0;
    const w = Math.floor(node.clientWidth);
    if (w > 0 && w !== last) {
      last = w;
      cb(w);
    }
  };
  if (typeof ResizeObserver === "undefined") {
    fire();
    return () => {};
  }
  const obs = new ResizeObserver(() => {
    if (!frame) frame = requestAnimationFrame(fire);
  });
  obs.observe(node);
  requestAnimationFrame(fire);
  return () => {
    obs.disconnect();
    if (frame) cancelAnimationFrame(frame);
  };
}
