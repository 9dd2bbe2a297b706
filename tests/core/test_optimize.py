"""Tests for cnnwidgets.core.optimize: known answers for every piece, short runs on the demo."""

from __future__ import annotations

import copy
import math
import threading

import pytest

from cnnwidgets.core.runner import private_model  # hooks on cnnwidgets' own view: the user's do not run there
import torch
from torch import nn

from cnnwidgets.core.optimize import (
    DeadTargetError,
    Objective,
    OIPResult,
    blur_every,
    channel,
    class_logit,
    class_probabilities,
    clip_weak_pixels,
    compose,
    fourier_param,
    gaussian_blur,
    gray_noise,
    jitter,
    l2,
    log_steps,
    lp,
    multiscale,
    neuron,
    optimize,
    pixel_param,
    precursor_scan,
    rotate,
    scale,
    total_variation,
)

from ..conftest import hook_count, requires_grad_flags, training_flags

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small passes: one intra-op thread

SHAPE = (1, 28, 28)


@pytest.fixture
def model(demo):
    """A private copy of the demo model: tests may change its flags."""
    return copy.deepcopy(demo.model)


def run(model, objective, **kw):
    """optimize() on the demo's normalization, 5 steps of the classic size (lr = 0.01), no
    snapshots unless asked. (The default lr = 0.05 overshoots on the first steps here.)"""
    kw.setdefault("steps", 5)
    kw.setdefault("lr", 0.01)
    kw.setdefault("snapshots", None)
    return optimize(model, objective, SHAPE, mean=(0.1307,), std=(0.3081,), **kw)


def mean_model() -> nn.Sequential:
    """Layer '0' is a 1x1 convolution with weight 1: channel('0', 0) is the image mean."""
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    return net


def conv_out(model, images, upto: int) -> torch.Tensor:
    """Independent reference: the demo's features[:upto] on display-space images."""
    with torch.no_grad():
        return model.features[:upto]((images - 0.1307) / 0.3081)


# ============================================================ penalties
def test_l2_and_lp_are_measured_from_gray():
    gray = torch.full((2, 3, 4, 4), 0.5)
    assert torch.equal(l2(3.0)(gray), torch.zeros(2))
    assert torch.equal(lp(1.5, 3.0)(gray), torch.zeros(2))
    img = torch.zeros(2, 1, 2, 2)
    img[1] = 1.0
    img[1, 0, 0, 0] = 0.5  # deviations of image 1: 0, .5, .5, .5
    assert torch.allclose(l2(2.0)(img), torch.tensor([2 * 0.25, 2 * 0.75 * 0.25]))
    assert torch.allclose(lp(1, 1.0)(img), torch.tensor([0.5, 0.375]))
    assert torch.allclose(lp(3, 1.0)(img), torch.tensor([0.125, 0.75 * 0.125]))


def test_total_variation_known_values():
    const = torch.full((1, 2, 5, 5), 0.3)
    assert torch.equal(total_variation(1.0)(const), torch.zeros(1))
    board = (torch.arange(6).view(-1, 1) + torch.arange(6)).remainder(2).float()
    board = board.expand(1, 3, 6, 6)
    assert torch.allclose(total_variation(0.5)(board), torch.tensor([0.5 * 2.0]))
    ramp = (torch.arange(5.0) / 10).expand(1, 1, 5, 5)  # dx = 0.1 everywhere, dy = 0
    assert torch.allclose(total_variation(1.0)(ramp), torch.tensor([0.1]))


def test_penalties_compose():
    img = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    combo = l2(1.0) + 0.25 * total_variation(2.0)
    assert torch.allclose(combo(img), l2(1.0)(img) + 0.5 * total_variation(1.0)(img))
    assert combo(img).shape == (3,)


def test_penalty_bad_weights():
    with pytest.raises(ValueError):
        l2(-1.0)
    with pytest.raises(ValueError):
        lp(0, 1.0)


# ============================================================ image operations
def test_blur_preserves_constant_and_spreads_delta():
    const = torch.full((1, 2, 9, 9), 0.7)
    assert torch.allclose(gaussian_blur(const, 1.5), const, atol=1e-6)
    delta = torch.zeros(1, 1, 15, 15)
    delta[0, 0, 7, 7] = 1.0
    sigma = 1.0
    out = gaussian_blur(delta, sigma)
    t = torch.arange(-3.0, 4.0)
    k = torch.exp(-0.5 * t**2 / sigma**2)
    k = k / k.sum()
    assert out[0, 0, 7, 7] == pytest.approx(float(k[3] ** 2), rel=1e-5)  # peak = k0 * k0
    assert out[0, 0, 7, 8] == pytest.approx(float(k[3] * k[4]), rel=1e-5)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)  # mass kept (delta far from border)
    assert torch.allclose(out, out.flip(-1)) and torch.allclose(out, out.transpose(-1, -2))


