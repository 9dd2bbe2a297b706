"""The CAM family of :mod:`cnnwidgets.core.saliency.cam`: known answers computed with numpy from
each paper's formula on a hand-built network, agreement with pytorch-grad-cam on zoo models,
and the model left as found."""

from __future__ import annotations

import copy
import functools
import itertools
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnwidgets.core.layers import cam_layer
from cnnwidgets.core.saliency._common import collecting
from cnnwidgets.core.saliency.cam import (
    ablationcam,
    eigencam,
    gradcam,
    gradcam_plus_plus,
    hirescam,
    layercam,
    scorecam,
    xgradcam,
)

from ..conftest import hook_count, make_tiny_resnet, requires_grad_flags, training_flags
from ..peers import peer
from ..zoo import ZOO, example_input

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny convolutions: one torch thread is faster

#: The new methods, with the name their errors use.
METHODS = {
    "gradcam_plus_plus": (gradcam_plus_plus, "Grad-CAM++"),
    "xgradcam": (xgradcam, "XGrad-CAM"),
    "hirescam": (hirescam, "HiResCAM"),
    "layercam": (layercam, "Layer-CAM"),
    "scorecam": (scorecam, "Score-CAM"),
    "eigencam": (eigencam, "Eigen-CAM"),
    "ablationcam": (ablationcam, "Ablation-CAM"),
}


# ---------------------------------------------------------------- known answers
# conv 1x1 (1 -> 3 channels, fixed weights) + ReLU: A = relu(w_k x + b_k), the layer "1";
# then Flatten + Linear: S = W . A + c, so dS_t/dA = W_t (reshaped to K x h x w), which varies
# over positions and channels and takes both signs.
K, H, W = 3, 4, 5
CONV_W = np.array([1.0, -1.0, 0.5])
CONV_B = np.array([0.0, 0.2, -0.1])


def _head() -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, K * H * W, generator=g, dtype=torch.float64).numpy(), np.array([0.3, -0.2])


HEAD_W, HEAD_B = _head()


def known_net() -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(1, K, 1), nn.ReLU(), nn.Flatten(), nn.Linear(K * H * W, 2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(CONV_W).view(K, 1, 1, 1))
        net[0].bias.copy_(torch.from_numpy(CONV_B))
        net[3].weight.copy_(torch.from_numpy(HEAD_W))
        net[3].bias.copy_(torch.from_numpy(HEAD_B))
    return net.eval()


def known_input() -> torch.Tensor:
    return torch.randn(2, 1, H, W, generator=torch.Generator().manual_seed(4), dtype=torch.float64)


def np_layer(x: np.ndarray) -> np.ndarray:
    """A, N x K x h x w."""
    return np.maximum(CONV_W[None, :, None, None] * x + CONV_B[None, :, None, None], 0)


def np_head(a: np.ndarray) -> np.ndarray:
    """S, N x 2."""
    return a.reshape(len(a), -1) @ HEAD_W.T + HEAD_B


def relu(v: np.ndarray) -> np.ndarray:
    return np.maximum(v, 0)


def weighted(w: np.ndarray, a: np.ndarray) -> np.ndarray:
    """relu(sum_k w_k A_k), w N x K."""
    return relu((w[:, :, None, None] * a).sum(axis=1))


