// One stylesheet for all cnnwidgets views, injected once per document.
const CSS = `
.cnnw-root { font: 12px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; }
.cnnw-toolbar { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: center; margin-bottom: 6px; }
.cnnw-field { display: inline-flex; gap: 4px; align-items: center; }
.cnnw-field select, .cnnw-field input { font: inherit; }
.cnnw-info { color: #555; margin: 2px 0 4px; }
.cnnw-scroll { position: relative; overflow: auto; scroll-behavior: auto; width: fit-content; border: 1px solid #ddd; background: #fff; max-width: 100%; }
.cnnw-spacer { position: relative; }
.cnnw-scroll canvas { position: absolute; image-rendering: pixelated; display: block; }
.cnnw-tip { position: absolute; pointer-events: none; background: rgba(20,20,20,.88); color: #fff;
  padding: 3px 6px; border-radius: 3px; white-space: nowrap; z-index: 10; display: none; }
`;

export function ensureStyle() {
  if (typeof document === "undefined" || document.getElementById("cnnw-style")) return;
  const s = document.createElement("style");
  s.id = "cnnw-style";
  s.textContent = CSS;
  document.head.append(s);
}

const CSS_EXPLORER = `
.cnnw-panels { display: flex; flex-wrap: wrap; gap: 14px; margin: 6px 0; align-items: flex-start; }
.cnnw-panel { display: flex; flex-direction: column; gap: 3px; }
.cnnw-panel canvas { image-rendering: pixelated; border: 1px solid #ddd; align-self: flex-start; }
.cnnw-caption { color: #444; max-width: 260px; }
.cnnw-wrong { color: #b00020; font-weight: 600; }
.cnnw-progress { width: 160px; height: 8px; }
.cnnw-thumbs { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 4px; }
.cnnw-thumb { display: flex; flex-direction: column; align-items: center; cursor: pointer; font-size: 11px; }
.cnnw-thumb canvas { image-rendering: pixelated; border: 1px solid #ccc; }
.cnnw-root button { font: inherit; padding: 1px 8px; }
.cnnw-model-note { margin: 0 0 6px; padding: 3px 8px; border-left: 3px solid #c58a00; background: rgba(197, 138, 0, 0.10); }
.cnnw-static-chart { font-size: 11px; background: #fff; }
.cnnw-static-chart text { fill: #444; }
.cnnw-static-chart .cnnw-chart-title { font-size: 13px; fill: #222; }
.cnnw-static-chart .cnnw-grid { stroke: #eee; }
.cnnw-static-chart .cnnw-axis { stroke: #888; }
.cnnw-static-chart .cnnw-bar { fill: #4c78a8; opacity: .8; }
.cnnw-static-chart .cnnw-bar-target { fill: #f58518; opacity: 1; }
.cnnw-static-chart .cnnw-bar-predicted { font-weight: 700; fill: #222; }
.cnnw-static-chart .cnnw-line { fill: none; stroke: #4c78a8; stroke-width: 1.5; }
`;

export function ensureExplorerStyle() {
  ensureStyle();
  if (document.getElementById("cnnw-style-explorer")) return;
  const s = document.createElement("style");
  s.id = "cnnw-style-explorer";
  s.textContent = CSS_EXPLORER;
  document.head.append(s);
}