def test_blur_every_acts_only_every_n_steps():
    op = blur_every(3, 1.0)
    img = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert op(img, step=0) is img and op(img, step=1) is img
    assert torch.allclose(op(img, step=2), gaussian_blur(img, 1.0))
    assert torch.allclose(op(img, step=5), gaussian_blur(img, 1.0))


def test_clip_weak_pixels_by_norm():
    # 2 channels, 2 x 3 pixels; deviations from gray chosen so the norms are 0..5
    norms = torch.arange(6.0).view(2, 3) / 20
    dev = torch.stack([norms * 0.6, -norms * 0.8])  # ||(0.6 n, -0.8 n)|| = n
    img = (0.5 + dev).unsqueeze(0)
    out = clip_weak_pixels(50)(img)  # median of 0..5 (/20) is 2.5/20: clip norms 0, 1, 2
    weak = norms < 2.5 / 20
    assert torch.equal(out[0][:, weak], torch.full((2, 3), 0.5))
    assert torch.equal(out[0][:, ~weak], img[0][:, ~weak])
    assert torch.equal(clip_weak_pixels(0)(img), img)
    # the 40th percentile of 0..5 is exactly 2: only strengths strictly below it are clipped
    out = clip_weak_pixels(40)(img)
    assert (out[0] != 0.5).any(dim=0).sum() == 4 and bool((out[0][:, norms == 2 / 20] != 0.5).all())


def test_clip_weak_pixels_by_contribution_uses_gradient():
    dev = torch.tensor([[[0.4, 0.3], [0.2, 0.1]]])  # norms favour the top-left
    grad = torch.tensor([[[0.1, 1.0], [2.0, 0.5]]])  # contributions .04, .3, .4, .05
    img = (0.5 + dev).unsqueeze(0)
    out = clip_weak_pixels(50, by="contribution")(img, step=0, grad=grad.unsqueeze(0))
    expect = torch.tensor([[[0.5, 0.8], [0.7, 0.5]]])
    assert torch.allclose(out[0], expect)
    with pytest.raises(ValueError, match="grad"):
        clip_weak_pixels(50, by="contribution")(img)
    with pytest.raises(ValueError):
        clip_weak_pixels(150)


# ============================================================ transforms
def test_jitter_is_a_shift_and_keeps_shape():
    img = torch.arange(100.0).view(1, 1, 10, 10)
    assert torch.equal(jitter(0)(img), img)
    d = 2
    for s in range(5):
        out = jitter(d, seed=s)(img)
        assert out.shape == img.shape
        # a window of the reflection-padded image at one offset in 0..2d explains it exactly
        padded = torch.nn.functional.pad(img, (d, d, d, d), mode="reflect")
        offsets = [
            (oy, ox)
            for oy in range(2 * d + 1)
            for ox in range(2 * d + 1)
            if torch.equal(out, padded[..., oy : oy + 10, ox : ox + 10])
        ]
        assert len(offsets) == 1


