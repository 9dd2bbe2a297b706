"""Layer-wise Relevance Propagation (cnnwidgets.core.saliency.lrp): known answers computed by hand,
conservation, agreement with zennit 0.5.1, and the user's model left as it was found."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import cnnwidgets
from cnnwidgets.core.runner import private_model
from cnnwidgets.core.saliency._common import collecting
from cnnwidgets.core.saliency.lrp import LRP_RULES, lrp
from tests.conftest import hook_count, requires_grad_flags, training_flags
from tests.zoo import ZOO, example_input


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on two shared cores, two threads mostly wait for each other (these nets are tiny)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- 1. known answers, by hand in numpy
W1 = np.array([[1.0, -2.0, 0.5], [0.3, 0.8, -1.0], [-0.7, 0.2, 0.9], [1.5, -0.4, 0.6]])
B1 = np.array([0.1, -0.2, 0.05, -0.3])
W2 = np.array([[0.6, -1.1, 0.9, 0.4], [-0.5, 0.7, 1.2, -0.8]])
B2 = np.array([0.2, -0.1])


def _two_layer_net() -> nn.Module:
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for lin, w, b in ((net[1], W1, B1), (net[3], W2, B2)):
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
    return net


def _stab(d: np.ndarray, eps: float) -> np.ndarray:
    return d + eps * np.where(d >= 0, 1.0, -1.0)


def _hand_layer(x: np.ndarray, w: np.ndarray, b: np.ndarray, r: np.ndarray, rule: str, eps: float,
                gamma: float = 0.25, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """One dense layer's rule written from the contributions c_ji = x_i w_ji (outputs j, inputs i)."""
    c = w * x[None, :]
    z = c.sum(1) + b
    if rule == "epsilon":
        return (c / _stab(z, eps)[:, None] * r[:, None]).sum(0)
    if rule == "alpha_beta":
        cp, cn = c.clip(min=0), c.clip(max=0)
        dp, dn = cp.sum(1) + b.clip(min=0), cn.sum(1) + b.clip(max=0)
        return (alpha * cp / _stab(dp, eps)[:, None] - beta * cn / _stab(dn, eps)[:, None]).T @ r
    assert rule == "gamma" and (x >= 0).all()  # the original gamma rule: positive inputs
    out = np.zeros_like(x)
    for j in range(len(z)):
        if z[j] == 0:
            continue
        part = np.clip(w[j], 0, None) if z[j] > 0 else np.clip(w[j], None, 0)
        bpart = max(b[j], 0.0) if z[j] > 0 else min(b[j], 0.0)
        num = x * (w[j] + gamma * part)
        out += num / _stab(np.array(num.sum() + b[j] + gamma * bpart), eps) * r[j]
    return out


def _hand_lrp(x: np.ndarray, target: int, rule: str, eps: float, **kw) -> np.ndarray:
    a1 = np.maximum(W1 @ x + B1, 0)  # ReLU: the relevance of a unit passes to its input
    z2 = W2 @ a1 + B2
    r2 = np.zeros(2)
    r2[target] = z2[target]
    r1 = _hand_layer(a1, W2, B2, r2, rule, eps, **kw)
    return _hand_layer(x, W1, B1, r1, rule, eps, **kw)


@pytest.mark.parametrize("rule, kw", [
    ("epsilon", dict(epsilon=1e-6)),
    ("epsilon", dict(epsilon=0.5)),
    ("alpha_beta", dict(alpha=1.0, beta=0.0)),
    ("alpha_beta", dict(alpha=2.0, beta=1.0)),
    ("gamma", dict(gamma=0.25)),
])
def test_known_answer_two_layer_net(rule, kw):
    net = _two_layer_net()
    xs = np.array([[0.9, 0.4, 1.3], [0.2, 1.7, 0.6]])
    if rule != "gamma":  # the epsilon and alpha-beta formulas hold for inputs of either sign
        xs = np.vstack([xs, [[-0.8, 0.5, 1.1]]])
    x = torch.from_numpy(xs).view(-1, 3, 1, 1)
    hand_kw = {"epsilon": {}, "alpha_beta": dict(alpha=kw.get("alpha"), beta=kw.get("beta")),
               "gamma": dict(gamma=kw.get("gamma"))}[rule]
    for target in (0, 1):
        rel = lrp(net, x, target, rule=rule, **kw)
        assert rel.shape == x.shape and rel.dtype == torch.float64 and not rel.requires_grad
        want = np.stack([_hand_lrp(xi, target, rule, kw.get("epsilon", 1e-6), **hand_kw) for xi in xs])
        np.testing.assert_allclose(rel.view(len(xs), 3).numpy(), want, rtol=1e-10, atol=1e-12)


