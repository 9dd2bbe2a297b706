"""The Explorer in a real marimo notebook (``marimo run``) and headless Chromium.

marimo renders each anywidget view in a shadow root of its own (Playwright's CSS selectors pierce
open shadow roots; ``DEEP`` finds a node for page-side JS), renders no ipywidgets boxes (the
Explorer shows itself through ``_display_``) and no child widgets (its widget manager has no
``create_view``): the saliency bars and the OIP loss curve are the views' own SVG charts, the
curve live during a run. There is no kernel API from the page: expected pixels are computed in
this process from the same demo model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import ARTIFACTS, CONTRAST_JS, _free_port, _need, _stop_server, wait_for_server
from .test_activation_explorer_browser import _same

pytestmark = pytest.mark.browser

ROOTS = [".cnnw-filter-grid", ".cnnw-activation-explorer", ".cnnw-saliency-viewer", ".cnnw-tsne-scatter",
         ".cnnw-oip-optimizer"]
GRID, AE, SV, OIP, CARD = ".cnnw-filter-grid", ".cnnw-activation-explorer", ".cnnw-saliency-viewer", \
    ".cnnw-oip-optimizer", ".cnnw-channel-card"
SV_CHART = f"{SV} .cnnw-sv-chart svg.cnnw-static-chart"
OIP_CHART = f"{OIP} .cnnw-chart svg.cnnw-static-chart"

NOTEBOOK = '''import marimo

app = marimo.App()


@app.cell
def _():
    import cnnwidgets

    demo = cnnwidgets.demo.mnist("val")
    ex = cnnwidgets.Explorer(demo.model, demo.images[:300], demo.labels[:300], demo.classes,
                             mean=demo.mean, std=demo.std, tsne_images=300)
    ex.optimizer.steps = 100_000  # a run the test stops
    ex
    return


if __name__ == "__main__":
    app.run()
'''

#: The first node matching a selector in the page or in any (nested) open shadow root.
DEEP = """(sel) => {
  const walk = (root) => {
    const hit = root.querySelector(sel);
    if (hit) return hit;
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) { const found = walk(el.shadowRoot); if (found) return found; }
    }
    return null;
  };
  return walk(document);
}"""
#: Every node matching a selector in the page and in all (nested) open shadow roots, in order.
DEEP_ALL = """(sel) => {
  const out = [];
  const walk = (root) => {
    out.push(...root.querySelectorAll(sel));
    for (const el of root.querySelectorAll("*")) if (el.shadowRoot) walk(el.shadowRoot);
  };
  walk(document);
  return out;
}"""


@contextlib.contextmanager
def _marimo_run(root: Path, notebook: Path, theme: str = "light"):
    """``marimo run`` of ``notebook`` on 127.0.0.1, its settings (``theme``: marimo's display
    theme, "light" or "dark") and state under ``root``: yields its URL. Every page opened gets
    a kernel of its own, which runs the notebook."""
    config = root / "_config" / "marimo"
    config.mkdir(parents=True, exist_ok=True)
    (config / "marimo.toml").write_text(f'[display]\ntheme = "{theme}"\n')
    port = _free_port()
    # marimo's settings and state in this run's folder, never the user's
    env = dict(os.environ, PYTHONUNBUFFERED="1", XDG_CONFIG_HOME=str(root / "_config"),
               XDG_STATE_HOME=str(root / "_state"))
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "marimo", "-y", "run", str(notebook), "--host", "127.0.0.1", "--port", str(port),
         "--headless", "--no-token", "--no-sandbox"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_server(proc, log, f"{url}/health", "marimo", 60)
    try:
        yield url
    finally:
        _stop_server(proc, log)


@pytest.fixture(scope="module")
def marimo_server(tmp_path_factory):
    """``marimo run`` of :data:`NOTEBOOK`: yields its URL."""
    _need("marimo", importlib.util.find_spec("marimo") is not None)
    root = tmp_path_factory.mktemp("marimo")
    nb = root / "explorer_nb.py"
    nb.write_text(NOTEBOOK)
    with _marimo_run(root, nb) as url:
        yield url


class _Page:
    """The open marimo page, with the ``canvas_pixels`` of the JupyterLab tests' Notebook
    (so their ``_same`` compares pixels here too), through shadow roots."""

    def __init__(self, page):
        self.page = page

    def canvas_pixels(self, selector: str) -> np.ndarray:
        data = self.page.locator(selector).first.evaluate(
            "(c) => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);"
            " return { w: c.width, h: c.height, px: Array.from(d.data) }; }")
        return np.asarray(data["px"], np.uint8).reshape(data["h"], data["w"], 4)

    def contrast_report(self, selector: str = ".cnnw-root", minimum: float = 4.5) -> dict:
        """The JupyterLab tests' contrast report (conftest's ``CONTRAST_JS``, which walks into
        shadow roots and up through their hosts)."""
        return self.page.evaluate(CONTRAST_JS, [selector, minimum])

    def attr(self, selector: str, name: str) -> str | None:
        """``data-<name>`` (camelCase ``name``) of the first node matching ``selector``."""
        return self.page.evaluate(f"([s, a]) => ({DEEP})(s)?.dataset[a] ?? null", [selector, name])

    def wait_attr(self, selector: str, name: str, test: str, arg=None, timeout: float = 30_000) -> None:
        """Wait until ``test`` (JS, of ``v``: the attribute, and ``arg``) holds."""
        self.page.wait_for_function(
            f"([s, a, arg]) => {{ const v = ({DEEP})(s)?.dataset[a]; return v !== undefined && ({test}); }}",
            arg=[selector, name, arg], timeout=timeout, polling=200)


def _ours(messages: list[str]) -> list[str]:
    """The page's errors that come from cnnwidgets (its views' modules, or what they asked of
    marimo, such as a child view); marimo's own warnings are not ours."""
    return [m for m in messages if "cnnw" in m.lower() or "create_view" in m or "widget_manager" in m
            or m.startswith("pageerror")]


