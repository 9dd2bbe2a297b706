"""Standalone HTML export: views that stay interactive with no kernel and no network.

The page inlines each view's bundled front-end module and its state (binary traits as base64,
which only the file on disk holds; the live widgets send raw binary buffers). A small stand-in
for the widget model answers ``get``/``set``/``on``; a view whose state was precomputed for
several images (``frames``) switches between them when its ``index`` changes.

Child widgets (the bqplot charts) need a live widget manager and are left out; the views draw
SVG stand-ins from their own synced state instead (SaliencyViewer's ``_probs``, OIPOptimizer's
``_curve``), as they do in marimo, whose pages cannot render child widgets either.
"""

from __future__ import annotations

import base64
import html
import json
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

from ._base import bundle, bundle_css

__all__ = ["export_html", "widget_state"]

#: Traits that describe the widget plumbing, not its state.
_SKIP = {
    "_esm", "_css", "_anywidget_id", "_model_module", "_model_module_version", "_model_name",
    "_view_module", "_view_module_version", "_view_name", "_view_count", "_dom_classes",
    "layout", "tabbable", "tooltip", "comm", "keys", "log",
}


def _encode(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, str) and value.startswith("IPY_MODEL_"):
        return None  # child widgets (e.g. bqplot charts) need a live widget manager
    return value


def widget_state(widget: Any, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """The synced state of ``widget`` as JSON-ready data (bytes as ``{"$b64": ...}``)."""
    state = widget.get_state()
    names = [k for k in state if k not in _SKIP] if keys is None else list(keys)
    return {k: _encode(state[k]) for k in names}


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; img-src data: blob:">
<style>body {{ font: 13px system-ui, sans-serif; margin: 16px; }} .cnnw-export-view {{ margin-bottom: 28px; }}</style>
<style>{css}</style>
</head><body>
<h3>{title}</h3>
<p style="color:#555">Exported from cnnwidgets: interactive without a kernel (hover, zoom, the exported images).</p>
{divs}
<script type="application/json" id="cnnw-data">{data}</script>
<script type="module">
const data = JSON.parse(document.getElementById("cnnw-data").textContent);
const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const decode = (v) => {{
  if (v && typeof v === "object" && !Array.isArray(v)) {{
    if ("$b64" in v) {{ const b = bytes(v["$b64"]); return new DataView(b.buffer); }}
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, decode(x)]));
  }}
  return Array.isArray(v) ? v.map(decode) : v;
}};
function makeModel(spec) {{
  const state = decode(spec.state);
  const frames = spec.frames ? decode(spec.frames) : {{}};
  const listeners = new Map();
  const emit = (ev) => (listeners.get(ev) || []).slice().forEach((cb) => cb());
  const model = {{
    get: (k) => state[k],
    set(k, v) {{
      state[k] = v;
      const extra = k === "index" && frames[String(v)] ? frames[String(v)] : null;
      if (extra) for (const [fk, fv] of Object.entries(extra)) state[fk] = fv;
      emit(`change:${{k}}`);
      if (extra) for (const fk of Object.keys(extra)) emit(`change:${{fk}}`);
      emit("change");
    }},
    save_changes() {{}},
    send() {{}},
    on(ev, cb) {{ for (const e of ev.split(" ")) {{ if (!listeners.has(e)) listeners.set(e, []); listeners.get(e).push(cb); }} }},
    off(ev, cb) {{ for (const e of (ev || "").split(" ")) listeners.set(e, (listeners.get(e) || []).filter((f) => f !== cb)); }},
    widget_manager: null,
  }};
  return model;
}}
const modules = {{}};
for (const [name, src] of Object.entries(data.modules)) {{
  const text = new TextDecoder().decode(bytes(src));
  modules[name] = await import(URL.createObjectURL(new Blob([text], {{ type: "text/javascript" }})));
}}
data.views.forEach((spec, i) => {{
  const el = document.getElementById(`cnnw-view-${{i}}`);
  modules[spec.bundle].default.render({{ model: makeModel(spec), el }});
}});
document.body.dataset.ready = "true";
</script>
</body></html>
"""


def _export_note(view: Any, images: list[int]) -> str:
    """The line an exported view shows: that it is a static copy, and of what."""
    what = type(view).__name__
    if not images:
        held = ""
    elif len(images) == 1:
        held = f" of image {images[0]}"
    else:
        held = f" of {len(images)} images ({', '.join(map(str, images[:8]))}{', ...' if len(images) > 8 else ''})"
    return (f"Static copy{held}, exported from {what}: hover and the image picker work; what needs "
            "the model (other images, layers, methods, runs) is left out. Open the notebook to explore further.")


def export_html(
    views: Sequence[Any],
    path: str | pathlib.Path,
    *,
    title: str = "cnnwidgets",
    frames: Sequence[dict[int, dict[str, Any]] | None] | None = None,
    grid: bool = False,
) -> pathlib.Path:
    """Write ``views`` (cnnwidgets widgets) into one self-contained HTML file.

    Parameters
    ----------
    views : sequence of widgets
        Each needs a ``_bundle`` name (every cnnwidgets view has one).
    path : str or Path
    title : str
    frames : sequence of dict, optional
        Per view, ``{index: {trait: value}}`` states shown when the page selects that image.
    grid : bool
        Lay the views out in the Explorer's grid, which reflows with the page's width (two
        columns on a wide window, one on a narrow one), instead of one below the other.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    modules = {}
    specs = []
    for i, v in enumerate(views):
        name = v._bundle
        if name not in modules:
            modules[name] = base64.b64encode(bundle(name).read_bytes()).decode("ascii")
        spec = {"bundle": name, "state": widget_state(v)}
        fr = frames[i] if frames is not None else None
        if fr:
            spec["frames"] = {str(k): _encode(val) for k, val in fr.items()}
        # what the page holds: its image stepper visits these and no others; the view says so
        # a map of many images (TSNEScatter) shows them all: it names none
        per_image = getattr(v, "_export_per_image", True) and getattr(v, "index", -1) >= 0
        shown = sorted(int(k) for k in fr) if fr else ([int(v.index)] if per_image else [])
        spec["state"]["_export_images"] = shown
        spec["state"]["_export_note"] = _export_note(v, shown)
        specs.append(spec)
    divs = "\n".join(f'<div class="cnnw-export-view" id="cnnw-view-{i}"></div>' for i in range(len(views)))
    if grid:
        divs = f'<div class="cnnw-explorer-grid">\n{divs}\n</div>'

    data = json.dumps({"modules": modules, "views": specs}, separators=(",", ":")).replace("</", "<\\/")
    out = pathlib.Path(path)
    out.write_text(_PAGE.format(title=html.escape(title), divs=divs, data=data,
                                   css=bundle_css().read_text(encoding="utf-8").replace("</", "<\\/")), encoding="utf-8")
    return out
