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

/** A <select> bound to a model trait: options from `choices` ([value, label] pairs); `title`
 *  is its tooltip (one line: what it changes). */
export function boundSelect(model, trait, choices, cls, { title = "" } = {}) {
  const sel = h("select", { class: cls, "data-trait": trait, ...(title ? { title } : {}) });
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

/** A label and its control (a node or a {node} from bound*); `title`, when given, is the
 *  tooltip of both (one line: what the control changes). */
export function labelled(text, control, title = "") {
  const node = control && control.node ? control.node : control;
  if (title && node.setAttribute && !node.getAttribute("title")) node.setAttribute("title", title);
  return h("label", { class: "cnnw-field", ...(title ? { title } : {}) }, [h("span", {}, [text]), node]);
}

/** A labelled group of controls (a <fieldset>, or with `collapsible` a <details> that starts
 *  closed unless `open`). */
export function section(title, children, { collapsible = false, open = false, cls = "" } = {}) {
  if (collapsible) {
    const d = h("details", { class: `cnnw-section ${cls}`.trim() }, [h("summary", {}, [title]), ...children]);
    d.open = open;
    return d;
  }
  return h("fieldset", { class: `cnnw-section ${cls}`.trim() }, [h("legend", {}, [title]), ...children]);
}

// ---- errors in view

function errorSlot(control) {
  // next to the control: inside its labelled field, else beside it (never inside an <input>)
  const field = control.closest(".cnnw-field") || control.closest(".cnnw-stepper") || control.parentElement || control;
  let slot = field.querySelector(":scope > .cnnw-control-error");
  if (!slot) {
    slot = h("span", { class: "cnnw-control-error", role: "alert", "aria-live": "polite" });
    field.append(slot);
  }
  return { field, slot };
}

/** Show (or with "" clear) a message next to `control` that the page found itself (a value
 *  that is not a number); the kernel's refusals come through controlErrors. */
export function showLocalError(control, text) {
  const { field, slot } = errorSlot(control);
  slot.textContent = text;
  slot.hidden = !text;
  field.classList.toggle("cnnw-invalid", !!text);
  if (text) control.setAttribute("aria-invalid", "true");
  else control.removeAttribute("aria-invalid");
}

/** Why the kernel refused a control's value (the `control_errors` trait, by trait name), shown
 *  next to each control with that `data-trait` inside `root`, until its next valid change.
 *  Returns a dispose function. */
export function controlErrors(model, root) {
  const shown = new Set();
  const update = () => {
    const errors = model.get("control_errors") || {};
    for (const trait of new Set([...shown, ...Object.keys(errors)])) {
      const text = errors[trait] ? String(errors[trait]).replace(/^(InvalidValue|InvalidType|TraitError): /, "") : "";
      for (const control of root.querySelectorAll(`[data-trait="${trait}"]`)) showLocalError(control, text);
      if (text) shown.add(trait);
      else shown.delete(trait);
    }
  };
  model.on("change:control_errors", update);
  update();
  return () => model.off("change:control_errors", update);
}

/** The `view_error` line: why the view's background work failed, in the error colour; hidden
 *  while empty. Returns { node, dispose }. */
export function viewError(model) {
  const node = h("div", { class: "cnnw-view-error", role: "alert" });
  const update = () => {
    const text = model.get("view_error") || "";
    node.textContent = text;
    node.hidden = !text;
  };
  model.on("change:view_error", update);
  update();
  return { node, dispose: () => model.off("change:view_error", update) };
}

// ---- keyboard

/** Whether `node` has the keyboard focus, also inside a shadow root (marimo renders each view
 *  in one, where `document.activeElement` is the host element, never the node). */
export function hasFocus(node) {
  return node.getRootNode().activeElement === node;
}

const KEYS = new Set(["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Enter", "Home", "End", "PageUp", "PageDown", " ", "Escape", "a", "b", "c", "d", "m", "y", "z", "x", "v"]);

/** Keys pressed inside the view's controls and focusable canvases stay in the view: JupyterLab
 *  would otherwise take arrows, Enter and single letters as notebook commands (move to the
 *  next cell, run it, ...). Returns a dispose function. */
export function keepKeys(root) {
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  const onKey = (ev) => {
    const t = ev.target;
    const inControl = t instanceof Element && t !== document.body && root.contains(t) &&
      (t.matches("input, select, textarea, button, canvas, [tabindex]") || t.isContentEditable);
    if (inControl && (KEYS.has(ev.key) || t.matches("input, textarea"))) ev.stopPropagation();
  };
  root.addEventListener("keydown", onKey);
  return () => root.removeEventListener("keydown", onKey);
}

/** Whether the page has a kernel behind it: true in Jupyter and marimo, false in an exported
 *  page (whose stand-in model has no widget manager). Whether child widgets can be rendered is
 *  another question: `hasWidgetManager` in lib/children.js. */
export function live(model) {
  return !!(model && model.widget_manager);
}

/** The shell every view starts from: a `.cnnw-root` in `el` with the model note, the error
 *  line, keys kept in the view, control errors shown, and (in an exported page) the
 *  `cnnw-static` class that hides what needs a kernel plus a line saying what the page is.
 *  Returns { root, top, dispose }: `top` holds the note and error lines. */
export function viewShell(model, el, cls) {
  const root = h("div", { class: `cnnw-root ${cls}` });
  const note = modelNote(model);
  const err = viewError(model);
  const sel = h("div", { class: "cnnw-selection-note", role: "status" });
  const syncSel = () => {
    const text = model.get("selection_note") || "";
    sel.textContent = text;
    sel.hidden = !text;
  };
  model.on("change:selection_note", syncSel);
  syncSel();
  const top = h("div", { class: "cnnw-top" }, [note.node, sel, err.node]);
  root.append(top);
  if (!live(model)) {
    root.classList.add("cnnw-static");
    const what = model.get("_export_note");
    if (what) top.append(h("div", { class: "cnnw-static-note", role: "note" }, [what]));
  }
  el.append(root);
  const disposers = [note.dispose, err.dispose, keepKeys(root), controlErrors(model, root),
    () => model.off("change:selection_note", syncSel)];
  return { root, top, dispose: () => disposers.forEach((d) => d()) };
}

export function formatNumber(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "n/a";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(3);
  return v.toFixed(4);
}

/** A number <input> bound to a model trait (integers when `int`). The value is sent on change
 *  and on Enter; the kernel's answer (the value, or an error next to the field) comes back. */
export function boundNumber(model, trait, cls, { int = false, min = null, max = null, step = "any", width = "5em", title = "" } = {}) {
  const attrs = { type: "number", class: cls, step: int ? "1" : step, "data-trait": trait, style: { width } };
  if (title) attrs.title = title;
  if (min !== null) attrs.min = String(min);
  if (max !== null) attrs.max = String(max);
  const input = h("input", attrs);
  const sync = () => {
    input.value = String(model.get(trait));
  };
  const commit = () => {
    const v = Number(input.value);
    if (input.value.trim() === "" || !Number.isFinite(v)) {
      showLocalError(input, `${trait} must be a number, got "${input.value}"`);
      return;
    }
    showLocalError(input, "");
    const value = int ? Math.round(v) : v;
    if (value === model.get(trait)) return sync();
    model.set(trait, value);
    model.save_changes();
  };
  input.addEventListener("change", commit);
  commitOnEnter(input, commit);
  sync();
  model.on(`change:${trait}`, sync);
  return { node: input, dispose: () => model.off(`change:${trait}`, sync) };
}

/** Enter in `input` calls `commit` (and JupyterLab does not see the key: it would run the cell). */
export function commitOnEnter(input, commit) {
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      ev.stopPropagation();
      commit();
    }
  });
}

/** A checkbox bound to a boolean trait. */
export function boundCheck(model, trait, cls, { title = "" } = {}) {
  const input = h("input", { type: "checkbox", class: cls, "data-trait": trait, ...(title ? { title } : {}) });
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
