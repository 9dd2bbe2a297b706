"""The evidence beside the map (SaliencyViewer): deletion and insertion curves computed in the
background for the map shown, one row of their areas per method in the compare view, and the
randomization check run from the page; in plain Python (no browser)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from cnnwidgets import SaliencyViewer
from cnnwidgets.core.faithfulness import deletion_insertion, randomization_check

N = 6


@pytest.fixture
def sv(demo):
    w = SaliencyViewer(demo.model, demo.images[:N], demo.labels[:N], demo.classes, method="gradcam",
                       mean=demo.mean, std=demo.std)
    assert w.wait(60)
    yield w
    w.close()


def _sent(w, name):
    msg = w.get_state([name])[name]
    return np.frombuffer(bytes(msg["view"]), dtype=msg["dtype"]).reshape(msg["shape"])


def test_the_curves_of_the_map_shown_follow_it_and_equal_the_core(sv, demo):
    meta = sv._evidence_meta
    assert meta["state"] == "done" and meta["index"] == 0 and meta["method"] == "gradcam"
    assert meta["target"] == sv.resolve_target(0)
    curves = _sent(sv, "_evidence")
    assert curves.dtype == np.float32 and curves.shape == (3, sv.evidence_steps + 1)
    a = sv.attribution(0)
    # ranked as the map is shown (mode "abs": by magnitude)
    f = deletion_insertion(demo.model, sv._batch(0), torch.from_numpy(np.abs(a)), meta["target"],
                           steps=sv.evidence_steps)
    np.testing.assert_allclose(curves[1], f.deletion, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(curves[2], f.insertion, rtol=1e-5, atol=1e-6)
    assert meta["deletion_auc"] == pytest.approx(f.deletion_auc, rel=1e-6)
    assert meta["insertion_auc"] == pytest.approx(f.insertion_auc, rel=1e-6)
    # the public call gives the same
    g = sv.faithfulness(0)
    np.testing.assert_allclose(g.deletion, f.deletion, rtol=1e-6)
    # the next image and another method: the curves follow the map
    sv.index = 3
    sv.method = "integrated_gradients"
    assert sv.wait(60)
    meta = sv._evidence_meta
    assert (meta["index"], meta["method"], meta["state"]) == (3, "integrated_gradients", "done")
    assert meta["deletion_auc"] == pytest.approx(sv.faithfulness(3).deletion_auc, rel=1e-5)


def test_evidence_off_and_steps(sv):
    sv.evidence_steps = 1000  # more than the 784 pixels: one step per pixel
    assert sv.wait(60)
    assert sv._evidence_meta["steps"] == 784 and _sent(sv, "_evidence").shape == (3, 785)
    sv.evidence = False
    assert sv.wait(60)
    assert sv._evidence_meta["state"] == "off"
    sv.evidence = True
    sv.evidence_steps = 10
    assert sv.wait(60)
    assert sv._evidence_meta["state"] == "done" and _sent(sv, "_evidence").shape == (3, 11)
    with pytest.raises(ValueError, match="evidence_steps must be in 2..1000"):
        sv.evidence_steps = 1


def test_a_method_without_a_class_has_no_curves(sv):
    sv.layer = sv.layers[0]
    sv.method = "layer_gradient"
    assert sv.wait(60)
    assert sv._evidence_meta["state"] == "none" and "explains no class" in sv._evidence_meta["note"]
    with pytest.raises(ValueError, match="explains no class"):
        sv.faithfulness()


def test_compare_rows_rank_the_methods_for_this_image(sv):
    sv.compare_methods = ["vanilla", "integrated_gradients", "gradcam", "layer_gradient"]
    sv.view = "compare"
    assert sv.wait(120)
    items = sv._panels_meta["items"]
    assert [it["method"] for it in items] == sv.compare_methods
    for it in items[:3]:
        assert it["deletion_auc"] == pytest.approx(sv.faithfulness(0, it["method"]).deletion_auc, rel=1e-5)
        assert 0 <= it["insertion_auc"] <= 1
    assert items[3]["evidence"] == "explains no class"


def test_a_newer_map_stops_the_running_curves(demo):
    """Curves are computed after the map, on their own worker: a new map while they run ends
    them within a batch (worker.pending), and only the newest map's curves are shown."""
    sv = SaliencyViewer(demo.model, demo.images[:N], demo.labels[:N], demo.classes, method="vanilla",
                        mean=demo.mean, std=demo.std)
    try:
        sv.evidence_steps = 784  # one pixel per step
        for i in range(N):
            sv.index = i
        assert sv.wait(120)
        assert sv._evidence_meta["index"] == N - 1 and sv._evidence_meta["state"] == "done"
    finally:
        sv.close()


def test_randomization_check_from_the_page(sv, demo):
    sv._dispatch_message(sv, {"type": "sanity_check"})
    assert sv.wait(120)
    meta = sv._sanity_meta
    assert meta["state"] == "done" and meta["method"] == "gradcam" and meta["index"] == 0
    rho = _sent(sv, "_sanity")
    r = randomization_check(demo.model, sv._batch(0), "gradcam", meta["target"], layer=sv.layer)
    assert list(meta["layers"]) == list(r.layers)
    np.testing.assert_allclose(rho, r.spearman, rtol=1e-5, atol=1e-6)
    # the user's model is untouched
    before = {k: v.clone() for k, v in demo.model.state_dict().items()}
    sv.randomization(0)
    for k, v in demo.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_randomization_check_stops_on_stop(demo):
    sv = SaliencyViewer(demo.model, demo.images[:2], demo.labels[:2], demo.classes, method="smoothgrad",
                        mean=demo.mean, std=demo.std)
    try:
        sv.samples = 1000
        assert sv.wait(120)
        sv._dispatch_message(sv, {"type": "sanity_check"})
        deadline = time.monotonic() + 30
        while sv._sanity_meta.get("state") == "computing" and not sv._sanity_meta.get("total") and time.monotonic() < deadline:
            time.sleep(0.01)
        sv._dispatch_message(sv, {"type": "stop"})
        assert sv.wait(120)
        assert sv._sanity_meta["state"] in ("stopped", "done")
        assert sv._sanity_meta["state"] == "stopped" or sv._sanity_meta["done"] == sv._sanity_meta["total"]
    finally:
        sv.close()


def test_a_failed_map_has_no_evidence_and_a_failed_check_says_why(sv):
    sv._heat_meta = dict(sv._heat_meta, error="boom")
    sv._dispatch_message(sv, {"type": "sanity_check"})
    assert sv._sanity_meta["state"] == "failed" and "no map" in sv._sanity_meta["error"]


def test_the_export_carries_the_evidence(sv, tmp_path):
    path = sv.save_html(tmp_path / "sv.html", images=[0, 1])
    text = path.read_text()
    assert "_evidence_meta" in text and "deletion_auc" in text
