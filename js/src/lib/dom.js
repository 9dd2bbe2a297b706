// Small DOM helpers for widget toolbars (no framework).

export function h(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") Object.assign(node.style, v);
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of [].concat(children)) node.append(c);
  return node;
}

/** A <select> bound to a model trait: options from `choices` ([value, label] pairs). */
export function boundSelect(model, trait, choices, cls) {
  const sel = h("select", { class: cls, "data-trait": trait });
  const fill = (items) => {
    sel.replaceChildren(...items.map(([v, label]) => h("option", { value: v }, [label])));
    sel.value = model.get(trait);
  };
  fill(choices);
  sel.addEventListener("change", () => {
    model.set(trait, sel.value);
    model.save_changes();
  });
  const sync = () => {
    sel.value = model.get(trait);
  };
  model.on(`change:${trait}`, sync);
  return { node: sel, fill, dispose: () => model.off(`change:${trait}`, sync) };
}

export function labelled(text, control) {
  return h("label", { class: "cnnw-field" }, [h("span", {}, [text]), control]);
}

export function formatNumber(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "n/a";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(3);
  return v.toFixed(4);
}

/** A number <input> bound to a model trait (integers when `int`). */
export function boundNumber(model, trait, cls, { int = false, min = null, max = null, step = "any", width = "5em" } = {}) {
  const attrs = { type: "number", class: cls, step: int ? "1" : step, "data-trait": trait, style: { width } };
  if (min !== null) attrs.min = String(min);
  if (max !== null) attrs.max = String(max);
  const input = h("input", attrs);
  const sync = () => {
    input.value = String(model.get(trait));
  };
  input.addEventListener("change", () => {
    const v = Number(input.value);
    if (!Number.isFinite(v)) return sync();
    model.set(trait, int ? Math.round(v) : v);
    model.save_changes();
  });
  sync();
  model.on(`change:${trait}`, sync);
  return { node: input, dispose: () => model.off(`change:${trait}`, sync) };
}

/** A checkbox bound to a boolean trait. */
export function boundCheck(model, trait, cls) {
  const input = h("input", { type: "checkbox", class: cls, "data-trait": trait });
  const sync = () => {
    input.checked = !!model.get(trait);
  };
  input.addEventListener("change", () => {
    model.set(trait, input.checked);
    model.save_changes();
  });
  sync();
  model.on(`change:${trait}`, sync);
  return { node: input, dispose: () => model.off(`change:${trait}`, sync) };
}

/** The `model_note` line: why a view works on the user's model itself (no private view of it).
 *  Hidden while the note is empty. Returns { node, dispose }. */
export function modelNote(model) {
  const node = h("div", { class: "cnnw-model-note", role: "note" });
  const update = () => {
    const text = model.get("model_note") || "";
    node.textContent = text;
    node.style.display = text ? "" : "none";
  };
  model.on("change:model_note", update);
  update();
  return { node, dispose: () => model.off("change:model_note", update) };
}
