"""cnnwidgets.core.optimize against lucent's definitions, without lucent installed.

The Fourier parameterization is meant to be lucent's ``param.image(..., fft=True)``: the
references below transcribe lucent 0.1.8's ``lucent/optvis/param/spatial.py`` (``rfft2d_freqs``,
``fft_image``) and ``color.py`` (``_linear_decorrelate_color``, ``to_valid_rgb``) in numpy /
torch, and :func:`diversity` its ``objectives.diversity``. The known answers on the demo CNN
are this project's own runs (the benchmark "oip_lucent" of tests/bench/run.py compares with lucent itself).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnwidgets.core.optimize import (
    Objective,
    channel,
    diversity,
    fourier_param,
    jitter,
    optimize,
)
from cnnwidgets.core.optimize.param import _spectrum_scale

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small passes: one intra-op thread

SHAPE = (1, 28, 28)


# ------------------------------------------------------------ lucent's definitions, transcribed
def lucent_rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """lucent.optvis.param.spatial.rfft2d_freqs (one extra column when w is odd)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 2] if w % 2 == 1 else np.fft.fftfreq(w)[: w // 2 + 1]
    return np.sqrt(fx * fx + fy * fy)


def lucent_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """The ``scale`` array of lucent's fft_image."""
    return 1.0 / np.maximum(lucent_rfft2d_freqs(h, w), 1.0 / max(w, h)) ** decay_power


#: lucent.optvis.param.color.color_correlation_normalized
LUCENT_COLOR = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype="float32")
LUCENT_COLOR = LUCENT_COLOR / np.max(np.linalg.norm(LUCENT_COLOR, axis=0))


def lucent_image(spectrum: torch.Tensor, h: int, w: int, decorrelate: bool) -> torch.Tensor:
    """to_valid_rgb(fft_image(...)) of lucent: sigmoid(decorrelate(irfftn(scale * spectrum) / 4))."""
    scale = torch.tensor(lucent_scale(h, w)).float()[None, None, ..., None]
    image = torch.fft.irfftn(torch.view_as_complex(scale * spectrum), s=(h, w), norm="ortho") / 4.0
    if decorrelate:
        image = torch.matmul(image.permute(0, 2, 3, 1), torch.tensor(LUCENT_COLOR.T)).permute(0, 3, 1, 2)
    return torch.sigmoid(image)


def lucent_diversity(acts: torch.Tensor) -> torch.Tensor:
    """lucent.optvis.objectives.diversity's value for a B x K x h x w activation (a scalar)."""
    batch, channels = acts.shape[:2]
    flattened = acts.view(batch, channels, -1)
    grams = F.normalize(torch.matmul(flattened, torch.transpose(flattened, 1, 2)), p=2, dim=(1, 2))
    return -sum(sum((grams[i] * grams[j]).sum() for j in range(batch) if j != i) for i in range(batch)) / batch


