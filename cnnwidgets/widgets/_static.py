"""The picture a saved notebook keeps of each view: a PNG of what the view shows and a short
summary, carried beside the live widget in its display output.

A live front end (JupyterLab, Notebook 7, VS Code with a kernel) renders the widget: it ranks
the widget's mime type above HTML and PNG. Where no widget can render (a notebook on GitHub,
in nbviewer, converted with ``jupyter nbconvert``, or opened in VS Code before its kernel
starts) the reader picks ``text/html`` (the PNG as a data URI plus the summary) or
``image/png``. The picture is what the view held when it was displayed: work still running
then (a t-SNE map settling, an optimization) is drawn as far as it had got, and the summary
says so.

Everything here reads what the view already computed (its synced traits and public methods
that need no new pass over the model), so displaying a view never waits on background work.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import pathlib
from typing import Any, Callable

import numpy as np

log = logging.getLogger("cnnwidgets")

#: Longest side, in pixels, an image panel (the input, a map, an optimized image) is drawn at.
PANEL = 224
#: The widest a view's picture may be: a filter grid or a map grid wider than this is shrunk.
MAX_WIDTH = 960
#: Between the panels of one picture.
GAP = 8
BACKGROUND = (255, 255, 255)
MUTED = (200, 200, 200)
#: The point colours of the t-SNE page, by class: the table js/src/widgets/tsne_scatter.js
#: imports too (palette.json).
PALETTE = np.array([[int(c[i: i + 2], 16) for i in (1, 3, 5)]
                    for c in json.loads(pathlib.Path(__file__).with_name("palette.json").read_text())], np.uint8)
NO_CLASS = np.array((153, 153, 153), np.uint8)


# ---------------------------------------------------------------------- drawing
def rgb(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) as (H, W, 3)."""
    a = np.asarray(img, np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a[..., :3])


