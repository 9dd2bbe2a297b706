"""The Explorer stays live while OIP runs on the same model (JupyterLab + headless Chromium).

Start the optimizer from the page, press Next on the feature maps and click a map: the maps and
the projection change at once (the pixels are the kernel's), and Stop ends the run at once.
Before the private model views, Next waited for the whole run (12-19 s) and Stop was ignored.
The bounds below (5 s) tell "answers at once" from "waits for the run"; the times are printed.
"""

from __future__ import annotations

import time

import pytest

from .test_activation_explorer_browser import EX, _maps_expr, _maps_geometry, _np, _same, _scaled, _tile_centre, _wait_attr

pytestmark = pytest.mark.browser

OIP = ".cnnw-oip-optimizer"


def test_explorer_next_map_click_and_stop_while_oip_runs(open_notebook):
    nb = open_notebook(
        "busy_explorer.ipynb",
        [
            "import cnnwidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "ex = cnnwidgets.Explorer(demo.model, demo.images[:300], demo.labels[:300], demo.classes,\n"
            "    mean=demo.mean, std=demo.std, tsne_images=300)\n"
            "ex.optimizer.steps = 100000\n"
            "ex",
        ],
        viewport=(1500, 1800),
    )
    page = nb.page
    page.wait_for_selector(f"{EX} canvas.cnnw-maps", timeout=90_000)
    _wait_attr(nb, EX, "mapsIndex", "0", timeout=60_000)
    page.wait_for_selector(f"{OIP} button.cnnw-start", timeout=60_000)

    # the same Next with nothing running, for the printed comparison
    t0 = time.perf_counter()
    page.click(f"{EX} button.cnnw-next")
    _wait_attr(nb, EX, "mapsIndex", "1", timeout=5_000)
    t_idle = time.perf_counter() - t0
    page.click(f"{EX} button.cnnw-prev")
    _wait_attr(nb, EX, "mapsIndex", "0", timeout=5_000)

    page.click(f"{OIP} button.cnnw-start")
    _wait_attr(nb, OIP, "running", "true")
    nb.wait_kernel("ex.optimizer.step > 20", True)

    t0 = time.perf_counter()
    page.click(f"{EX} button.cnnw-next")
    _wait_attr(nb, EX, "mapsIndex", "1", timeout=5_000)
    t_next = time.perf_counter() - t0
    assert nb.kernel_json("[ex.activations.index, ex.optimizer.running]") == [1, True]
    _same(nb, f"{EX} canvas.cnnw-maps", _np(nb, _maps_expr(nb, "ex.activations"), "busy_m1.npy"))

    geo, order = _maps_geometry(nb, "ex.activations")
    cell = 2
    channel = order[cell]
    x, y = _tile_centre(page, f"{EX} canvas.cnnw-maps", geo, cell)
    t0 = time.perf_counter()
    page.mouse.click(x, y)
    _wait_attr(nb, EX, "overlayChannel", str(channel), timeout=5_000)
    t_click = time.perf_counter() - t0
    assert nb.kernel_json("[ex.activations.channel, ex.selection.channel, ex.optimizer.running]") == [channel, channel, True]
    _same(nb, f"{EX} canvas.cnnw-overlay-view", _scaled(_np(nb, "ex.activations.overlay_image()", "busy_o.npy"), 168 // 28))

    t0 = time.perf_counter()
    page.click(f"{OIP} button.cnnw-stop")
    _wait_attr(nb, OIP, "running", "false", timeout=5_000)
    t_stop = time.perf_counter() - t0
    done = nb.kernel_json("ex.optimizer.step")
    page.wait_for_timeout(500)
    assert nb.kernel_json("[ex.optimizer.step, ex.optimizer.running]") == [done, False]
    assert done < 100_000
    print(f"idle: Next -> new maps {t_idle * 1e3:.0f} ms; while OIP ran: Next -> new maps {t_next * 1e3:.0f} ms, map click -> projection {t_click * 1e3:.0f} ms, "
          f"Stop -> stopped {t_stop * 1e3:.0f} ms")
    assert not nb.errors, nb.errors


def test_a_model_without_a_private_view_says_so_in_the_view(open_notebook):
    """A model cnnwidgets cannot copy (a module class with __slots__) still works, on the model
    itself, and the view says so above its controls; a normal model shows no note."""
    nb = open_notebook(
        "model_note.ipynb",
        [
            "import copy, cnnwidgets, ipywidgets, torch\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "class Slotted(torch.nn.Sequential):\n"
            "    __slots__ = ('tag',)\n"
            "odd = Slotted(*copy.deepcopy(demo.model).children()).eval()\n"
            "ex = cnnwidgets.ActivationExplorer(odd, demo.images[:20], mean=demo.mean, std=demo.std)\n"
            "ok = cnnwidgets.SaliencyViewer(demo.model, demo.images[:20], mean=demo.mean, std=demo.std)\n"
            "ipywidgets.VBox([ex, ok])",
        ],
    )
    page = nb.page
    page.wait_for_selector(f"{EX} canvas.cnnw-maps", timeout=60_000)
    _wait_attr(nb, EX, "mapsIndex", "0")
    note = page.locator(f"{EX} .cnnw-model-note")
    assert note.is_visible()
    text = note.inner_text()
    assert "model itself" in text and "__slots__" in text and text == nb.kernel_json("ex.model_note")
    assert not page.locator(".cnnw-saliency-viewer .cnnw-model-note").is_visible()
    # the view works on the model itself: Next shows the kernel's maps
    page.click(f"{EX} button.cnnw-next")
    _wait_attr(nb, EX, "mapsIndex", "1")
    _same(nb, f"{EX} canvas.cnnw-maps", _np(nb, _maps_expr(nb), "note_m1.npy"))
    assert not nb.errors, nb.errors
