"""ChannelCard in plain Python (no browser): what it shows equals the core's answers, it follows
the Selection, the patterns differ from each other, it refuses bad input next to the control,
and its threads stop."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from cnnwidgets import ActivationExplorer, ChannelCard, Selection
from cnnwidgets.core.channel import channel_card
from cnnwidgets.core.images import ImageSet
from tests.conftest import hook_count, requires_grad_flags, training_flags

N = 120


@pytest.fixture
def card(demo):
    w = ChannelCard(demo.model, demo.images[:N], demo.labels[:N], demo.classes, layer="features.3", channel=5,
                    mean=demo.mean, std=demo.std, patterns=0)
    assert w.wait(120)
    yield w
    w.close()


def _sent(w, name):
    msg = w.get_state([name])[name]
    return np.frombuffer(bytes(msg["view"]), dtype=msg["dtype"]).reshape(msg["shape"])


def test_the_card_shows_the_cores_answers(card, demo):
    images = ImageSet.of(demo.images[:N], demo.labels[:N], demo.classes, mean=demo.mean, std=demo.std)
    want = channel_card(demo.model, images, "features.3", 5, k=8)
    meta = card._top_meta
    assert meta["state"] == "done" and (meta["layer"], meta["channel"]) == ("features.3", 5)
    assert [it["index"] for it in meta["items"]] == [int(i) for i in want.top]
    assert [it["box"] for it in meta["items"]] == [[int(v) for v in b] for b in want.boxes]
    np.testing.assert_allclose([it["value"] for it in meta["items"]], want.top_values, rtol=1e-6)
    top = _sent(card, "_top")
    assert top.shape == (8, 28, 28, 1) and top.dtype == np.uint8
    np.testing.assert_array_equal(top[0], images.display(int(want.top[0])))
    stats = card._stats_meta
    counts, edges = want.histogram
    np.testing.assert_array_equal(_sent(card, "_hist"), np.asarray(counts, np.float32))
    np.testing.assert_allclose(stats["edges"], edges, rtol=1e-6)
    assert stats["fraction_active"] == pytest.approx(want.fraction_active)
    assert stats["n_valid"] == N and stats["by_class"] is not None and len(stats["by_class"]) == 10
    # the filter: 32 kernels of 3 x 3 for a conv reading 32 channels, on a scale symmetric about 0
    w = demo.model.features[3].weight.detach()[5]
    wm = card._weights_meta
    assert wm["kind"] == "kernels" and wm["in_channels"] == 32 and wm["vmax"] == pytest.approx(float(w.abs().max()))
    assert _sent(card, "_weights").shape == (32, 3, 3)
    assert card.data is not None and card.data.layer == "features.3"


def test_the_outlined_region_is_the_receptive_field(card):
    over = card.top_overlays()
    item = card._top_meta["items"][0]
    x0, y0, x1, y1 = item["box"]
    orange = np.array([245, 133, 24], np.uint8)
    assert (over[0, y0, x0:x1] == orange).all() and (over[0, y1 - 1, x0:x1] == orange).all()
    inside = over[0, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1]
    assert not (inside == orange).all(axis=-1).any()
    # the strongest position's field contains that position (stride 2 at features.3 of the demo CNN)
    r, c = item["position"]
    assert x0 <= 2 * c + 1 < x1 and y0 <= 2 * r + 1 < y1


def test_another_channel_reads_the_cache_and_a_layer_change_resets_the_channel(card, demo):
    card.channel = 7
    assert card.wait(60)
    assert card._top_meta["channel"] == 7 and card._top_meta["state"] == "done"
    card.layer = "features.7"  # 128 channels -> channel 7 still fits
    assert card.wait(60) and card.channel == 7 and card.n_channels == 128
    card.channel = 100
    card.layer = "features.0"  # 32 channels: 100 does not exist there
    assert card.channel == -1 and card.wait(60)
    assert card._top_meta["state"] == "none" and "select a channel" in card.status


def test_bad_values_are_refused_with_the_range(card):
    with pytest.raises(ValueError, match=r"channel must be in -1\.\.63"):
        card.channel = 64
    with pytest.raises(ValueError, match="has no feature maps"):
        card.layer = "classifier.4"
    with pytest.raises(ValueError, match=r"k must be in 1\.\.64"):
        card.k = 0
    card.set_state({"channel": 99})  # from the page: refused next to the control, the card unchanged
    assert card.channel == 5 and "channel" in card.control_errors


def test_the_card_follows_a_click_in_another_view(demo):
    sel = Selection()
    ae = ActivationExplorer(demo.model, demo.images[:N], demo.labels[:N], demo.classes, mean=demo.mean,
                            std=demo.std, selection=sel)
    card = ChannelCard(demo.model, demo.images[:N], demo.labels[:N], demo.classes, selection=sel, patterns=0,
                       mean=demo.mean, std=demo.std)
    try:
        assert card.layer == sel.layer and card.channel == -1  # nothing selected yet
        ae.layer = "features.3"
        ae.channel = 11  # a click on a feature map
        assert (card.layer, card.channel) == ("features.3", 11)
        assert card.wait(60) and card._top_meta["channel"] == 11
        card.channel = 4  # and back
        assert ae.channel == 4 and sel.channel == 4
    finally:
        card.close()
        ae.close()
        sel.close()


def test_four_patterns_differ_and_all_excite_the_channel(demo):
    card = ChannelCard(demo.model, demo.images[:20], mean=demo.mean, std=demo.std, layer="features.6", channel=5,
                       steps=64)
    try:
        assert card.wait(120)
        meta = card._patterns_meta
        assert meta["state"] == "done" and meta["step"] == 64 and len(meta["values"]) == 4
        imgs = card.pattern_images().reshape(4, -1).astype(np.float64)
        corr = np.corrcoef(imgs)
        off = corr[~np.eye(4, dtype=bool)]
        assert off.max() < 0.8, corr  # different images (the diversity objective)
        # every pattern excites the channel far more than the dataset images do on average
        assert min(meta["values"]) > 2 * card._stats_meta["mean"]
    finally:
        card.close()


def test_a_new_channel_stops_the_running_patterns_within_a_step(demo):
    card = ChannelCard(demo.model, demo.images[:20], mean=demo.mean, std=demo.std, layer="features.6", channel=1,
                       steps=2000)
    try:
        deadline = time.monotonic() + 60
        while card._patterns_meta.get("step", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        card.channel = 2
        assert card.wait(300)
        meta = card._patterns_meta
        assert meta["channel"] == 2 and meta["state"] == "done" and meta["step"] == 2000
    finally:
        card.close()


def test_close_stops_the_threads_and_leaves_the_model_as_found(demo):
    model = demo.model
    modes, grads, hooks = training_flags(model), requires_grad_flags(model), hook_count(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    card = ChannelCard(model, demo.images[:40], mean=demo.mean, std=demo.std, layer="features.6", channel=3,
                       steps=2000)
    threads = [card._worker._thread, card._pattern_worker._thread]
    deadline = time.monotonic() + 60
    while card._patterns_meta.get("step", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    card.close()
    assert not any(t is not None and t.is_alive() for t in threads)
    assert training_flags(model) == modes and requires_grad_flags(model) == grads and hook_count(model) == hooks
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert repr(card) == "ChannelCard(closed)"


def test_a_layer_without_a_filter_says_so(demo):
    card = ChannelCard(demo.model, demo.images[:20], mean=demo.mean, std=demo.std, layer="features.2", channel=0,
                       patterns=0)
    try:
        assert card._weights_meta["kind"] == "none" and "not a convolution" in card._weights_meta["note"]
    finally:
        card.close()


def test_export_is_a_static_page_with_the_card(card, tmp_path):
    path = card.save_html(tmp_path / "card.html")
    text = path.read_text()
    assert "channel_card" in text or "cnnw-channel-card" in text
    assert "_top_meta" in text and "_stats_meta" in text