def test_zplus_is_alpha_one_beta_zero():
    net = _two_layer_net()
    x = torch.tensor([[0.9, -0.4, 1.3]], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(lrp(net, x, 1, rule="zplus"), lrp(net, x, 1, rule="alpha_beta", alpha=1, beta=0),
                               rtol=0, atol=0)


# ---------------------------------------------------------------- 2. conservation
def _plain_cnn(bias: bool, seed: int = 0) -> nn.Module:
    """conv-BN-ReLU-maxpool-conv-ReLU-avgpool-flatten-linear for 3 x 16 x 16 inputs."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=bias), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=bias), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(16 * 4 * 4, 5, bias=bias),
    ).eval()
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.normal_(0, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0, 0.3)
        if not bias:
            _zero_shifts(net)
    return net


def _zero_shifts(model: nn.Module) -> None:
    """Biases absorb relevance: make every layer's shift zero (BatchNorm: beta = mean * gamma /
    sqrt(var + eps), so the folded layer has no bias), keeping the rest of the network."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.bias.copy_(m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps))
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.zero_()


def _assert_conserved(rel: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, rtol: float = 0.01) -> None:
    sums = rel.flatten(1).sum(1).double()
    want = logits.detach().gather(1, targets.view(-1, 1))[:, 0].double()
    assert (sums - want).abs().max() <= rtol * want.abs().min(), (sums, want)


@pytest.mark.parametrize("first_rule", [None, "zbox", "flat"])
def test_conservation_on_a_plain_cnn_without_biases(first_rule):
    # bias-free layers (and zero BatchNorm shifts): nothing absorbs relevance, so the input
    # relevance sums to the explained logit (epsilon 1e-6 takes a negligible share)
    net = _plain_cnn(bias=False)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    logits = net(x)
    targets = logits.argmax(1)
    with collecting() as found:
        rel = lrp(net, x, rule="epsilon", epsilon=1e-6, first_rule=first_rule)
    _assert_conserved(rel, logits, targets, rtol=0.01)
    report = found["rule"]
    assert report.folded == 1 and report.affine == 0 and report.layers == {"convolution": 2, "linear": 1}
    assert report.first_found is (first_rule is not None)
    torch.testing.assert_close(report.conservation.double(), (rel.flatten(1).sum(1) / logits.gather(
        1, targets.view(-1, 1))[:, 0]).detach().double())


def test_biases_absorb_relevance_and_epsilon_too():
    net = _plain_cnn(bias=True)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    logits = net(x)
    targets = logits.argmax(1)
    score = logits.gather(1, targets.view(-1, 1))[:, 0].detach()
    sums = lrp(net, x).flatten(1).sum(1)
    assert (sums - score).abs().max() > 0.01 * score.abs().min()  # biases took a share
    # a large epsilon keeps relevance back in every layer: the input gets less of it
    free = _plain_cnn(bias=False)
    small, large = (lrp(free, x, rule="epsilon", epsilon=e).flatten(1).sum(1).abs() for e in (1e-6, 10.0))
    assert (large < 0.9 * small).all()


def test_conservation_on_the_demo_cnn_without_biases():
    # the demo CNN has biases (they take a share); its bias-free copy must conserve
    d = cnnwidgets.demo.mnist("val")
    model = copy.deepcopy(d.model)
    _zero_shifts(model)
    x = d.images[:8]
    logits = model(x)
    _assert_conserved(lrp(model, x), logits, logits.argmax(1))


# ---------------------------------------------------------------- 3. agreement with zennit
def _zennit():
    from tests.peers import peer

    zennit = peer("zennit")
    import zennit.attribution
    import zennit.canonizers
    import zennit.composites
    import zennit.rules
    import zennit.types

    return zennit