# ------------------------------------------------------------ the Fourier parameterization
@pytest.mark.parametrize("h, w", [(28, 28), (10, 12), (7, 5), (9, 16), (128, 128), (1, 1)])
def test_spectrum_scale_is_lucents_formula(h, w):
    """1 / max(f, 1 / max(h, w)): no factor sqrt(h * w) (the orthonormal FFT needs none)."""
    ref = lucent_scale(h, w)[:, : w // 2 + 1]  # lucent's extra column for odd w is never read
    ours = _spectrum_scale(h, w)
    assert ours.shape == (h, w // 2 + 1)
    assert torch.allclose(ours, torch.tensor(ref).float(), rtol=1e-6, atol=0)
    assert torch.allclose(_spectrum_scale(h, w, 2.0), torch.tensor(lucent_scale(h, w, 2.0)[:, : w // 2 + 1]).float(),
                          rtol=1e-6, atol=0)
    assert float(ours.max()) == pytest.approx(max(h, w))  # the DC term


@pytest.mark.parametrize("c, h, w", [(1, 28, 28), (3, 10, 12), (1, 7, 5), (3, 9, 9)])
def test_fourier_image_is_lucents_image(c, h, w):
    """The same spectrum gives lucent's image (colour decorrelated for 3 channels)."""
    params, image_fn = fourier_param((c, h, w), batch=2, seed=3)
    g = torch.Generator().manual_seed(1)
    spectrum = torch.randn(2, c, h, w // 2 + 1, 2, generator=g) * 0.5
    with torch.no_grad():
        params[0].copy_(spectrum)
    theirs = spectrum
    if w % 2 == 1:  # lucent's spectrum has one more column, which irfftn(s=(h, w)) drops
        theirs = torch.cat([spectrum, torch.randn(2, c, h, 1, 2, generator=g)], dim=3)
    ref = lucent_image(theirs, h, w, decorrelate=c == 3)
    assert torch.allclose(image_fn(), ref, atol=1e-6)


def test_fourier_start_is_lucents_start():
    """sd = 0.01 noise drawn like lucent's torch.randn after torch.manual_seed(seed): the same
    starting spectrum, so runs with the same transforms follow lucent's step for step."""
    for seed in (0, 7):
        params, image_fn = fourier_param(SHAPE, batch=2, seed=seed)
        torch.manual_seed(seed)
        ref = torch.randn(2, 1, 28, 15, 2) * 0.01
        assert torch.equal(params[0].detach(), ref)
        # lucent's start: gray within 0.013 here (it was 0.3 with the sqrt(h * w) too steep scale)
        assert float((image_fn().detach() - 0.5).abs().max()) < 0.03


def test_a_unit_dc_coefficient_gives_the_known_gray():
    """Known answer that pins the overall scale: DC coefficient 1 (real part) -> every pixel
    logit is max(h, w) / sqrt(h * w) / 4 (0.25 at 28 x 28; it was 28 times that, 7.0, when the
    scale was multiplied by sqrt(h * w) on top of the orthonormal FFT)."""
    for h, w in [(28, 28), (8, 32)]:
        params, image_fn = fourier_param((1, h, w))
        with torch.no_grad():
            params[0].zero_()
            params[0][0, 0, 0, 0, 0] = 1.0
        want = torch.sigmoid(torch.tensor(max(h, w) / math.sqrt(h * w) / 4))
        assert torch.allclose(image_fn(), want.expand(1, 1, h, w), atol=1e-6)


def test_decay_power_zero_scales_every_frequency_alike():
    assert torch.equal(_spectrum_scale(6, 8, 0.0), torch.ones(6, 5))
    with pytest.raises(ValueError):
        fourier_param((1, 6, 8), decay_power=-1.0)


def test_lucent_recipe_known_answer_on_the_demo(demo):
    """Lucent's recipe (Fourier image, Adam at 0.05, jitter, 128 steps) on the 8 first channels
    of features.6, as one batch: the mean objective of the final images is 10.89 here (seed 0;
    10.74 and 10.82 for seeds 1 and 2). Lucent's render_vis gives 11.18 / 10.91 / 11.03 (seeds
    0-2, its own jitter(2), which moves by 0..1 pixel where ours moves by -2..2); with the same
    transform on both sides the two are equal (the benchmark "oip_lucent" of tests/bench/run.py). Before the
    spectrum scale was fixed this run gave 9.83 (8.93..9.83 over the seeds); the margin holds
    the floating-point drift of another CPU."""
    chans = list(range(8))
    res = optimize(demo.model, channel("features.6", chans), SHAPE, steps=128, lr=0.05, step_rule="adam",
                   param="fourier", transforms=[jitter(2)], mean=demo.mean, std=demo.std, seed=0, snapshots=None)
    with torch.no_grad():
        acts = demo.model.features[:7]((res.images - demo.mean[0]) / demo.std[0])
    scored = acts[torch.arange(8), chans].mean(dim=(1, 2))  # one scoring function, as for lucent's images
    assert torch.allclose(scored, res.final_values, atol=1e-4)
    assert float(scored.mean()) >= 10.3
    assert bool((scored > 3.0).all())  # every channel well up (random images: -8 .. +8)


# ------------------------------------------------------------ diversity
def test_diversity_matches_lucents_value():
    g = torch.Generator().manual_seed(0)
    for b, k in [(4, 3), (2, 5), (3, 1)]:
        acts = torch.relu(torch.randn(b, k, 4, 5, generator=g))
        ours = diversity("x")({"x": acts}, None)
        assert ours.shape == (b,)
        assert float(ours.mean()) == pytest.approx(float(lucent_diversity(acts)), rel=1e-5)
        # image i: minus its cosine similarity to every other image's normalized Gram matrix
        flat = acts.reshape(b, k, -1)
        grams = [(f @ f.T) / (f @ f.T).norm() for f in flat]
        for i in range(b):
            want = -sum(float((grams[i] * grams[j]).sum()) for j in range(b) if j != i)
            assert float(ours[i]) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_diversity_known_cases():
    same = torch.ones(3, 2, 2, 2)
    assert torch.allclose(diversity("x")({"x": same}, None), torch.full((3,), -2.0))  # identical: -(B - 1)
    apart = torch.zeros(2, 2, 1, 1)
    apart[0, 0] = apart[1, 1] = 1.0  # orthogonal Gram matrices
    assert torch.equal(diversity("x")({"x": apart}, None), torch.zeros(2))
    assert torch.equal(diversity("x")({"x": torch.rand(1, 4, 3, 3)}, None), torch.zeros(1))  # nothing to differ from
    with pytest.raises(ValueError, match="4-D"):
        diversity("fc")({"fc": torch.rand(2, 3)}, None)
    with pytest.raises(TypeError):
        diversity(3)


def test_diversity_composes_with_channel():
    obj = channel("c", 1) + 2.0 * diversity("d")
    assert isinstance(obj, Objective) and obj.layers == {"c", "d"} and not obj.needs_logits
    assert obj.name == "c:1 + 2 * diversity:d"
    assert obj.channels is None  # diversity reads every channel: no pruned convolution
    acts = {"c": torch.rand(3, 2, 4, 4), "d": torch.rand(3, 5, 2, 2)}
    want = channel("c", 1)(acts, None) + 2.0 * diversity("d")(acts, None)
    assert torch.allclose(obj(acts, None), want)
    assert (channel("c", [0, 1, 0]) + diversity("d")).batch_size == 3


def _mean_pairwise_correlation(images: torch.Tensor) -> float:
    x = images.flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    x = x / x.norm(dim=1, keepdim=True)
    c = x @ x.T
    n = x.shape[0]
    return float((c.sum() - c.diagonal().sum()) / (n * (n - 1)))


def test_diversity_gives_four_different_patterns_for_one_channel(demo):
    """One batched run, 4 images of channel 15 of features.6, with and without diversity on
    features.7 (its ReLU). Measured here (seed 0): mean pairwise pixel correlation 0.66
    without, 0.37 with (seeds 1, 2: 0.60 / 0.34, 0.67 / 0.37); the weakest of the 4 images
    with diversity reaches 4.4 (plain: 8.5) where random images reach at most -6.7."""
    kw = dict(batch=4, steps=128, lr=0.05, step_rule="adam", param="fourier", transforms=[jitter(2)],
              mean=demo.mean, std=demo.std, seed=0, snapshots=None)
    plain = optimize(demo.model, channel("features.6", 15), SHAPE, **kw)
    varied = optimize(demo.model, channel("features.6", 15) + 1.0 * diversity("features.7"), SHAPE, **kw)

    def act(images):
        with torch.no_grad():
            return demo.model.features[:7]((images - demo.mean[0]) / demo.std[0])[:, 15].mean(dim=(1, 2))

    r_plain, r_varied = _mean_pairwise_correlation(plain.images), _mean_pairwise_correlation(varied.images)
    assert r_varied < r_plain - 0.15, (r_plain, r_varied)
    random_max = float(act(torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(0))).max())
    assert bool((act(varied.images) > random_max + 6.0).all()), (act(varied.images), random_max)
    # and the Gram matrices (what diversity measures) did move apart
    def div_value(images):
        with torch.no_grad():
            a = torch.relu(demo.model.features[:7]((images - demo.mean[0]) / demo.std[0]))
        return float(diversity("x")({"x": a}, None).mean())

    assert div_value(varied.images) > div_value(plain.images) + 0.3
    assert not any(torch.allclose(a, b, atol=0.05) for a, b in itertools.combinations(varied.images, 2))
