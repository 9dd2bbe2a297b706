// The image picker of every view that shows one image at a time: previous/next buttons, a number
// field (Enter commits) and a slider over the images, fine enough for thousands of them (the
// buttons and arrow keys step one image; PageUp/PageDown a tenth of the set).
import { commitOnEnter, h, showLocalError } from "./dom.js";

/**
 * Bound to the integer trait `trait` (default "index"). `values()` returns the image indices the
 * picker may visit (all of 0..n-1, or an exported page's images), sorted. Returns
 * { node, update, dispose }: call `update()` when the set of images changes.
 */
export function imageStepper(model, { trait = "index", values, label = "image", title = "" } = {}) {
  const prev = h("button", { class: "cnnw-prev", title: `previous ${label}`, "aria-label": `previous ${label}` }, ["‹"]);
  const next = h("button", { class: "cnnw-next", title: `next ${label}`, "aria-label": `next ${label}` }, ["›"]);
  const number = h("input", { type: "number", class: "cnnw-index-number", step: "1", "data-trait": trait,
    style: { width: "6em" }, title: title || `${label} number: type one and press Enter`, "aria-label": `${label} number` });
  const slider = h("input", { type: "range", class: "cnnw-index", min: "0", step: "1", "aria-label": `${label} slider`,
    title: title || `drag, or focus and use the arrow keys, to change the ${label}` });
  const of = h("span", { class: "cnnw-of" });
  const node = h("span", { class: "cnnw-stepper", role: "group", "aria-label": `${label} picker` },
    [h("span", {}, [label]), prev, number, next, slider, of]);

  let list = [];
  const current = () => model.get(trait);
  const go = (v) => {
    if (v === current()) return update();
    model.set(trait, v);
    model.save_changes();
  };
  const pos = () => {
    const i = list.indexOf(current());
    if (i >= 0) return i;
    // the index is not one of the list (an exported page's Selection): the nearest one
    let best = 0;
    list.forEach((v, k) => { if (Math.abs(v - current()) < Math.abs(list[best] - current())) best = k; });
    return best;
  };

  function update() {
    list = values();
    const n = list.length;
    const contiguous = n > 0 && list[n - 1] - list[0] === n - 1;
    slider.max = String(Math.max(0, n - 1));
    slider.value = String(pos());
    number.value = String(current());
    if (contiguous) {
      number.min = String(list[0]);
      number.max = String(list[n - 1]);
    }
    of.textContent = n ? (contiguous ? `of ${list[0]}–${list[n - 1]}` : `(${pos() + 1} of ${n} exported)`) : "no images";
    prev.disabled = n === 0 || pos() === 0;
    next.disabled = n === 0 || pos() >= n - 1;
    slider.disabled = n <= 1;
  }

  prev.addEventListener("click", () => list.length && go(list[Math.max(0, pos() - 1)]));
  next.addEventListener("click", () => list.length && go(list[Math.min(list.length - 1, pos() + 1)]));
  slider.addEventListener("input", () => list.length && go(list[Number(slider.value)]));
  const commit = () => {
    const v = Number(number.value);
    if (!Number.isInteger(v) || !list.includes(v)) {
      const n = list.length;
      const contiguous = n > 0 && list[n - 1] - list[0] === n - 1;
      showLocalError(number, n === 0 ? "there are no images"
        : contiguous ? `${label} must be a whole number in ${list[0]}..${list[n - 1]}, got "${number.value}"`
          : `this page holds ${label}s ${list.slice(0, 12).join(", ")}${n > 12 ? ", ..." : ""}; got "${number.value}"`);
      return;
    }
    showLocalError(number, "");
    go(v);
  };
  number.addEventListener("change", commit);
  commitOnEnter(number, commit);
  model.on(`change:${trait}`, update);
  update();
  return { node, update, dispose: () => model.off(`change:${trait}`, update) };
}
