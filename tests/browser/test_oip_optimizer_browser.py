"""OIPOptimizer in JupyterLab + headless Chromium: Start, live image and loss curve while another
cell runs, Stop within a step, pixels of the final image, Selection targeting."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import DOCS
from .test_activation_explorer_browser import _np, _same, _scaled, _wait_attr

pytestmark = pytest.mark.browser

OIP = ".cnnw-oip-optimizer"


def test_oip_start_live_stop(open_notebook):
    nb = open_notebook(
        "oip.ipynb",
        [
            "import cnnwidgets, ipywidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "sel = cnnwidgets.Selection()\n"
            "oip = cnnwidgets.OIPOptimizer(demo.model, 'features.6', channel=5, images=demo.images,\n"
            "    selection=sel, mean=demo.mean, std=demo.std, steps=100000, lr=0.02)\n"
            "grid = cnnwidgets.FilterGrid(demo.model, 'features.6', selection=sel, zoom=6, height=200)\n"
            "ipywidgets.VBox([oip, grid])",
        ],
        viewport=(1300, 1300),
    )
    page = nb.page
    page.wait_for_selector(f"{OIP} canvas.cnnw-oip-image", timeout=60_000)
    page.wait_for_function(f"() => document.querySelector('{OIP} .cnnw-chart svg') !== null", timeout=30_000)
    # live, the bqplot figure is the chart; the static SVG is for exported pages only
    assert page.locator(f"{OIP} .cnnw-chart svg.cnnw-static-chart").count() == 0

    # a click on a filter of the linked FilterGrid targets that channel here
    geo = nb.kernel_json("dict(cols=grid._grid['columns'], th=grid._grid['tile_h'], tw=grid._grid['tile_w'], n_in=grid._grid['in_channels'])")
    tile = 9 * geo["n_in"]
    cw, ch = geo["tw"] * 6 + 1, geo["th"] * 6 + 1
    gbox = page.locator(".cnnw-filter-grid canvas.cnnw-canvas").bounding_box()
    page.mouse.click(gbox["x"] + (tile % geo["cols"]) * cw + cw // 2, gbox["y"] + (tile // geo["cols"]) * ch + ch // 2)
    nb.wait_kernel("[grid.channel, sel.channel, oip.channel]", [9, 9, 9])

    # Start from the page: the image and the loss curve change while another cell executes
    frame0 = int(page.get_attribute(OIP, "data-frame"))
    page.click(f"{OIP} button.cnnw-start")
    _wait_attr(nb, OIP, "running", "true")
    out = nb.kernel("import time; t0 = time.time(); s = sum(i * i for i in range(200000)); print('other cell ran', round(time.time() - t0, 3))")
    assert "other cell ran" in out
    page.wait_for_function(f"(n) => Number(document.querySelector('{OIP}').dataset.frame) > n + 3", arg=frame0, timeout=30_000)
    path_len = page.evaluate(f"() => (document.querySelector('{OIP} .cnnw-chart path.line')?.getAttribute('d') || '').length")
    page.wait_for_timeout(500)
    path_len2 = page.evaluate(f"() => (document.querySelector('{OIP} .cnnw-chart path.line')?.getAttribute('d') || '').length")
    assert path_len2 > path_len > 0, "the loss curve grows while the optimization runs"
    steps_a = nb.kernel_json("len(oip.history)")
    page.wait_for_timeout(400)
    steps_b = nb.kernel_json("len(oip.history)")
    assert steps_b > steps_a
    info = page.inner_text(f"{OIP} .cnnw-run-info")
    assert "steps/s" in info

    # Stop: it stops within a step, and the page shows the final image
    page.click(f"{OIP} button.cnnw-stop")
    _wait_attr(nb, OIP, "running", "false", timeout=20_000)
    done = nb.kernel_json("len(oip.history)")
    page.wait_for_timeout(500)
    assert nb.kernel_json("len(oip.history)") == done
    assert nb.kernel_json("[oip.running, oip.result.stopped]") == [False, True]
    _wait_attr(nb, OIP, "final", "true")
    final = _np(nb, "(oip.result.images[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(__import__('torch').uint8).numpy()", "f.npy")
    _same(nb, f"{OIP} canvas.cnnw-oip-image", _scaled(final, 224 // 28))
    assert np.ptp(final) > 0
    assert nb.kernel_json("oip.history[-1] > oip.history[0]")  # the objective went up
    # the clipping rule and the random scaling are set from the page, and shown when set from Python
    page.select_option(f"{OIP} select.cnnw-clip-by", "contribution")
    nb.wait_kernel("oip.clip_by", "contribution")
    page.evaluate(f"() => {{ const i = document.querySelector('{OIP} input.cnnw-scale'); i.value = '0.1'; "
                  "i.dispatchEvent(new Event('change')); }")
    nb.wait_kernel("oip.scale", 0.1)
    nb.kernel("oip.scale = 0.25; oip.clip_by = 'norm'")
    page.wait_for_function(f"() => document.querySelector('{OIP} input.cnnw-scale').value === '0.25' && "
                           f"document.querySelector('{OIP} select.cnnw-clip-by').value === 'norm'", timeout=10_000)
    DOCS.mkdir(exist_ok=True)
    page.locator(OIP).screenshot(path=str(DOCS / "oip_optimizer.png"))
    assert not nb.errors, nb.errors
