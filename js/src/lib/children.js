// Child widgets (e.g. a bqplot Figure) rendered inside an anywidget view.
// The trait holds "IPY_MODEL_<id>" (ipywidgets' widget_serialization).

/** True when the page's widget manager can render child widgets: JupyterLab's and Notebook's
 *  can (`create_view`); marimo's can only look models up (`get_model`), and an exported HTML
 *  page has none. Where it cannot, the views draw their charts themselves (lib/charts.js). */
export function hasWidgetManager(model) {
  return typeof model?.widget_manager?.create_view === "function";
}

export async function mountChild(model, trait, container) {
  const ref = model.get(trait);
  if (!ref || typeof ref !== "string" || !hasWidgetManager(model)) return null;
  const child = await model.widget_manager.get_model(ref.slice("IPY_MODEL_".length));
  const view = await model.widget_manager.create_view(child);
  container.replaceChildren(view.el);
  // views that lay themselves out once shown (bqplot's Figure) wait for this event
  if (view.trigger) view.trigger("displayed", view);
  return view;
}