def test_transforms_use_the_given_generator():
    img = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    t = compose([jitter(2), scale([0.9, 1.0, 1.1]), rotate(15)])
    a = t(img, generator=torch.Generator().manual_seed(7))
    b = t(img, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(7)
    outs = [t(img, generator=g) for _ in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # the draws change


def test_scale_zooms_about_the_centre():
    img = torch.rand(2, 3, 8, 8)
    assert torch.equal(scale([1.0])(img), img)
    ramp = torch.arange(8.0).expand(1, 1, 8, 8)
    out = scale([2.0])(ramp)
    # output column j samples input column c + (j - c) / 2, c = 3.5; bilinear is exact on a ramp
    expect = 3.5 + (torch.arange(8.0) - 3.5) / 2
    assert torch.allclose(out[0, 0], expect.expand(8, 8), atol=1e-5)
    const = torch.full((1, 1, 8, 8), 0.3)
    assert torch.allclose(scale([0.7])(const), const, atol=1e-6)  # the border is reflected


def test_rotate_identity_and_quarter_turns():
    img = torch.rand(1, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(rotate([0])(img), img)
    assert torch.equal(rotate(0)(img), img)
    assert torch.allclose(rotate([90])(img), torch.rot90(img, 1, (2, 3)), atol=1e-5)
    wide = torch.rand(1, 1, 4, 7)
    assert torch.allclose(rotate([180])(wide), torch.rot90(wide, 2, (2, 3)), atol=1e-5)
    assert rotate(20)(wide).shape == wide.shape


# ============================================================ objectives
ACTS = {
    "conv": torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).view(2, 3, 3, 3),
    "fc": torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
}


def test_channel_neuron_logit_values():
    conv = ACTS["conv"]
    assert torch.equal(channel("conv", 1)(ACTS, None), conv[:, 1].mean(dim=(1, 2)))
    assert torch.equal(channel("conv", [2, 0])(ACTS, None), torch.stack([conv[0, 2].mean(), conv[1, 0].mean()]))
    assert torch.equal(neuron("conv", 1)(ACTS, None), conv[:, 1, 1, 1])
    both = neuron("conv", [0, 2], y=0, x=[2, 1])(ACTS, None)
    assert torch.equal(both, torch.stack([conv[0, 0, 0, 2], conv[1, 2, 0, 1]]))
    assert torch.equal(neuron("fc", 2)(ACTS, None), torch.tensor([3.0, 6.0]))
    assert torch.equal(class_logit([1, 0])({}, ACTS["fc"]), torch.tensor([2.0, 4.0]))


def test_objective_arithmetic():
    a, b = channel("conv", 0), neuron("fc", 1)
    combo = a + 2 * b - 0.5 * a
    assert torch.allclose(combo(ACTS, None), 0.5 * a(ACTS, None) + 2 * b(ACTS, None))
    assert torch.equal((-a)(ACTS, None), -a(ACTS, None))
    assert torch.equal(sum([a, b])(ACTS, None), a(ACTS, None) + b(ACTS, None))
    assert combo.layers == {"conv", "fc"} and not combo.needs_logits
    assert (a + class_logit(0)).needs_logits
    assert isinstance(combo, Objective) and "conv:0" in combo.name
    with pytest.raises(ValueError, match="images"):
        channel("conv", [0, 1]) + channel("conv", [0, 1, 2])


def test_objective_range_errors():
    with pytest.raises(ValueError, match=r"0\.\.2"):
        channel("conv", 3)(ACTS, None)
    with pytest.raises(ValueError, match="neuron"):
        channel("fc", 0)(ACTS, None)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        neuron("conv", 0, y=3)(ACTS, None)
    with pytest.raises(ValueError, match="one per image"):
        channel("conv", [0, 1, 2])(ACTS, None)
    with pytest.raises(ValueError, match=">= 0"):
        channel("conv", -1)
    with pytest.raises(TypeError):
        channel("conv", 1.5)


# ============================================================ starting images, parameterizations
def test_gray_noise_is_the_classic_start():
    img = gray_noise(SHAPE, 3, seed=4)
    assert img.shape == (3, *SHAPE)
    dev = img - 0.5
    assert float(dev.abs().max()) <= 10 / 255 + 1e-7
    assert float(dev.max() - dev.min()) > 0.95 * 20 / 255  # spans the full amplitude
    assert torch.equal(img, gray_noise(SHAPE, 3, seed=4))
    assert not torch.equal(img, gray_noise(SHAPE, 3, seed=5))


def test_multiscale_known_cases():
    assert torch.equal(multiscale(SHAPE, 2, seed=0, amplitudes=(0, 0, 0, 0)), torch.full((2, *SHAPE), 0.5))
    fine = multiscale(SHAPE, 2, seed=3, scales=((28, 28),), amplitudes=(0.4,))
    u = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(fine, 0.5 + 0.4 * (u - 0.5))
    coarse = multiscale(SHAPE, 2, seed=3, scales=((3, 3),), amplitudes=(0.4,))
    tv = total_variation(1.0)
    assert bool((tv(coarse) < 0.25 * tv(fine)).all())  # large blobs, not pixel noise
    big = multiscale(SHAPE, 2, seed=3, amplitudes=(5.0, 5.0, 5.0, 5.0))
    assert float(big.min()) == 0.0 and float(big.max()) == 1.0  # clamped


def test_pixel_param_starts_from_init():
    init = torch.rand(2, *SHAPE)
    params, image_fn = pixel_param(SHAPE, 2, init)
    assert torch.equal(image_fn(), init) and params[0].requires_grad
    params, image_fn = pixel_param(SHAPE, 3, init[:1])
    assert torch.equal(image_fn(), init[:1].expand(3, -1, -1, -1))


@pytest.mark.parametrize("c", [1, 3])
def test_fourier_param_round_trip(c):
    init = 0.05 + 0.9 * torch.rand(2, c, 10, 12, generator=torch.Generator().manual_seed(5))
    params, image_fn = fourier_param((c, 10, 12), 2, init=init)
    assert params[0].shape == (2, c, 10, 7, 2)
    assert torch.allclose(image_fn(), init, atol=1e-4)
    _, fresh = fourier_param((c, 10, 12), 2, seed=0)
    img = fresh().detach()
    assert img.shape == (2, c, 10, 12) and float((img - 0.5).abs().max()) < 0.1  # near gray


# ============================================================ optimize on the demo model
@pytest.mark.parametrize(
    "objective",
    [channel("features.6", 120), neuron("features.3", 5), neuron("classifier.1", 3), class_logit(7)],
    ids=["channel", "neuron", "unit", "class"],
)
def test_five_steps_raise_and_negation_lowers(model, objective):
    up = run(model, objective)
    assert float(up.final_values[0]) > float(up.per_image[0, 0]) + 1e-3
    assert up.history[-1] > up.history[0]
    down = run(model, -objective)
    assert float(down.final_values[0]) > float(down.per_image[0, 0]) + 1e-3  # -obj rose: obj fell


def test_final_values_match_an_independent_forward(model):
    res = run(model, channel("features.6", 17))
    ref = conv_out(model, res.images, 7)[:, 17].mean(dim=(1, 2))
    assert torch.allclose(res.final_values, ref, atol=1e-5)
    assert res.images.shape == (1, *SHAPE) and res.images.device.type == "cpu"
    assert 0.0 <= float(res.images.min()) and float(res.images.max()) <= 1.0


def test_batch_mode_each_image_rises_independently(model):
    chans = [0, 5, 17, 42]
    init = gray_noise(SHAPE, 4, seed=9)
    res = run(model, channel("features.6", chans), init=init)
    assert res.images.shape == (4, *SHAPE) and res.per_image.shape == (5, 4)
    assert bool((res.final_values > res.per_image[0] + 1e-3).all())
    ref = conv_out(model, res.images, 7)
    assert torch.allclose(res.final_values, torch.stack([ref[b, c].mean() for b, c in enumerate(chans)]), atol=1e-5)
    # the RMS normalization is per image: image 2 is what a run on its own gives
    alone = run(model, channel("features.6", 17), init=init[2:3])
    assert torch.allclose(alone.images[0], res.images[2], atol=1e-5)


@pytest.mark.parametrize("kw", [{"step_rule": "adam"}, {"param": "fourier", "lr": 0.05}])
def test_other_step_rules_and_params_rise(model, kw):
    res = run(model, channel("features.6", [3, 120]), **kw)
    assert bool((res.final_values > res.per_image[0]).all())


def test_penalty_pulls_toward_gray(model):
    free = run(model, channel("features.6", 120), steps=8)
    held = run(model, channel("features.6", 120), steps=8, penalties=[l2(1e4)])
    assert float(l2(1.0)(held.images)) < 0.5 * float(l2(1.0)(free.images))


def test_image_ops_in_the_loop(model):
    res = run(model, channel("features.6", 120), image_ops=[clip_weak_pixels(90)])
    not_gray = int((res.images != 0.5).sum())
    assert 0 < not_gray <= math.ceil(0.1 * 28 * 28)
    smooth = run(model, channel("features.6", 120), image_ops=[blur_every(1, 2.0)])
    rough = run(model, channel("features.6", 120))
    tv = total_variation(1.0)
    assert float(tv(smooth.images)) < float(tv(rough.images))
    with pytest.raises(ValueError, match="pixel"):
        run(model, channel("features.6", 1), param="fourier", image_ops=[blur_every(1, 1.0)])


def test_same_seed_same_result(model):
    kw = dict(steps=4, transforms=[compose([jitter(2), rotate(10)])], penalties=[total_variation(0.1)])
    a = run(model, channel("features.6", [1, 2]), seed=3, **kw)
    b = run(model, channel("features.6", [1, 2]), seed=3, **kw)
    c = run(model, channel("features.6", [1, 2]), seed=4, **kw)
    assert torch.equal(a.images, b.images) and a.history == b.history
    assert not torch.equal(a.images, c.images)


# ============================================================ step rules: known step sizes
def first_images(net, objective, **kw):
    """(start image, image after each step) from the callback."""
    frames = []
    res = optimize(net, objective, (1, 6, 6), callback=lambda k, v, f: frames.append(f()), **kw)
    return res.initial, frames


@pytest.mark.parametrize("rule", ["rms", "adam"])
def test_uniform_gradient_moves_every_pixel_by_lr(rule):
    # d mean / d pixel = 1/36 everywhere: RMS-normalized, and Adam's bias-corrected first
    # steps, both move each pixel by exactly lr
    start, frames = first_images(mean_model(), channel("0", 0), steps=3, lr=0.01, step_rule=rule)
    assert torch.allclose(frames[0] - start, torch.full_like(start, 0.01), atol=1e-6)
    assert torch.allclose(frames[2] - frames[1], torch.full_like(start, 0.01), atol=1e-6)


def test_rms_step_concentrates_on_the_only_pixel_with_gradient():
    # a single neuron of a 1x1 convolution: gradient 1 at (2, 3), 0 elsewhere; its RMS over the
    # 36 pixels is 1/6, so that pixel moves by lr * 6 and no other pixel moves
    start, frames = first_images(mean_model(), neuron("0", 0, y=2, x=3), steps=1, lr=0.01)
    diff = frames[0] - start
    assert diff[0, 0, 2, 3] == pytest.approx(0.06, abs=1e-6)
    diff[0, 0, 2, 3] = 0
    assert torch.equal(diff, torch.zeros_like(diff))


class PeakAt(nn.Module):
    """-(x - 0.9)^2 per pixel: the gradient points up below 0.9 and down above it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x - 0.9) ** 2)


def test_pixels_are_projected_into_display_range():
    # a constant image climbs 0.5 -> 0.8 -> 1.1, projected to 1.0; then the gradient turns and
    # the next step starts from 1.0 (0.7), not from an unseen 1.1 (0.8)
    net = nn.Sequential(nn.Identity(), PeakAt())
    start, frames = first_images(net, channel("1", 0), steps=3, lr=0.3, init=torch.full((1, 1, 6, 6), 0.5))
    got = [float(f.mean()) for f in frames]
    assert got == pytest.approx([0.8, 1.0, 0.7], abs=1e-6)


# ============================================================ control: stop, callback, snapshots, convergence
def test_stop_event_ends_within_one_step():
    net = mean_model()
    stop = threading.Event()

    def cb(step, values, image_fn):
        if step == 2:
            stop.set()

    res = optimize(net, channel("0", 0), (1, 6, 6), steps=50, stop=stop, callback=cb)
    assert res.stopped and res.steps_done == 3 and len(res.history) == 3
    early = optimize(net, channel("0", 0), (1, 6, 6), steps=50, stop=stop)
    assert early.stopped and early.steps_done == 0 and torch.equal(early.images, early.initial)


def test_callback_sees_every_step_in_order():
    net = mean_model()
    seen = []

    def cb(step, values, image_fn):
        img = image_fn()
        seen.append((step, tuple(values.shape), img.device.type, float(img.mean())))
        return step == 6

    res = optimize(net, channel("0", 0), (1, 6, 6), batch=2, steps=50, callback=cb, lr=0.01)
    assert [s[0] for s in seen] == list(range(7))
    assert all(s[1] == (2,) and s[2] == "cpu" for s in seen)
    means = [s[3] for s in seen]
    assert all(b > a for a, b in zip(means, means[1:]))  # the image mean is the objective
    assert res.stopped and res.steps_done == 7


def test_snapshots_at_log_steps():
    assert log_steps(600) == [9, 18, 36, 72, 144, 288, 576, 599]
    assert log_steps(600, n=6) == [9, 18, 36, 72, 144, 288, 599]
    assert log_steps(10) == [9] and log_steps(1) == [0]
    net = mean_model()
    frames = {}
    res = optimize(net, channel("0", 0), (1, 6, 6), steps=40, lr=0.005,
                   callback=lambda k, v, f: frames.__setitem__(k, f()))
    assert sorted(res.snapshots) == [9, 18, 36, 39]
    for k, img in res.snapshots.items():
        assert torch.equal(img, frames[k])  # the image right after step k
    assert torch.equal(res.snapshots[39], res.images)
    some = optimize(net, channel("0", 0), (1, 6, 6), steps=5, snapshots=[0, 3, 99])
    assert sorted(some.snapshots) == [0, 3]
    assert optimize(net, channel("0", 0), (1, 6, 6), steps=3, snapshots=None).snapshots == {}


def test_convergence_stops_a_saturating_objective():
    net = mean_model()  # the mean pixel: saturates when every pixel reaches 1
    res = optimize(net, channel("0", 0), (1, 6, 6), steps=500, converge={"window": 5, "rtol": 1e-6})
    assert res.converged and not res.stopped
    assert res.steps_done < 40
    assert torch.equal(res.images, torch.ones(1, 1, 6, 6))
    assert not optimize(net, channel("0", 0), (1, 6, 6), steps=10).converged


# ============================================================ precursor scan, dead maps
def test_precursor_scan_picks_the_brightest_start():
    net = mean_model()
    best, value, values = precursor_scan(net, channel("0", 0), (1, 8, 8), candidates=12, seed=6)
    cands = gray_noise((1, 8, 8), 12, seed=6)
    means = cands.mean(dim=(1, 2, 3))
    assert torch.allclose(values, means, atol=1e-6)
    i = int(means.argmax())
    assert torch.equal(best, cands[i : i + 1]) and value == pytest.approx(float(means[i]))
    kw = dict(scales=((2, 2), (8, 8)), amplitudes=(0.6, 0.1))
    best, _, values = precursor_scan(net, channel("0", 0), (1, 8, 8), candidates=5, init="multiscale", **kw)
    cands = multiscale((1, 8, 8), 5, seed=0, **kw)
    assert torch.equal(best, cands[int(cands.mean(dim=(1, 2, 3)).argmax())].unsqueeze(0))


def dead_model() -> nn.Sequential:
    """Channel 0 of layer '1' is always 0 (zero weights, negative bias, ReLU); channel 1 is 0.5."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.copy_(torch.tensor([-1.0, 0.5]))
    return net


def test_dead_map_is_detected():
    net = dead_model()
    with pytest.raises(DeadTargetError) as err:
        precursor_scan(net, channel("1", 0), (1, 8, 8), candidates=8)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "dead" in msg and "multiscale" in msg and "another channel" in msg and "'0' instead of '1'" in msg
    _, value, _ = precursor_scan(net, channel("1", 1), (1, 8, 8), candidates=3)
    assert value == pytest.approx(0.5)
    res = optimize(net, channel("1", [0, 1]), (1, 8, 8), steps=3)
    assert res.dead.tolist() == [True, False]


# ============================================================ model state, early exit, logits
def test_model_state_restored_also_after_errors(model):
    model.train()
    model.features[0].training = False
    model.classifier[4].weight.requires_grad_(False)
    flags, grads = training_flags(model), requires_grad_flags(model)
    run(model, channel("features.6", 3) + class_logit(1))
    assert training_flags(model) == flags and requires_grad_flags(model) == grads and hook_count(model) == 0
    with pytest.raises(ValueError, match=r"0\.\.127"):
        run(model, channel("features.6", 128))
    assert training_flags(model) == flags and requires_grad_flags(model) == grads and hook_count(model) == 0

    def boom(step, values, image_fn):
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        run(model, class_logit(1), callback=boom)
    assert training_flags(model) == flags and requires_grad_flags(model) == grads and hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())


def test_forward_stops_at_the_needed_layer(model):
    calls = []
    handle = private_model(model).features[3].register_forward_pre_hook(lambda m, i: calls.append(1))
    try:
        run(model, channel("features.0", 4), steps=3)
        assert calls == []
        run(model, class_logit(2), steps=3)
        assert len(calls) == 4  # 3 steps + the final evaluation
    finally:
        handle.remove()


def test_inplace_relu_does_not_change_captured_activations():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(3 * 36, 2))
    obj = channel("0", 1) + class_logit(0)
    res = optimize(net, obj, (1, 8, 8), steps=1)
    with torch.no_grad():
        x = res.initial
        ref = net[0](x)[:, 1].mean(dim=(1, 2)) + net(x.clone())[:, 0]
    assert torch.allclose(res.per_image[0], ref, atol=1e-5)  # the pre-ReLU map, not the rectified one


