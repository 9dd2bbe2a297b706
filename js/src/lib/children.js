// Child widgets (e.g. a bqplot Figure) rendered inside an anywidget view.
// The trait holds "IPY_MODEL_<id>" (ipywidgets' widget_serialization).

/** True when a widget manager can render child widgets (false in an exported HTML page). */
export function hasWidgetManager(model) {
  return !!(model && model.widget_manager);
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
