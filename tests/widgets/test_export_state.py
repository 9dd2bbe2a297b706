"""What the standalone HTML export carries for the charts it cannot render as bqplot figures.

Known answers: SaliencyViewer.probabilities (softmax of the logits) and OIPOptimizer.history
(the synced ``_curve`` the page draws).
"""

from __future__ import annotations

import base64
import json
import re

import numpy as np

from cnnwidgets import OIPOptimizer, SaliencyViewer


def _page_data(path) -> dict:
    text = path.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="cnnw-data">(.*?)</script>', text, re.S)
    return json.loads(m.group(1).replace("<\\/", "</"))


def _array(spec: dict) -> np.ndarray:
    """An array trait as the exported page holds it: ``{view: {$b64}, dtype, shape}``."""
    return np.frombuffer(base64.b64decode(spec["view"]["$b64"]), spec["dtype"]).reshape(spec["shape"])


def test_saliency_probs_follow_the_image(demo):
    sv = SaliencyViewer(demo.model, demo.images[:20], demo.labels[:20], demo.classes, mean=demo.mean, std=demo.std)
    try:
        for i in (0, 7):
            sv.index = i
            sv.wait()
            assert sv._image_meta["index"] == i
            assert sv._probs.dtype == np.float32
            np.testing.assert_array_equal(sv._probs, sv.probabilities(i))
    finally:
        sv.close()


def test_saliency_export_has_probs_per_image(demo, tmp_path):
    sv = SaliencyViewer(demo.model, demo.images[:20], demo.labels[:20], demo.classes, mean=demo.mean, std=demo.std)
    try:
        data = _page_data(sv.save_html(tmp_path / "sv.html", images=[0, 1]))
        want = {i: sv.probabilities(i) for i in (0, 1)}
    finally:
        sv.close()
    (spec,) = data["views"]
    assert spec["state"]["chart"] is None  # the bqplot child is dropped
    assert spec["state"]["_probs"]["dtype"] == "float32"
    np.testing.assert_array_equal(_array(spec["state"]["_probs"]), want[0])
    for i in (0, 1):
        np.testing.assert_array_equal(_array(spec["frames"][str(i)]["_probs"]), want[i])


def test_oip_export_has_the_curve_as_float32(demo, tmp_path):
    oip = OIPOptimizer(demo.model, images=demo.images[:1], mean=demo.mean, std=demo.std)
    try:
        assert oip._curve.shape == (2, 0)  # not optimized yet: an empty curve
        oip.run(steps=12)
        hist = oip.history
        data = _page_data(oip.save_html(tmp_path / "oip.html"))
    finally:
        oip.close()
    # the synced curve the live chart shows, as the exported page draws it
    got = _array(data["views"][0]["state"]["_curve"])
    assert got.dtype == np.float32 and got.shape == (2, 12)
    np.testing.assert_array_equal(got[0], np.arange(1, 13, dtype=np.float32))
    np.testing.assert_array_equal(got[1], np.asarray(hist, np.float32))