def test_class_objective_bypasses_a_final_softmax():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    net = nn.Sequential(body, nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="Softmax"):
        res = optimize(net, class_logit(1), (1, 4, 4), steps=2)
    with torch.no_grad():
        assert torch.allclose(res.final_values, body(res.images)[:, 1], atol=1e-6)
    assert "forward" not in vars(net[1])
    probs = class_probabilities(net, res.images)
    assert torch.allclose(probs, torch.softmax(body(res.images), dim=1).detach(), atol=1e-6)


def test_class_probabilities_on_the_demo(model):
    images = gray_noise(SHAPE, 3, seed=1)
    probs = class_probabilities(model, images, mean=(0.1307,), std=(0.3081,))
    with torch.no_grad():
        ref = torch.softmax(model((images - 0.1307) / 0.3081), dim=1)
    assert probs.shape == (3, 10) and torch.allclose(probs, ref, atol=1e-6)
    assert torch.allclose(probs.sum(dim=1), torch.ones(3))


# ============================================================ bad input
def test_bad_input_messages(model):
    with pytest.raises(ValueError, match=r"0\.\.9"):
        run(model, class_logit(10))
    with pytest.raises(ValueError, match="lr"):
        run(model, channel("features.6", 0), lr=0)
    with pytest.raises(ValueError, match="lr"):
        run(model, channel("features.6", 0), lr=-0.1)
    with pytest.raises(ValueError, match="steps"):
        run(model, channel("features.6", 0), steps=0)
    with pytest.raises(ValueError, match="Valid names"):
        run(model, channel("features.99", 0))
    with pytest.raises(ValueError, match="step_rule"):
        run(model, channel("features.6", 0), step_rule="sgd")
    with pytest.raises(ValueError, match="batch"):
        run(model, channel("features.6", [1, 2, 3]), batch=4)
    with pytest.raises(ValueError, match="display space"):
        run(model, channel("features.6", 0), init=(gray_noise(SHAPE, 1) - 0.1307) / 0.3081 * 4)
    with pytest.raises(ValueError, match="neuron"):
        run(model, channel("classifier.1", 0))
    with pytest.raises(TypeError, match="Objective"):
        optimize(model, "features.6", SHAPE)
    assert hook_count(model) == 0