def expected_map(method: str, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The map of ``method`` from its paper's definition (the layer is at the input's
    resolution: no upsampling)."""
    a = np_layer(x)
    n = len(a)
    g = HEAD_W[t].reshape(n, K, H, W)  # dS_t/dA
    s = np_head(a)[np.arange(n), t]
    sum_a = a.sum(axis=(2, 3), keepdims=True)
    if method == "gradcam":
        return weighted(g.mean(axis=(2, 3)), a)
    if method == "gradcam_plus_plus":
        denom = 2 * g**2 + sum_a * g**3
        alpha = np.where(denom != 0, g**2 / np.where(denom != 0, denom, 1), 0)
        return weighted((alpha * relu(g)).sum(axis=(2, 3)), a)
    if method == "xgradcam":
        return weighted((a / sum_a * g).sum(axis=(2, 3)), a)
    if method == "hirescam":
        return relu((g * a).sum(axis=1))
    if method == "layercam":
        return relu((relu(g) * a).sum(axis=1))
    if method == "scorecam":
        lo, hi = a.min(axis=(2, 3), keepdims=True), a.max(axis=(2, 3), keepdims=True)
        masks = (a - lo) / (hi - lo)  # N x K x h x w, each in [0, 1]
        logits = np.array([[np_head(np_layer(x[i : i + 1] * masks[i, k]))[0, t[i]] for k in range(K)]
                           for i in range(n)])
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return weighted(e / e.sum(axis=1, keepdims=True), a)
    if method == "eigencam":
        out = []
        for ai in a:
            m = ai.reshape(K, -1).T
            m = m - m.mean(axis=0)
            p = m @ np.linalg.svd(m, full_matrices=False)[2][0]
            p = -p if abs(p.min()) > abs(p.max()) else p
            out.append(relu(p).reshape(H, W))
        return np.array(out)
    if method == "ablationcam":
        s_k = np.empty((n, K))
        for k in range(K):
            ablated = a.copy()
            ablated[:, k] = 0
            s_k[:, k] = np_head(ablated)[np.arange(n), t]
        return weighted((s[:, None] - s_k) / s[:, None], a)
    raise AssertionError(method)


@pytest.mark.parametrize("target", [0, 1, [1, 0]])
@pytest.mark.parametrize("method", list(METHODS))
def test_known_answer(method, target):
    x = known_input()
    t = np.broadcast_to(np.asarray(target), (2,))
    fn = METHODS[method][0]
    got = fn(known_net(), x, target=target, layer="1")
    assert got.shape == (2, H, W) and got.dtype == torch.float64 and not got.requires_grad
    expected = torch.from_numpy(expected_map(method, x.numpy(), t))
    assert expected.abs().max() > 0.1  # not a trivial all-zero answer
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_known_answers_tell_the_methods_apart():
    # the fixture is discriminating: a swapped formula (Layer-CAM's for HiResCAM, Grad-CAM's
    # spatial mean for XGrad-CAM, ...) fails test_known_answer
    x = known_input().numpy()
    for t in (0, 1):
        t = np.array([t, t])
        maps = {m: expected_map(m, x, t) for m in ["gradcam", *METHODS]}
        for (m1, e1), (m2, e2) in itertools.combinations(maps.items(), 2):
            assert np.abs(e1 - e2).max() > 1e-2 * max(np.abs(e1).max(), np.abs(e2).max()), (m1, m2, t)


def test_eigencam_sign_is_fixed_and_class_agnostic():
    # the sign of a singular vector is arbitrary; with the sign rule the map of -A is the map of A
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).double()
    neg = copy.deepcopy(net)
    with torch.no_grad():
        neg[0].weight.neg_()
        neg[0].bias.neg_()
    cam = eigencam(net, x, layer="0")
    assert cam.amax() > 0
    torch.testing.assert_close(eigencam(neg, x, layer="0"), cam, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(eigencam(net, x, target=1, layer="0"), cam, rtol=0, atol=0)


def test_ablationcam_zero_score_gives_a_zero_map():
    net = known_net()
    with torch.no_grad():
        net[3].weight.zero_()
        net[3].bias.zero_()
    cam = ablationcam(net, known_input(), target=0, layer="1")
    assert torch.isfinite(cam).all() and (cam == 0).all()


# ---------------------------------------------------------------- the model left as found
@pytest.mark.parametrize("method", list(METHODS))
def test_leaves_the_model_as_found(method, rgb_batch):
    fn, label = METHODS[method]
    net = make_tiny_resnet().train()
    net.fc.weight.requires_grad_(False)
    calls = []
    net.layer2.register_forward_hook(lambda *_: calls.append(1))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    before = training_flags(net), requires_grad_flags(net), hook_count(net)
    cam = fn(net, rgb_batch, target=[1, 3])
    assert cam.shape == (2, 8, 8) and (cam >= 0).all() and (cam.amax(dim=(1, 2)) > 0).all() and not cam.requires_grad
    with pytest.raises(ValueError, match=rf"{re.escape(label)} needs a layer with a spatial output N x K x h x w; "
                                         r"layer 'fc' outputs shape \(2, 5\)"):
        fn(net, rgb_batch, target=0, layer="fc")
    assert (training_flags(net), requires_grad_flags(net), hook_count(net)) == before
    assert calls == []  # the user's hook is theirs: cnnwidgets runs its private view
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())  # BN statistics too
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("method", list(METHODS))
def test_default_layer_is_cam_layer(method, tiny_resnet, rgb_batch):
    fn = METHODS[method][0]
    with collecting() as found:
        default = fn(tiny_resnet, rgb_batch, target=1)
    assert (default.amax(dim=(1, 2)) > 0).all()
    assert found["layer"] == cam_layer(tiny_resnet, rgb_batch) == "layer2.0"
    torch.testing.assert_close(default, fn(tiny_resnet, rgb_batch, target=1, layer="layer2.0"), rtol=0, atol=0)


@pytest.mark.parametrize("method", list(METHODS))
def test_a_module_called_twice_is_read_at_its_last_call(method, tiny_resnet, rgb_batch):
    # layer2.0.relu runs twice in its block; its last call's output is the block's output (for
    # Ablation-CAM: only that call is ablated)
    fn = METHODS[method][0]
    block = fn(tiny_resnet, rgb_batch, target=[1, 3], layer="layer2.0")
    assert (block.amax(dim=(1, 2)) > 0).all()
    torch.testing.assert_close(fn(tiny_resnet, rgb_batch, target=[1, 3], layer="layer2.0.relu"), block,
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_batch_size_does_not_change_the_map(method, batch_size, tiny_resnet, rgb_batch):
    fn = METHODS[method][0]  # 2 images x 8 channels: batches of 3 leave a last batch of 1
    full = fn(tiny_resnet, rgb_batch, target=[4, 1])
    assert (full.amax(dim=(1, 2)) > 0).all()
    torch.testing.assert_close(fn(tiny_resnet, rgb_batch, target=[4, 1], batch_size=batch_size), full,
                               rtol=1e-5, atol=1e-6)


def test_batch_size_is_checked(tiny_resnet, rgb_batch):
    for method in ("scorecam", "ablationcam"):
        with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
            METHODS[method][0](tiny_resnet, rgb_batch, batch_size=0)
        with pytest.raises(TypeError, match="batch_size must be an int"):
            METHODS[method][0](tiny_resnet, rgb_batch, batch_size=2.5)


def test_target_out_of_range_is_refused(tiny_resnet, rgb_batch):
    for method in ("gradcam_plus_plus", "scorecam", "ablationcam"):
        with pytest.raises(ValueError, match=r"target must be in 0\.\.4"):
            METHODS[method][0](tiny_resnet, rgb_batch, target=5)


# ---------------------------------------------------------------- agreement with pytorch-grad-cam
class _HalfPixelUpsampling(nn.Module):
    """``nn.UpsamplingBilinear2d(size)`` with ``align_corners=False``, as cnnwidgets upsamples."""

    def __init__(self, size) -> None:
        super().__init__()
        self.size = size

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, size=self.size, mode="bilinear", align_corners=False)


@pytest.fixture
def pgc(monkeypatch):
    """pytorch-grad-cam, with its maps returned raw: after its ReLU, at the layer's resolution,
    not min-max normalized nor resized (``scale_cam_image`` is the identity)."""
    lib = peer("pytorch_grad_cam")
    import pytorch_grad_cam.base_cam as base_cam

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: np.float32(cam))
    return lib


#: (model, layer, whether the layer's output has negative values)
CASES = [
    ("resnet", "layer4", False),  # 2 x 2, after the block's ReLU
    ("densenet", "features.transition1.relu", False),  # 16 x 16
    ("densenet", "features.denseblock2", True),  # 8 x 8, a concatenation of conv outputs
    ("mobilenet_v3", "features.3.block.1", False),  # 8 x 8, ReLU
    ("mobilenet_v3", "features.6", True),  # 4 x 4, Hardswish (the default CAM layer's output)
    ("mnist", "features.7", False),  # 3 x 3, the demo MNIST CNN's last ReLU
]

PGC_CLASSES = {
    "gradcam_plus_plus": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
    "eigencam": "EigenCAM",
    "ablationcam": "AblationCAM",
}


@functools.lru_cache(maxsize=None)
def zoo_case(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, 2 x C x H x W input, predicted classes); nothing here changes the model."""
    if name == "mnist":
        import cnnwidgets.demo

        demo = cnnwidgets.demo.mnist("val")
        model, x = demo.model, demo.images[:2].clone().float()
    else:
        model, x = ZOO[name](), example_input(name)
    with torch.no_grad():
        return model, x, model(x).argmax(dim=1)