def fit(img: np.ndarray, size: int = PANEL) -> np.ndarray:
    """``img`` (H, W, 3) scaled by whole pixels (nearest neighbour, as the views draw small
    images) so that its longer side comes close to ``size``; shrunk by striding when larger
    than ``MAX_WIDTH``."""
    h, w = img.shape[:2]
    if max(h, w) > MAX_WIDTH:
        step = -(-max(h, w) // MAX_WIDTH)
        return img[::step, ::step]
    k = max(1, size // max(h, w, 1))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1) if k > 1 else img


def row(panels: list[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Panels (H_i, W_i, 3) side by side, top-aligned, on the background."""
    panels = [p for p in panels if p is not None and p.size]
    if not panels:
        return np.full((1, 1, 3), BACKGROUND, np.uint8)
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    out = np.full((height, width, 3), BACKGROUND, np.uint8)
    x = 0
    for p in panels:
        out[: p.shape[0], x: x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


def column(panels: list[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Panels stacked top to bottom, left-aligned."""
    return np.ascontiguousarray(row([np.ascontiguousarray(p.transpose(1, 0, 2)) for p in panels if p is not None],
                                    gap).transpose(1, 0, 2))


def tiles(images: np.ndarray, size: int = 96, columns: int = 8) -> np.ndarray:
    """A batch (N, H, W, C) as rows of ``columns`` tiles of about ``size`` pixels."""
    cells = [fit(rgb(im), size) for im in images]
    return column([row(cells[i: i + columns]) for i in range(0, len(cells), columns)])


def _frame(width: int, height: int) -> np.ndarray:
    """An empty chart: the background with a light frame."""
    out = np.full((height, width, 3), BACKGROUND, np.uint8)
    out[[0, -1], :] = MUTED
    out[:, [0, -1]] = MUTED
    return out


def scatter(positions: np.ndarray, classes: np.ndarray | None, width: int = 360, height: int = 270,
            dot: int = 3) -> np.ndarray:
    """Points (N, 2) as ``dot``-pixel squares coloured by class (``PALETTE``; grey for -1),
    fitted into a framed ``width`` x ``height`` chart with y up, as the page draws the map."""
    out = _frame(width, height)
    pos = np.asarray(positions, np.float64).reshape(-1, 2)
    keep = np.isfinite(pos).all(axis=1)
    if not keep.any():
        return out
    lo, hi = pos[keep].min(axis=0), pos[keep].max(axis=0)
    span = np.maximum(hi - lo, 1e-12)
    pad = 8
    scale = min((width - 2 * pad - dot) / span[0], (height - 2 * pad - dot) / span[1])
    x = (pad + (pos[:, 0] - lo[0]) * scale).astype(int)
    y = (height - pad - dot - (pos[:, 1] - lo[1]) * scale).astype(int)
    cls = np.full(len(pos), -1) if classes is None else np.asarray(classes).reshape(-1)[: len(pos)]
    colors = np.where((cls >= 0)[:, None], PALETTE[np.maximum(cls, 0) % len(PALETTE)], NO_CLASS)
    for dy in range(dot):
        for dx in range(dot):
            out[(y + dy)[keep], (x + dx)[keep]] = colors[keep]
    return out


def curve(values: np.ndarray, width: int = 320, height: int = 160, color=(31, 119, 180)) -> np.ndarray:
    """A line through ``values`` (one per step) in a framed chart; the non-finite ones left out."""
    out = _frame(width, height)
    v = np.asarray(values, np.float64).reshape(-1)
    ok = np.isfinite(v)
    if ok.sum() < 2:
        return out
    pad = 6
    steps = np.arange(len(v))[ok]
    v = v[ok]
    lo, hi = v.min(), v.max()
    xs = pad + (steps - steps[0]) * (width - 2 * pad - 1) / max(steps[-1] - steps[0], 1)
    ys = height - pad - 1 - (v - lo) * (height - 2 * pad - 1) / max(hi - lo, 1e-12)
    # dense samples along each segment: a connected two-pixel line
    n = int(max(width, abs(np.diff(ys)).sum())) * 2
    t = np.linspace(0, len(xs) - 1, n)
    px = np.interp(t, np.arange(len(xs)), xs).round().astype(int)
    py = np.interp(t, np.arange(len(ys)), ys).round().astype(int)
    for d in (0, 1):
        out[np.clip(py + d, 0, height - 1), px] = color
    return out


def png(img: np.ndarray) -> bytes:
    """uint8 (H, W, 3) as PNG bytes (zlib level 1: as small as level 6 on these pictures, 3-5x
    faster; a display waits for it)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8), "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ---------------------------------------------------------------------- per view
def _name(value: Any) -> str:
    return "n/a" if value is None else str(value)


def _prediction(info: dict) -> str:
    if info.get("predicted") is None:
        return ""
    p = info.get("probability")
    return f", predicted {info['predicted']}" + (f" (p = {p:.2f})" if p is not None else "")


def filter_grid(view) -> tuple[np.ndarray | None, str]:
    # at the view's zoom, or less where that would be wider than MAX_WIDTH (a grid of 262,144
    # tiles is 6,655 px wide at zoom 4: 1.7 s to draw, for a picture shown 960 px wide)
    small = view.to_image(zoom=1)
    zoom = max(1, min(view.zoom, MAX_WIDTH // max(small.shape[:2])))
    picture = fit(small if zoom == 1 else view.to_image(zoom=zoom))
    return picture, f"the weights of {view.layer!r} as {view.n_tiles} tiles (mode {view.mode}, {view.normalize} scale)"


def activation_explorer(view) -> tuple[np.ndarray | None, str]:
    info, maps = dict(view._image_info), dict(view._maps_info)
    if view._image is None:
        return None, "no image shown yet"
    panels = [fit(rgb(view._image))]
    if view._maps is not None and maps:
        panels.append(fit(view.maps_image(), 2 * PANEL))
    text = f"image #{info.get('index', view.index)} (label {_name(info.get('label'))}{_prediction(info)})"
    if maps:
        text += f"; the {len(view._maps)} feature maps of {maps.get('layer', view.layer)!r}"
    return row(panels), text


def saliency_viewer(view) -> tuple[np.ndarray | None, str]:
    from ..core.saliency import REGISTRY

    meta, image = dict(view._heat_meta), dict(view._image_meta)
    if view._image is None or not meta:
        return None, "no map computed yet"
    method = REGISTRY[meta["method"]].label if meta.get("method") in REGISTRY else _name(meta.get("method"))
    panels = [fit(rgb(view._image)), fit(view.overlay_image())]
    text = (f"image #{meta.get('index')} (label {_name(image.get('label'))}{_prediction(image)}): "
            f"{method} for class {_name(meta.get('target_name'))}")
    if meta.get("error"):
        text += f"; the map failed: {meta['error']}"
    return row(panels), text


def tsne_scatter(view) -> tuple[np.ndarray | None, str]:
    pos = view._positions
    n = 0 if pos is None else len(pos)
    phase = view.phase
    if not n:
        return None, f"the map of {view.layer!r} was not computed yet when this was saved ({phase})"
    classes = view._predicted if view.color_by == "predicted" and view._predicted is not None else view._labels
    text = f"{view.method} map of {n} images by their features at {view.layer!r}, coloured by {view.color_by}"
    if phase != "done":
        text += f"; saved at iteration {view.iteration} of {view.n_iter} ({phase})"
    return scatter(pos, classes), text


def oip_optimizer(view) -> tuple[np.ndarray | None, str]:
    img = view._image
    history = view.history
    panels = []
    if img is not None and len(img):
        panels.append(fit(rgb(img[0])) if len(img) == 1 else tiles(img))
    panels.append(curve(history))
    what = (f"class {view.class_name(view.class_index)}" if view.objective == "class"
            else f"channel {view.channel} of {view.layer!r}")
    text = f"the input that maximizes {what}"
    text += f": step {view.step}, objective {view.value:.4g}" if history else ": not optimized yet"
    return row(panels), text


def channel_card(view) -> tuple[np.ndarray | None, str]:
    panels = []
    if view._patterns is not None and len(view._patterns):
        panels.append(tiles(view.pattern_images(), 96, 4))
    if view._top is not None and len(view._top):
        panels.append(tiles(view.top_overlays(), 64, 4))
    if view.channel < 0:
        return None, f"no channel of {view.layer!r} chosen yet (a click on a feature map or a filter chooses one)"
    return (row(panels) if panels else None), f"channel {view.channel} of {view.layer!r}"


#: The picture and summary of each view class (by class name; the view modules import this one).
PICTURES: dict[str, Callable[[Any], tuple[np.ndarray | None, str]]] = {
    "FilterGrid": filter_grid, "ActivationExplorer": activation_explorer, "SaliencyViewer": saliency_viewer,
    "TSNEScatter": tsne_scatter, "OIPOptimizer": oip_optimizer, "ChannelCard": channel_card,
}


def picture(view) -> tuple[np.ndarray | None, str]:
    """``(image, summary)`` of ``view`` as it is now; ``(None, why)`` for a view with nothing
    to show (or whose state could not be read: a view closed meanwhile)."""
    kind = next((c.__name__ for c in type(view).__mro__ if c.__name__ in PICTURES), None)
    if kind is None:
        return None, ""
    try:
        image, text = PICTURES[kind](view)
    except Exception as exc:  # noqa: BLE001 - a display must never fail for its picture
        log.info("cnnwidgets: no static picture of %s: %s: %s", kind, type(exc).__name__, exc)
        return None, f"no picture: {type(exc).__name__}: {exc}"
    return image, text


def html_block(kind: str, image: np.ndarray | None, data: str | None, text: str) -> str:
    """One view's fallback: its picture (``data``, the PNG in base64) as a data-URI ``<img>``
    and the summary below it."""
    alt = html.escape(f"{kind}: {text}", quote=True)
    # the view's kind in a class too: sanitizers (JupyterLab's, for an untrusted notebook) keep
    # classes but drop data-* attributes
    parts = [f'<div class="cnnw-fallback cnnw-fallback-{html.escape(kind)}" data-view="{html.escape(kind)}" '
             'style="font: 13px sans-serif">']
    if image is not None:
        parts.append(f'<img src="data:image/png;base64,{data}" alt="{alt}" width="{image.shape[1]}" '
                     f'height="{image.shape[0]}" style="max-width: 100%; height: auto; image-rendering: pixelated">')
    parts.append(f"<div><b>{html.escape(kind)}</b>: {html.escape(text)}</div></div>")
    return "".join(parts)


def fallback(views: list) -> dict[str, str]:
    """The static part of a display bundle for ``views`` (one view, or an Explorer's): ``text/html``
    with each view's picture and summary, and ``image/png`` of them all (two columns)."""
    shown = []
    for v in views:
        image, text = picture(v)
        data = None if image is None else base64.b64encode(png(image)).decode("ascii")
        shown.append((type(v).__name__, image, data, text))
    html_text = "".join(html_block(*item) for item in shown)
    if len(views) > 1:
        html_text = f'<div class="cnnw-fallbacks" style="display: flex; flex-wrap: wrap; gap: 12px">{html_text}</div>'
    bundle = {"text/html": html_text}
    drawn = [(image, data) for _, image, data, _ in shown if image is not None]
    if len(drawn) == 1:
        bundle["image/png"] = drawn[0][1]
    elif drawn:
        pairs = [row([image for image, _ in drawn[i: i + 2]], 2 * GAP) for i in range(0, len(drawn), 2)]
        bundle["image/png"] = base64.b64encode(png(column(pairs, 2 * GAP))).decode("ascii")
    return bundle