def test_result_repr_is_short(model):
    res = run(model, channel("features.6", list(range(8))))
    assert isinstance(res, OIPResult)
    assert len(repr(res)) < 300 and "steps_done=5" in repr(res)


# ---------------------------------------------------------------- computing only the target channels
def _unpruned(monkeypatch):
    """Switch the channel pruning off, for a reference run."""
    import cnnwidgets.core.optimize._forward as opt_mod

    monkeypatch.setattr(opt_mod, "_pruned_conv_forward", lambda *a, **k: None)


def _odd_conv_net() -> nn.Sequential:
    """A conv target with stride, dilation, reflect padding and no bias after a normal conv."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(),
        nn.Conv2d(6, 16, 3, stride=2, padding=2, dilation=2, padding_mode="reflect", bias=False),
        nn.ReLU(), nn.Flatten(), nn.LazyLinear(3),
    )


@pytest.mark.parametrize(
    "make_objective",
    [
        lambda: channel("2", 5),
        lambda: neuron("2", 7, 1, 2),
        lambda: channel("2", [3, 9, 3]),
        lambda: channel("2", [8, 6, 7]),
        lambda: channel("2", 4) - 0.5 * neuron("2", 11),
        lambda: channel("2", 0) + channel("2", 15),
    ],
    ids=["channel", "neuron", "batch-list", "batch-run", "combined", "first-and-last"],
)
def test_pruned_target_conv_gives_the_full_layers_result(make_objective, monkeypatch):
    net = _odd_conv_net()
    net(torch.zeros(1, 2, 12, 12))  # materialize the lazy layer
    obj = make_objective()
    batch = obj.batch_size or 2
    kw = dict(batch=batch, steps=6, lr=0.05, snapshots=None, seed=4)
    fast = optimize(net, obj, (2, 12, 12), **kw)
    _unpruned(monkeypatch)
    full = optimize(net, make_objective(), (2, 12, 12), **kw)
    assert torch.allclose(fast.per_image, full.per_image, rtol=1e-5, atol=1e-6)
    assert torch.allclose(fast.images, full.images, atol=1e-5)
    assert "forward" not in net[2].__dict__  # the layer's own forward is back


def test_pruning_is_used_and_undone_even_after_an_error():
    net = _odd_conv_net()
    net(torch.zeros(1, 2, 12, 12))
    seen = []
    private_model(net)[2].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    optimize(net, channel("2", 5), (2, 12, 12), steps=1, snapshots=None)
    # only channel 5 was computed: the other maps of the target layer are exactly zero
    assert seen and all(bool((o[:, 5] != 0).any()) for o in seen)
    assert all(float(o[:, [c for c in range(16) if c != 5]].abs().max()) == 0.0 for o in seen)

    def boom(step, values, image_fn):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        optimize(net, channel("2", 5), (2, 12, 12), steps=3, snapshots=None, callback=boom)
    assert "forward" not in net[2].__dict__
    assert "forward" not in private_model(net)[2].__dict__  # nor on cnnwidgets' view
    x = torch.rand(1, 2, 12, 12)
    full = nn.functional.conv2d(nn.functional.pad(net[0](x).relu(), (2, 2, 2, 2), mode="reflect"),
                                net[2].weight, None, stride=2, dilation=2)
    assert torch.allclose(net[2](net[1](net[0](x))), full, atol=1e-6)  # and computes the full layer again


def test_pruning_skips_grouped_and_wide_targets(monkeypatch):
    import cnnwidgets.core.optimize._forward as opt_mod

    made = []
    original = opt_mod._pruned_conv_forward
    monkeypatch.setattr(opt_mod, "_pruned_conv_forward", lambda *a: made.append(original(*a)) or made[-1])
    grouped = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2))
    optimize(grouped, channel("0", 1), (4, 8, 8), steps=1, snapshots=None)
    wide = nn.Sequential(nn.Conv2d(1, 4, 3))
    optimize(wide, channel("0", [0, 1, 2]), (1, 8, 8), batch=3, steps=1, snapshots=None)
    assert made == [None, None]  # grouped: not allowed; 3 of 4 channels: not worth it


def test_other_threads_see_the_full_layer_during_a_run():
    net = _odd_conv_net()
    net(torch.zeros(1, 2, 12, 12))
    x = torch.rand(1, 2, 12, 12)
    with torch.no_grad():
        want = net[:3](x)
    got = []

    def callback(step, values, image_fn):
        if step == 0:  # the pruned forward is installed now: call the model from another thread
            t = threading.Thread(target=lambda: got.append(net[:3](x).detach()))
            t.start()
            t.join()
        return False

    optimize(net, channel("2", 5), (2, 12, 12), steps=2, snapshots=None, callback=callback)
    assert len(got) == 1 and torch.allclose(got[0], want, atol=1e-6)


# ---------------------------------------------------------------- channels-last layout for large images
class _ViewNet(nn.Module):
    """Reshapes a conv output with .view, which a channels-last tensor does not allow."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        y = self.conv(x).relu()
        return self.fc(y.view(y.shape[0], -1))