def peer_map(pgc, cls: str, model: nn.Module, x: torch.Tensor, layer: str, targets: torch.Tensor, **kwargs):
    """pytorch-grad-cam's raw map (on a copy of the model: it adds hooks and sets eval mode),
    upsampled as cnnwidgets upsamples its maps."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    m = copy.deepcopy(model)
    with getattr(pgc, cls)(model=m, target_layers=[m.get_submodule(layer)], **kwargs) as cam:
        raw = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return F.interpolate(torch.from_numpy(raw)[:, None], size=tuple(x.shape[-2:]), mode="bilinear",
                         align_corners=False)[:, 0]


def assert_same_map(got: torch.Tensor, ref: torch.Tensor, rel: float) -> None:
    """Equal up to ``rel`` times the largest value of ``ref`` (float32 on both sides)."""
    assert ref.amax() > 0
    torch.testing.assert_close(got, ref, rtol=0, atol=rel * float(ref.abs().max()))


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])


def scaled_logits(model: nn.Module, factor: float) -> nn.Module:
    """A copy of ``model`` whose last Linear layer's weights and bias are multiplied by ``factor``."""
    m = copy.deepcopy(model)
    last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(factor)
        last.bias.mul_(factor)
    return m


@pytest.mark.parametrize("method", list(PGC_CLASSES))
@pytest.mark.parametrize("name, layer, negative", CASES, ids=[f"{n}-{lay}" for n, lay, _ in CASES])
def test_agrees_with_pytorch_grad_cam(pgc, monkeypatch, name, layer, negative, method):
    model, x, t = zoo_case(name)
    fn, cls = METHODS[method][0], PGC_CLASSES[method]
    got = fn(model, x, target=t, layer=layer)
    kwargs = {}
    if method == "gradcam_plus_plus":
        # pytorch-grad-cam adds 1e-6 to alpha's denominator 2 g^2 + sum(A) g^3, which matters
        # where g^2 is not much larger than 1e-6 (seen here: up to 0.8% of the map's maximum);
        # with the logits scaled by 100 that term is negligible and the maps agree closely
        ref = peer_map(pgc, cls, model, x, layer, t)
        assert_same_map(got, ref, 5e-2)
        assert min(pearson(got[i], ref[i]) for i in range(2)) > 0.999  # seen: >= 0.99998
        model = scaled_logits(model, 100.0)
        got = fn(model, x, target=t, layer=layer)
        assert_same_map(got, peer_map(pgc, cls, model, x, layer, t), 1e-3)  # seen: <= 7.2e-5
        return
    if method == "scorecam":
        # pytorch-grad-cam upsamples the masks with align_corners=True (nn.UpsamplingBilinear2d);
        # cnnwidgets, as the Score-CAM authors' code, with align_corners=False
        import pytorch_grad_cam.score_cam as score_cam

        monkeypatch.setattr(score_cam.torch.nn, "UpsamplingBilinear2d", _HalfPixelUpsampling)
    if method == "eigencam":
        # pytorch-grad-cam's EigenCAM keeps the sign the SVD returns: its map is ours, or the
        # ReLU of the negated projection; with its own sign correction it is ours
        import pytorch_grad_cam.eigen_cam as eigen_cam
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction as corrected

        plain = peer_map(pgc, cls, model, x, layer, t)
        monkeypatch.setattr(eigen_cam, "get_2d_projection", lambda a: -corrected(a))
        flipped = peer_map(pgc, cls, model, x, layer, t)
        for i in range(2):
            assert torch.allclose(plain[i], got[i], atol=1e-4 * float(got[i].max())) or torch.allclose(
                plain[i], flipped[i], atol=1e-4 * float(flipped[i].max()))
        monkeypatch.setattr(eigen_cam, "get_2d_projection", corrected)
    if method == "ablationcam" and negative:
        # pytorch-grad-cam zeroes a channel only when the layer's minimum is 0 (else it uses that
        # minimum - 1e7); its ablation_layer option takes one that always zeroes, as the paper
        from pytorch_grad_cam.ablation_layer import AblationLayer

        class Zeroing(AblationLayer):
            def __call__(self, _x):
                out = self.activations
                for i in range(out.size(0)):
                    out[i, self.indices[i], :] = 0
                return out

        kwargs["ablation_layer"] = Zeroing()
    assert_same_map(got, peer_map(pgc, cls, model, x, layer, t, **kwargs), 1e-4)  # seen: <= 2.1e-6
