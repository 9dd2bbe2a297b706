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
