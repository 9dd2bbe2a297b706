"""A model with a tuple output in JupyterLab + headless Chromium (issue #12): the layer views
work and say in the page why there is no prediction; OIP offers the class objective only once
``output=`` says which tensor holds the class scores, and a channel run started from the page
ends with the kernel's pixels."""

from __future__ import annotations

import numpy as np
import pytest

from .test_activation_explorer_browser import EX, _maps_expr, _np, _same, _scaled, _wait_attr

pytestmark = pytest.mark.browser

OIP = ".cnnw-oip-optimizer"

CELL = (
    "import cnnwidgets, ipywidgets, torch\n"
    "demo = cnnwidgets.demo.mnist('val')\n"
    "class Pair(torch.nn.Module):\n"
    "    '''The demo CNN returning (logits, a second tensor), as detectors do.'''\n"
    "    def __init__(self, net):\n"
    "        super().__init__()\n"
    "        self.net = net\n"
    "    def forward(self, x):\n"
    "        out = self.net(x)\n"
    "        return out, out[:, :4]\n"
    "pair = Pair(demo.model)\n"
    "ex = cnnwidgets.ActivationExplorer(pair, demo.images[:50], demo.labels[:50], demo.classes,\n"
    "    mean=demo.mean, std=demo.std)\n"
    "oip = cnnwidgets.OIPOptimizer(pair, 'net.features.6', channel=3, images=demo.images[:1],\n"
    "    mean=demo.mean, std=demo.std, steps=100000, lr=0.02)\n"
    "oip2 = cnnwidgets.OIPOptimizer(pair, 'net.features.6', output=0, images=demo.images[:1],\n"
    "    mean=demo.mean, std=demo.std)\n"
    "ipywidgets.VBox([ex, oip, oip2])"
)


def test_tuple_output_model_in_the_page(open_notebook):
    nb = open_notebook("tuple_output.ipynb", [CELL], viewport=(1400, 2200))
    page = nb.page
    page.wait_for_selector(f"{EX} canvas.cnnw-maps", timeout=60_000)
    _wait_attr(nb, EX, "mapsIndex", "0")
    page.wait_for_function(f"() => Number(document.querySelector('{EX}').dataset.frame || 0) > 0", timeout=30_000)

    # feature maps: the kernel's pixels; the banner says why no class is predicted, and how to fix it
    _same(nb, f"{EX} canvas.cnnw-maps", _np(nb, _maps_expr(nb), "tm0.npy"))
    note = page.inner_text(f"{EX} .cnnw-model-note")
    assert "a tuple of 2: [0] tensor 1 x 10, [1] tensor 1 x 4" in note and "output=" in note, note
    assert "no prediction" in page.inner_text(f"{EX} .cnnw-input-caption")

    # OIP without output=: the class objective is off in the page, with the reason as its tooltip
    page.wait_for_selector(f"{OIP} canvas.cnnw-oip-image", timeout=60_000)
    first, second = page.locator(f"{OIP} select.cnnw-objective").all()[:2]
    off = first.locator('option[value="class"]')
    assert off.evaluate("o => o.disabled") is True
    assert "output=" in off.get_attribute("title")
    assert "output=" in page.locator(f"{OIP} .cnnw-model-note").first.inner_text()
    # ... and on with output=0, which picks the logits
    on = second.locator('option[value="class"]')
    assert on.evaluate("o => o.disabled") is False
    assert nb.kernel_json("[oip.n_classes, oip2.n_classes]") == [0, 10]

    # a channel run from the page works on the tuple-output model, and stops with the kernel's pixels
    panel = page.locator(OIP).first
    frame0 = int(panel.get_attribute("data-frame") or 0)
    panel.locator("button.cnnw-start").click()
    nb.wait_kernel("oip.running", True)
    page.wait_for_function(f"(n) => Number(document.querySelector('{OIP}').dataset.frame) > n + 2", arg=frame0,
                           timeout=30_000)
    panel.locator("button.cnnw-stop").click()
    nb.wait_kernel("oip.running", False, timeout=20)
    page.wait_for_function(f"() => document.querySelector('{OIP}').dataset.final === 'true'", timeout=20_000)
    final = _np(nb, "(oip.result.images[0].permute(1, 2, 0).clamp(0, 1) * 255).round()"
                    ".to(torch.uint8).numpy()", "tf.npy")
    _same(nb, f"{OIP} canvas.cnnw-oip-image", _scaled(final, 224 // 28))
    assert np.ptp(final) > 0
    assert nb.kernel_json("oip.history[-1] > oip.history[0]")