def test_channels_last_gives_the_nchw_result(monkeypatch):
    import cnnwidgets.core.optimize._forward as opt_mod

    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1))
    formats = []
    private_model(net)[0].register_forward_pre_hook(lambda m, a: formats.append(a[0].is_contiguous(memory_format=torch.channels_last)))
    kw = dict(batch=2, steps=5, lr=0.05, snapshots=None, seed=1)
    monkeypatch.setattr(opt_mod, "CHANNELS_LAST_MIN_PIXELS", 16 * 16)
    cl = optimize(net, channel("3", [1, 2]), (3, 16, 16), **kw)
    assert formats and all(formats)
    formats.clear()
    monkeypatch.setattr(opt_mod, "CHANNELS_LAST_MIN_PIXELS", 10**9)
    nchw = optimize(net, channel("3", [1, 2]), (3, 16, 16), **kw)
    assert formats and not any(formats)
    assert torch.allclose(cl.per_image, nchw.per_image, rtol=1e-4, atol=1e-5)
    assert torch.allclose(cl.images, nchw.images, atol=1e-4)


def test_a_model_that_needs_nchw_falls_back(monkeypatch):
    import cnnwidgets.core.optimize._forward as opt_mod

    net = _ViewNet()
    with pytest.raises(RuntimeError):  # the premise: .view fails on a channels-last conv output
        net(torch.rand(1, 3, 8, 8).contiguous(memory_format=torch.channels_last))
    kw = dict(steps=4, lr=0.05, snapshots=None, seed=2)
    monkeypatch.setattr(opt_mod, "CHANNELS_LAST_MIN_PIXELS", 8 * 8)
    res = optimize(net, class_logit(1), (3, 8, 8), **kw)
    monkeypatch.setattr(opt_mod, "CHANNELS_LAST_MIN_PIXELS", 10**9)
    ref = optimize(net, class_logit(1), (3, 8, 8), **kw)
    assert torch.equal(res.images, ref.images) and res.history == ref.history