@contextlib.contextmanager
def _opened(browser, url: str, shot: str):
    """The marimo page at ``url`` in a new browser context: yields its :class:`_Page`, whose
    ``errors`` collects page errors and console errors; a screenshot ``<shot>.png`` goes to the
    artifacts when done."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 2400})
    page = ctx.new_page()
    mp = _Page(page)
    mp.errors = []
    page.on("pageerror", lambda e: mp.errors.append(f"pageerror: {e}\n{getattr(e, 'stack', '')}"))
    page.on("console", lambda m: mp.errors.append(f"console: {m.text}") if m.type == "error" else None)
    try:
        page.goto(url, timeout=60_000)
        yield mp
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)
        finally:
            ctx.close()


def _drawn(mp: _Page, counts: dict[str, int], timeout: float = 120_000) -> None:
    """Wait until the page holds ``counts[selector]`` view roots of each selector (in any shadow
    root), each drawn at least once (``data-frame`` > 0)."""
    mp.page.wait_for_function(
        f"""(counts) => Object.entries(counts).every(([sel, n]) => {{
              const found = ({DEEP_ALL})(sel);
              return found.length === n && found.every(r => Number(r.dataset.frame || 0) > 0);
            }})""", arg=counts, timeout=timeout, polling=250)


def _grid_is_pythons(mp: _Page) -> tuple[int, ...]:
    """The filter grid's canvas shows the pixels ``FilterGrid.to_image`` computes in this
    process from the same demo model, at the page's layer, zoom and gap colour (returned)."""
    import cnnwidgets

    page = mp.page
    demo = cnnwidgets.demo.mnist("val")
    layer = page.locator(f"{GRID} select.cnnw-layer").input_value()
    zoom = int(page.locator(f"{GRID} input.cnnw-zoom").input_value())
    gaps = tuple(int(v) for v in mp.attr(GRID, "background").split(","))
    grid = cnnwidgets.FilterGrid(demo.model, layer, zoom=zoom, height=320)
    try:
        expected = grid.to_image(background=gaps)
    finally:
        grid.close()
    _same(mp, f"{GRID} canvas.cnnw-canvas", expected, x0=int(mp.attr(GRID, "x0")), y0=int(mp.attr(GRID, "y0")))
    return gaps


