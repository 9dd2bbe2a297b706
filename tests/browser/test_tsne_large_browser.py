"""A map of 200,000 images in JupyterLab + headless Chromium: drawn by WebGL, panned and zoomed,
hovered while the kernel sleeps. Figures (time to first picture, frame times, hover-to-thumbnail,
JS heap) are printed and written to _artifacts/tsne_200k.json for tests/bench/run.py; nothing
here asserts on time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import save_screenshot

pytestmark = pytest.mark.browser

TS = ".cnnw-tsne-scatter"
CANVAS = f"{TS} canvas.cnnw-scatter"
N = 200_000
ART = Path(__file__).parent / "_artifacts"

# per event: dispatch a wheel or drag step on the canvas and time the synchronous redraw (the
# WebGL draw and its copy into the visible canvas happen inside the handler)
FRAMES_JS = """
([sel, kind, steps]) => {
  const c = document.querySelector(sel);
  const r = c.getBoundingClientRect();
  const cx = r.left + r.width / 2, cy = r.top + r.height / 2;
  const times = [];
  if (kind === "pan") c.dispatchEvent(new MouseEvent("mousedown", { clientX: cx, clientY: cy, bubbles: true }));
  for (let k = 0; k < steps; k++) {
    const t0 = performance.now();
    if (kind === "zoom") {
      c.dispatchEvent(new WheelEvent("wheel", { clientX: cx, clientY: cy, deltaY: k % 2 ? 60 : -80, bubbles: true, cancelable: true }));
    } else {
      c.dispatchEvent(new MouseEvent("mousemove", { clientX: cx + 3 * (k + 1), clientY: cy + 2 * (k + 1), bubbles: true }));
    }
    times.push(performance.now() - t0);
  }
  if (kind === "pan") window.dispatchEvent(new MouseEvent("mouseup", { clientX: cx, clientY: cy, bubbles: true }));
  return times;
}
"""


def _stats(ms: list[float]) -> tuple[float, float]:
    a = np.asarray(ms)
    return float(np.median(a)), float(np.percentile(a, 95))


def test_200000_points_pan_zoom_and_hover_while_busy(open_notebook):
    nb = open_notebook(
        "tsne_200k.ipynb",
        [
            "import time, numpy as np, torch, cnnwidgets\n"
            "from torch import nn\n"
            f"N = {N}\n"
            "rng = np.random.default_rng(0)\n"
            "labels = rng.integers(0, 10, N)\n"
            "yy, xx = np.mgrid[0:8, 0:8]\n"
            "cy, cx = 1 + (labels % 5) * 1.4, 1 + (labels // 5) * 5.0   # a blob per class\n"
            "blob = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / 3.0)\n"
            "images = np.clip(200 * blob + rng.normal(0, 25, (N, 8, 8)), 0, 255).astype(np.uint8)\n"
            "torch.manual_seed(0)\n"
            "model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)).eval()\n"
            "t0 = time.perf_counter()\n"
            "ts = cnnwidgets.TSNEScatter(model, images, labels, method='pca')\n"
            "ts",
        ],
        viewport=(1300, 1000),
    )
    page = nb.page
    t_start = time.perf_counter()
    page.wait_for_function(f"() => document.querySelector('{TS}')?.dataset.points === '{N}'", timeout=300_000)
    first_picture_s = time.perf_counter() - t_start
    page.wait_for_function(f"() => document.querySelector('{TS}').dataset.running === 'false'", timeout=300_000)
    assert page.get_attribute(TS, "data-renderer") == "webgl"
    # every thumbnail has reached the page: 8 x 8 (at most 32 px, sized to the page budget)
    page.wait_for_function(f"() => Number(document.querySelector('{TS}').dataset.atlasPages) >= 1", timeout=120_000)
    page.wait_for_timeout(500)

    # the picture: many non-background pixels in several class colours
    px = nb.canvas_pixels(CANVAS)[..., :3].reshape(-1, 3)
    bg = np.median(px, axis=0)
    fg = px[np.abs(px.astype(int) - bg).sum(1) > 60]
    assert len(fg) > 0.05 * len(px), len(fg)
    colours = {tuple(c) for c in (fg // 32).tolist()}
    assert len(colours) >= 6, colours

    # pan and zoom: the view moves (data-tx / data-scale) and so does the picture
    before = nb.canvas_pixels(CANVAS)
    tx0, s0 = float(page.get_attribute(TS, "data-tx")), float(page.get_attribute(TS, "data-scale"))
    pan = page.evaluate(FRAMES_JS, [CANVAS, "pan", 40])
    tx1 = float(page.get_attribute(TS, "data-tx"))
    assert tx1 == pytest.approx(tx0 + 120, abs=1e-6)
    assert (nb.canvas_pixels(CANVAS) != before).any()
    zoom = page.evaluate(FRAMES_JS, [CANVAS, "zoom", 40])
    assert float(page.get_attribute(TS, "data-scale")) != s0
    page.click(f"{TS} button.cnnw-reset-view")  # fit every point again before hovering

    # hover while a cell sleeps in the kernel: the thumbnail comes from the page's own copy
    targets = [0, 1000, 50_000, 100_000, 150_000, N - 1]
    pos = np.asarray(nb.kernel_json(f"ts.embedding[{targets}].tolist()"))
    s, tx, ty = (float(page.get_attribute(TS, f"data-{k}")) for k in ("scale", "tx", "ty"))
    page.evaluate(
        "() => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;"
        " k.requestExecute({code: 'import time; time.sleep(8)'}); }"
    )
    page.wait_for_timeout(300)
    box = page.locator(CANVAS).bounding_box()
    hover_ms = []
    hovered = []
    for x, y in pos:
        sx, sy = box["x"] + x * s + tx, box["y"] - y * s + ty
        if not (box["x"] < sx < box["x"] + box["width"] and box["y"] < sy < box["y"] + box["height"]):
            continue  # panned or zoomed out of the canvas
        t0 = time.perf_counter()
        page.mouse.move(sx, sy)
        idx = page.get_attribute(TS, "data-hover-index")
        if idx and idx != "-1":
            hover_ms.append(float(page.get_attribute(TS, "data-hover-ms")))
            hovered.append((int(idx), nb.canvas_pixels(f"{TS} canvas.cnnw-hover-thumb"), time.perf_counter() - t0))
    assert len(hovered) >= 3, "hovering the map finds points while the kernel sleeps"
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    nb.kernel("pass", timeout=30)  # waits for the sleep to end
    # the tip showed the hovered image's own thumbnail (8 x 8, scaled up by a whole factor)
    for i, shown, _ in hovered:
        want = np.asarray(nb.kernel_json(f"ts._thumbs[{i}].tolist()"), np.uint8)
        h, w = want.shape[:2]
        f = shown.shape[0] // h
        assert shown.shape[:2] == (h * f, w * f)
        np.testing.assert_array_equal(shown[::f, ::f, 0], want[..., 0])
    pan_med, pan_p95 = _stats(pan)
    zoom_med, zoom_p95 = _stats(zoom)
    figures = {
        "first picture s": first_picture_s,
        "pan frame ms median": pan_med, "pan frame ms p95": pan_p95,
        "zoom frame ms median": zoom_med, "zoom frame ms p95": zoom_p95,
        "hover ms median (in page)": float(np.median(hover_ms)),
        "hover round trip ms median (test driver)": float(np.median([1e3 * t for *_, t in hovered])),
        "JS heap MB": metrics.get("JSHeapUsedSize", 0) / 2**20,
    }
    ART.mkdir(exist_ok=True)
    (ART / "tsne_200k.json").write_text(json.dumps(figures, indent=1))
    print("\n200,000 points:", json.dumps(figures))
    save_screenshot(page, TS, "tsne_200k")