def test_channel_lists_that_do_not_cover_a_layer_mean_unknown():
    custom = Objective(lambda acts, logits: acts["0"].mean(dim=(1, 2, 3)), {"0"}, channels={"other": {0}})
    assert custom.channels is None
    assert (channel("0", 1) + custom).channels is None
    assert Objective(lambda a, l: a["0"][:, 0].mean((1, 2)), {"0"}, channels={"0": None}).channels is None
    assert (channel("0", 1) - 2 * neuron("0", 3)).channels == {"0": frozenset({1, 3})}
    # so a hand-made term that reads every map is computed on the full layer
    torch.manual_seed(8)
    net = nn.Sequential(nn.Conv2d(1, 8, 3))
    obj = channel("0", 1) + custom
    res = optimize(net, obj, (1, 6, 6), steps=1, snapshots=None, seed=0)
    with torch.no_grad():
        x = res.initial
        acts = {"0": net(x)}
    assert torch.allclose(res.per_image[0], obj(acts, None), atol=1e-6)


def test_a_conv_with_fewer_filters_than_out_channels_says_so():
    net = nn.Sequential(nn.Conv2d(1, 16, 3))
    net[0].weight = nn.Parameter(net[0].weight[:8].detach().clone())
    net[0].bias = nn.Parameter(net[0].bias[:8].detach().clone())
    with pytest.raises(ValueError, match=r"channel must be in 0\.\.7"):
        optimize(net, channel("0", 10), (1, 6, 6), steps=1, snapshots=None)