def _zennit_lrp(model: nn.Module, x: torch.Tensor, target: int, rule, first=None) -> torch.Tensor:
    """zennit's relevance with ``rule`` on every conv and linear layer (``first`` on the first),
    ReLU and BatchNorm ``Pass``, average pooling ``Norm``; BatchNorm merged into the layer before
    (``SequentialMergeBatchNorm``). On a copy: zennit changes the parameters while it runs."""
    zennit = _zennit()
    zt, zr = zennit.types, zennit.rules

    class ExactMerge(zennit.canonizers.SequentialMergeBatchNorm):
        # zennit's merge leaves the BatchNorm computing x / sqrt(1 + eps) (running_var = 1, eps
        # kept): with eps = 0 it is the identity, as a folded BatchNorm is
        @staticmethod
        def merge_batch_norm(modules, batch_norm):
            zennit.canonizers.SequentialMergeBatchNorm.merge_batch_norm(modules, batch_norm)
            batch_norm.eps = 0.0

    net = copy.deepcopy(model)
    # our average pooling has no stabilizer (it is the plain gradient); zennit's Norm gets a tiny one
    layer_map = [(zt.Activation, zr.Pass()), (zt.BatchNorm, zr.Pass()), (zt.AvgPool, zr.Norm(stabilizer=1e-12)),
                 (zt.Linear, rule)]
    if first is None:
        composite = zennit.composites.LayerMapComposite(layer_map=layer_map, canonizers=[ExactMerge()])
    else:
        composite = zennit.composites.SpecialFirstLayerMapComposite(
            layer_map=layer_map, first_map=[(zt.Linear, first)], canonizers=[ExactMerge()])
    with zennit.attribution.Gradient(net, composite) as attributor:
        _, rel = attributor(x, lambda out: torch.eye(out.shape[1], dtype=out.dtype)[[target] * out.shape[0]] * out)
    return rel


class _VGGish(nn.Sequential):
    """A small VGG-like CNN with BatchNorm after the convolutions and after a linear layer."""

    def __init__(self) -> None:
        torch.manual_seed(3)
        super().__init__(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 6),
        )
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.normal_(0, 0.2)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.normal_(1.0, 0.3)  # a few negative scales too
                    m.bias.normal_(0, 0.2)
        self.eval()


_ZENNIT_CASES = [
    ("epsilon", dict(rule="epsilon", epsilon=1e-6), lambda zr: zr.Epsilon(epsilon=1e-6)),
    ("epsilon 0.25", dict(rule="epsilon", epsilon=0.25), lambda zr: zr.Epsilon(epsilon=0.25)),
    ("gamma", dict(rule="gamma", gamma=0.25), lambda zr: zr.Gamma(gamma=0.25, stabilizer=1e-6)),
    ("alpha1beta0", dict(rule="alpha_beta", alpha=1, beta=0), lambda zr: zr.AlphaBeta(alpha=1, beta=0)),
    ("alpha2beta1", dict(rule="alpha_beta", alpha=2, beta=1), lambda zr: zr.AlphaBeta(alpha=2, beta=1)),
    ("zplus", dict(rule="zplus"), lambda zr: zr.ZPlus()),
]


def _agree(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    # float64 on both sides: the two agree to ~1e-13 relative; the margin covers any x86-64 CPU
    assert ours.dtype == theirs.dtype == torch.float64
    scale = float(theirs.abs().max())
    assert scale > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9 * scale)


@pytest.mark.parametrize("case", _ZENNIT_CASES, ids=[c[0] for c in _ZENNIT_CASES])
def test_agrees_with_zennit_on_the_demo_cnn(case):
    _, ours_kw, make = case
    zr = _zennit().rules
    d = cnnwidgets.demo.mnist("val")
    model = copy.deepcopy(d.model).double()
    x = d.images[:6].double()
    for target in (3, 7):
        _agree(lrp(model, x, target, **ours_kw), _zennit_lrp(model, x, target, make(zr)))


@pytest.mark.parametrize("case", _ZENNIT_CASES, ids=[c[0] for c in _ZENNIT_CASES])
def test_agrees_with_zennit_on_a_vgg_like_cnn_with_batchnorm(case):
    _, ours_kw, make = case
    zr = _zennit().rules
    model = _VGGish().double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    _agree(lrp(model, x, 2, **ours_kw), _zennit_lrp(model, x, 2, make(zr)))


@pytest.mark.parametrize("first", ["zbox", "flat"])
def test_first_rules_agree_with_zennit(first):
    zr = _zennit().rules
    model = _VGGish().double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    lo, hi = torch.tensor([-3.0, -2.5, -3.5], dtype=torch.float64), torch.tensor([3.0, 3.5, 2.5], dtype=torch.float64)
    x = torch.maximum(torch.minimum(x, hi.view(1, 3, 1, 1)), lo.view(1, 3, 1, 1))
    if first == "zbox":
        ours = lrp(model, x, 1, rule="gamma", first_rule="zbox", bounds=(lo, hi))
        theirs = _zennit_lrp(model, x, 1, zr.Gamma(gamma=0.25), zr.ZBox(low=lo.view(1, 3, 1, 1),
                                                                        high=hi.view(1, 3, 1, 1)))
    else:
        ours = lrp(model, x, 1, rule="epsilon", first_rule="flat")
        theirs = _zennit_lrp(model, x, 1, zr.Epsilon(), zr.Flat())
    _agree(ours, theirs)