def test_explorer_in_marimo(marimo_server, browser):
    with _opened(browser, marimo_server, "marimo_explorer") as mp:
        page = mp.page
        # every view draws, and the channel card and the Selection's line are there
        for root in [CARD, ".cnnw-selection"]:
            page.wait_for_selector(root, timeout=90_000)
        _drawn(mp, dict.fromkeys(ROOTS, 1))
        mp.wait_attr(CARD, "layer", "v !== ''")
        _grid_is_pythons(mp)

        # the keyboard cursor's ring is drawn while the canvas has the focus (inside a shadow
        # root, where document.activeElement is the host)
        page.locator(f"{GRID} canvas.cnnw-canvas").focus()
        page.keyboard.press("ArrowRight")
        mp.wait_attr(GRID, "cursorTile", "v === '1'")
        page.wait_for_timeout(300)  # drawn in the next animation frame
        ring = mp.canvas_pixels(f"{GRID} canvas.cnnw-overlay")
        assert (ring == 255).all(-1).any(), "no cursor ring on the focused filter grid"

        # the saliency view's class bars and the OIP curve are SVG charts of their own, not an
        # empty box where a bqplot figure cannot be mounted
        page.wait_for_selector(SV_CHART, timeout=30_000)
        assert mp.attr(SV_CHART, "bars") == "10"
        assert page.locator(f"{SV} .cnnw-sv-chart rect.cnnw-bar").count() == 10
        page.wait_for_selector(OIP_CHART, timeout=30_000)
        assert mp.attr(OIP_CHART, "points") == "0"
        assert "not optimized yet" in page.locator(OIP_CHART).text_content()

        # one link through the Selection: the next image in the feature maps moves the
        # attribution (its map and its bars) to image 1
        page.click(f"{AE} button.cnnw-next")
        mp.wait_attr(SV, "heatIndex", "v === '1'")
        mp.wait_attr(SV, "chartIndex", "v === '1'")
        page.wait_for_function(
            f"() => ({DEEP})('.cnnw-selection-line')?.textContent.includes('image 1')", timeout=30_000)
        # a click on a bar explains its class, as a click on the bqplot chart does
        page.locator(f"{SV} .cnnw-sv-chart rect.cnnw-bar-column[data-class='3']").click()
        mp.wait_attr(SV, "heatTarget", "v === '3'")
        mp.wait_attr(SV_CHART, "highlight", "v === '3'")

        # the OIP loss curve grows live during a run started from the page
        page.click(f"{OIP} button.cnnw-start")
        mp.wait_attr(OIP, "running", "v === 'true'")
        counts = []
        for _ in range(3):
            last = counts[-1] if counts else 0
            mp.wait_attr(OIP_CHART, "points", "Number(v) > arg", arg=last, timeout=30_000)
            counts.append(int(mp.attr(OIP_CHART, "points")))
        assert counts == sorted(set(counts)), counts
        assert mp.attr(OIP, "running") == "true", "the curve grew while the run went on"
        page.click(f"{OIP} button.cnnw-stop")
        mp.wait_attr(OIP, "running", "v === 'false'")
        mp.wait_attr(OIP, "final", "v === 'true'")
        assert int(mp.attr(OIP_CHART, "points")) >= counts[-1]
        assert page.locator(f"{OIP_CHART} polyline.cnnw-line").count() == 1

        ours = _ours(mp.errors)
        assert not ours, ours


def test_shipped_marimo_tour(tmp_path, browser):
    """notebooks/marimo_tour.py, as a user opens it: every view of its Explorer and of its own
    linked pair draws, a click in the pair's attribution moves the pair's feature maps, and the
    cell that reads the attribution's image through ``mo.ui.anywidget`` runs again."""
    _need("marimo", importlib.util.find_spec("marimo") is not None)
    tour = Path(__file__).resolve().parents[2] / "notebooks" / "marimo_tour.py"
    with _marimo_run(tmp_path, tour) as url, _opened(browser, url, "marimo_tour") as mp:
        page = mp.page
        _drawn(mp, {r: 2 if r in (AE, SV) else 1 for r in ROOTS})  # the Explorer's, and the pair's
        # the pair: the last feature maps and attribution of the page; the next image in the
        # attribution moves the pair's feature maps (and not the Explorer's views)
        page.locator(f"{SV} button.cnnw-next").last.click()
        page.wait_for_function(
            f"([sv, ae]) => {{ const s = ({DEEP_ALL})(sv), a = ({DEEP_ALL})(ae);"
            " return s.length === 2 && s[1].dataset.heatIndex === '1' && s[0].dataset.heatIndex === '0'"
            " && a[1].dataset.mapsIndex === '1' && a[0].dataset.mapsIndex === '0'; }",
            arg=[SV, AE], timeout=60_000, polling=250)
        # and the cell that reads the attribution back in Python ran again for the new image
        # (marimo's reactivity on a view wrapped in mo.ui.anywidget)
        page.get_by_text("The attribution of image #1 has its largest value at pixel").wait_for(timeout=60_000)
        assert page.get_by_text("The attribution of image #0").count() == 0
        ours = _ours(mp.errors)
        assert not ours, ours


def test_explorer_in_marimo_dark(tmp_path, browser):
    """marimo's dark theme reaches the views (its variables, inherited into their shadow roots):
    dark backgrounds, legible text (WCAG 4.5:1 everywhere), no white canvas, and the filter
    grid still shows Python's pixels with the dark gap colour the page reports."""
    _need("marimo", importlib.util.find_spec("marimo") is not None)
    nb = tmp_path / "explorer_dark.py"
    nb.write_text(NOTEBOOK)
    with _marimo_run(tmp_path, nb, theme="dark") as url, _opened(browser, url, "marimo_explorer_dark") as mp:
        _drawn(mp, dict.fromkeys(ROOTS, 1))
        mp.page.wait_for_selector(SV_CHART, timeout=30_000)
        gaps = _grid_is_pythons(mp)
        assert max(gaps) < 80, f"the filter grid's gaps are not dark: {gaps}"
        report = mp.contrast_report()
        assert report["checked"] > 50, report
        assert not report["failures"], report["failures"][:10]
        assert not report["white_canvases"], report["white_canvases"]
