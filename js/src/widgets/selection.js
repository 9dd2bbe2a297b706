// Selection front end: a one-line summary of the shared state, in the theme's colours.
// Python side: cnnwidgets/widgets/selection.py. Traits read: index, layer, channel, target.
import { bindTraits } from "../lib/bind.js";
import { h, viewShell } from "../lib/dom.js";

function render({ model, el }) {
  const shell = viewShell(model, el, "cnnw-selection");
  const line = h("div", { class: "cnnw-info cnnw-selection-line", role: "status",
    title: "what the linked views show: set by a click in any of them" });
  shell.root.append(line);
  const update = () => {
    const ch = model.get("channel");
    const tg = model.get("target");
    const target = tg >= 0 ? tg : tg === -2 ? "true label" : "predicted";
    line.textContent =
      `selection · image ${model.get("index")} · layer ${model.get("layer") || "none"}` +
      ` · channel ${ch >= 0 ? ch : "none"} · target ${target}`;
  };
  const unbind = bindTraits(model, { "index layer channel target": update });
  return () => {
    unbind();
    shell.dispose();
  };
}

export default { render };
