// Selection front end: a one-line summary. Python side: cnnwidgets/widgets/selection.py
import { h } from "../lib/dom.js";

function render({ model, el }) {
  const root = h("div", { class: "cnnw-root cnnw-selection" });
  el.append(root);
  const update = () => {
    const ch = model.get("channel");
    const tg = model.get("target");
    root.textContent =
      `selection · image ${model.get("index")} · layer ${model.get("layer") || "none"}` +
      ` · channel ${ch >= 0 ? ch : "none"} · target ${tg >= 0 ? tg : "predicted"}`;
  };
  update();
  model.on("change", update);
  return () => model.off("change", update);
}

export default { render };