def test_an_error_that_is_not_about_the_layout_is_raised_after_one_pass(monkeypatch):
    import cnnwidgets.core.optimize._forward as opt_mod

    calls = []

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            calls.append(1)
            raise RuntimeError("something else went wrong")

    monkeypatch.setattr(opt_mod, "CHANNELS_LAST_MIN_PIXELS", 8 * 8)
    with pytest.raises(RuntimeError, match="something else"):
        optimize(Broken(), channel("conv", 0), (3, 8, 8), steps=2, snapshots=None)
    assert len(calls) == 1


def test_user_transforms_and_penalties_may_work_in_place():
    torch.manual_seed(9)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())

    def brighten(img, generator=None):
        return img.mul_(1.0)  # in place, on what it is given

    def pen(img):
        return img.sub_(0.0).abs().mean(dim=(1, 2, 3)) * 0.0

    res = optimize(net, channel("0", 1), (1, 8, 8), steps=3, snapshots=None, transforms=[brighten], penalties=[pen])
    ref = optimize(net, channel("0", 1), (1, 8, 8), steps=3, snapshots=None)
    assert torch.allclose(res.images, ref.images, atol=1e-6)


def test_the_softmax_bypass_is_invisible_to_other_threads():
    torch.manual_seed(10)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Softmax(dim=1))
    x = torch.rand(1, 1, 4, 4)
    got = []

    def callback(step, values, image_fn):
        if step == 0:  # the bypass is on for the optimizing thread now
            t = threading.Thread(target=lambda: got.append(net(x).detach()))
            t.start()
            t.join()
        return False

    with pytest.warns(UserWarning, match="Softmax"):
        optimize(net, class_logit(1), (1, 4, 4), steps=2, snapshots=None, callback=callback)
    assert len(got) == 1 and torch.allclose(got[0].sum(), torch.tensor(1.0))  # probabilities there