def test_float32_demo_agrees_with_zennit_closely():
    # float32, as users run it: the same map up to rounding
    zr = _zennit().rules
    d = cnnwidgets.demo.mnist("val")
    x = d.images[:8]
    ours = lrp(d.model, x, 5).flatten().double()
    theirs = _zennit_lrp(d.model, x, 5, zr.Epsilon()).flatten().double()
    assert float(torch.corrcoef(torch.stack([ours, theirs]))[0, 1]) >= 0.9999


# ---------------------------------------------------------------- 4. the model left as found; real families
def test_the_model_is_left_as_found():
    net = _plain_cnn(bias=True).train()
    net[4].weight.requires_grad_(False)  # a mix of flags, kept as they are
    fired = []
    handle = net[4].register_forward_hook(lambda *_: fired.append(1))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    flags, grads, hooks = training_flags(net), requires_grad_flags(net), hook_count(net)
    x = torch.randn(2, 3, 16, 16)
    try:
        for rule in LRP_RULES:
            lrp(net, x, 1, rule=rule)
        lrp(net, x, 1, rule="gamma", first_rule="zbox")
        assert fired == []  # the user's hooks never fire: a private view runs
        assert training_flags(net) == flags and requires_grad_flags(net) == grads and hook_count(net) == hooks
        assert all(p.grad is None for p in net.parameters())
        after = net.state_dict()
        assert after.keys() == state.keys()
        for k, v in state.items():  # weights, BatchNorm statistics and num_batches_tracked
            assert torch.equal(after[k], v), k
        assert hook_count(private_model(net)) == 0
    finally:
        handle.remove()


@pytest.mark.parametrize("name, folded, alone", [("resnet", 20, 0), ("densenet", 7, 8)])
def test_resnet_and_densenet(name, folded, alone):
    # residual additions (out += identity) and concatenation pass relevance on: with zero shifts
    # the input relevance still sums to the logit; densenet's BatchNorms after a torch.cat are
    # affine layers of their own
    model = ZOO[name]()
    _zero_shifts(model)
    x = example_input(name, size=32)
    logits = model(x)
    with collecting() as found:
        rel = lrp(model, x)
    _assert_conserved(rel, logits, logits.argmax(1))
    assert (found["rule"].folded, found["rule"].affine) == (folded, alone)
    for rule in ("gamma", "alpha_beta"):
        assert torch.isfinite(lrp(model, x, 0, rule=rule, alpha=2, beta=1)).all()
    assert hook_count(model) == 0


def test_convnext_is_refused_naming_its_layers():
    model = ZOO["convnext"]()
    with pytest.raises(ValueError) as err:
        lrp(model, example_input("convnext", size=32))
    msg = str(err.value)
    assert "ReLU CNNs" in msg and "GELU in 'features.1.0.block.4'" in msg and "LayerNorm in 'features.0.1'" in msg
    assert hook_count(model) == 0 and hook_count(private_model(model)) == 0


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.head(h * torch.sigmoid(h))  # a functional SiLU


def test_functional_nonlinearities_are_refused_naming_the_module():
    with pytest.raises(ValueError, match=r"Sigmoid in the model's own forward; products of two input-dependent"):
        lrp(_Gated(), torch.rand(1, 3, 8, 8))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_argument_errors():
    net = _two_layer_net()
    x = torch.rand(1, 3, 1, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="rule must be one of 'epsilon', 'gamma', 'alpha_beta', 'zplus'"):
        lrp(net, x, rule="lrp0")
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        lrp(net, x, rule="alpha_beta", alpha=2, beta=0.5)
    with pytest.raises(ValueError, match="first_rule must be None or one of 'zbox', 'flat'"):
        lrp(net, x, first_rule="wsquare")
    with pytest.raises(ValueError, match="first_rule='zbox'"):
        lrp(net, x, bounds=(0.0, 1.0))
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        lrp(net, x, epsilon=-1)
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2)))
    with pytest.raises(ValueError, match="TorchScript"):
        lrp(scripted, torch.rand(1, 3, 4, 4))
    pooled_first = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 2))
    with pytest.raises(ValueError, match="transforms its input before that layer"):
        lrp(pooled_first, torch.rand(1, 3, 4, 4), first_rule="flat")
