"""Self-checks of the test model zoo (``tests/zoo.py``), not of cnnwidgets: each model builds,
runs and has the structure, output and quirks its docstring promises."""

from __future__ import annotations

import copy
import functools
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from tests import zoo
from tests.zoo import (
    CLASSIFIERS,
    OUTPUT_SELECTORS,
    RELU_FAMILY,
    SIZES,
    ZOO,
    Detection,
    GoogLeNetOutputs,
    compiled,
    example_input,
    half,
)

NAMES = sorted(ZOO)
RELU_FUNCS = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}


#: tiny convolutions: one thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@functools.lru_cache(maxsize=None)
def _shared(name: str) -> nn.Module:
    """One model per name for the read-only checks (they remove any hook they add)."""
    return ZOO[name]()


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return list(out.values())
    return list(out)


def _select(name: str, out) -> torch.Tensor:
    key = OUTPUT_SELECTORS.get(name)
    if key is None:
        return out
    return getattr(out, key) if isinstance(key, str) and not isinstance(out, dict) else out[key]


class _ReluCalls(TorchFunctionMode):
    """Records the output of every ReLU call, functional or through an ``nn.ReLU`` module."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func in RELU_FUNCS:
            self.outputs.append(result.detach().clone())
        return result


def test_names_and_tables():
    assert set(NAMES) == {
        "resnet", "densenet", "mobilenet_v3", "efficientnet", "convnext", "googlenet", "segnet",
        "detector", "detector_namedtuple", "binary", "binary_sigmoid", "softmax_net", "vit",
    }
    assert set(CLASSIFIERS) <= set(ZOO) and set(RELU_FAMILY) <= set(ZOO) and set(OUTPUT_SELECTORS) <= set(ZOO)
    assert {"resnet", "densenet", "mobilenet_v3", "googlenet", "softmax_net", "binary"} <= set(RELU_FAMILY)
    assert OUTPUT_SELECTORS == {"segnet": "out", "detector": 1, "detector_namedtuple": "scores"}
    assert set(SIZES) == set(ZOO)


@pytest.mark.parametrize("name", NAMES)
def test_runs_in_eval_with_documented_output(name):
    model = _shared(name)
    assert all(not m.training for m in model.modules())
    n_params = sum(p.numel() for p in model.parameters())
    assert 2_000 <= n_params <= 200_000
    for size in SIZES[name]:
        x = example_input(name, n=2, size=size)
        with torch.no_grad():
            out = model(x)
        for t in _tensors(out):
            assert t.dtype == torch.float32 and torch.isfinite(t).all()
        if name in CLASSIFIERS or name == "vit":
            assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
        elif name == "segnet":
            assert isinstance(out, dict) and list(out) == ["out", "aux"]
            assert all(v.shape == (2, 4, size, size) for v in out.values())
        elif name in ("detector", "detector_namedtuple"):
            assert isinstance(out, tuple) and len(out) == 2
            assert (type(out) is Detection) == (name == "detector_namedtuple")
            boxes, scores = out
            assert boxes.shape == (2, 4) and scores.shape == (2, 3)
            assert torch.allclose(scores.sum(1), torch.ones(2))
            if name == "detector_namedtuple":
                assert out.boxes is boxes and out.scores is scores
        elif name.startswith("binary"):
            assert isinstance(out, torch.Tensor) and out.shape == (2, 1)
        else:  # pragma: no cover
            raise AssertionError(f"no output check for {name}")
        if name == "softmax_net":
            assert torch.allclose(out.sum(1), torch.ones(2))
    if name in ("binary_sigmoid", "softmax_net"):
        last = list(model.modules())[-1]
        assert type(last) is (nn.Sigmoid if name == "binary_sigmoid" else nn.Softmax)
    if name == "binary_sigmoid":
        assert ((out > 0) & (out < 1)).all()


def test_vit_only_4d_output_is_the_patch_embedding():
    model = _shared("vit")
    four_d = []
    handles = [
        m.register_forward_hook(lambda m, i, o, n=n: four_d.append(n) if isinstance(o, torch.Tensor) and o.dim() == 4 else None)
        for n, m in model.named_modules()
        if n
    ]
    try:
        with torch.no_grad():
            model(example_input("vit"))
    finally:
        for h in handles:
            h.remove()
    assert four_d == ["conv_proj"]
    conv = model.conv_proj
    assert (conv.in_channels, conv.kernel_size, conv.stride) == (3, (8, 8), (8, 8))
    with pytest.raises(ValueError):
        example_input("vit", size=32)


def test_deterministic_given_seed_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a, b, c = zoo.make_resnet(0), zoo.make_resnet(0), zoo.make_resnet(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a is not b and ZOO["resnet"]() is not ZOO["resnet"]()
    assert torch.equal(example_input("resnet", seed=3), example_input("resnet", seed=3))
    x = example_input("resnet", n=5, size=32, dtype=torch.float64)
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float64


def test_googlenet_aux_head_runs_only_in_training():
    model = zoo.make_googlenet()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs[-1].startswith("aux1.")
    registered = [n for n, _ in model.named_children()]
    assert registered.index("aux1") > registered.index("inception4a")
    assert registered[registered.index("aux1") + 1 :] == ["avgpool", "dropout", "fc"]
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    calls = []
    handle = model.aux1.register_forward_hook(lambda m, i, o: calls.append(o))
    conv_handle = model.get_submodule(convs[-1]).register_forward_hook(lambda m, i, o: calls.append(o))
    try:
        x = example_input("googlenet")
        out = model(x)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 10) and calls == []
        model.train()
        out = model(x)
        assert type(out) is GoogLeNetOutputs and out.logits.shape == out.aux_logits1.shape == (2, 10)
        assert len(calls) == 2
    finally:
        handle.remove()
        conv_handle.remove()


def test_resnet_blocks_reuse_one_inplace_relu():
    model = _shared("resnet")
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"):
        assert hasattr(model, name)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and model.conv1.kernel_size == (7, 7)
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 8 and all(len(layer) == 2 for layer in (model.layer1, model.layer2, model.layer3, model.layer4))
    assert [b.downsample is not None for b in blocks] == [False, False, True, False, True, False, True, False]
    calls: dict[int, list] = {}
    handles = []
    for i, block in enumerate(blocks):
        relus = [m for m in block.modules() if isinstance(m, nn.ReLU)]
        assert relus == [block.relu] and block.relu.inplace
        calls[i] = []
        handles.append(block.relu.register_forward_pre_hook(lambda m, inp, i=i: calls[i].append(inp[0])))
        handles.append(block.bn2.register_forward_hook(lambda m, inp, out, i=i: calls[i].append(out)))
    try:
        with torch.no_grad():
            model(example_input("resnet"))
    finally:
        for h in handles:
            h.remove()
    for seen in calls.values():
        first_relu_input, bn2_out, second_relu_input = seen  # relu called twice per block
        assert second_relu_input is bn2_out  # out += identity, in place


def test_densenet_dense_layers_use_functional_relu():
    model = _shared("densenet")
    features = [n for n, _ in model.features.named_children()]
    assert features == ["conv0", "norm0", "relu0", "pool0", "denseblock1", "transition1", "denseblock2", "norm5"]
    layers = [m for m in model.modules() if type(m).__name__ == "_DenseLayer"]
    assert len(layers) == 6
    assert not any(isinstance(m, nn.ReLU) for layer in layers for m in layer.modules())
    assert [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)] == ["features.relu0", "features.transition1.relu"]
    with torch.no_grad(), _ReluCalls() as rec:
        model(example_input("densenet"))
    assert len(rec.outputs) == 2 * len(layers) + 2 + 1  # two per dense layer, 2 modules, the final F.relu


@pytest.mark.parametrize("name", NAMES)
def test_float16_copy_runs(name):
    model = _shared(name)
    model16 = half(model)
    assert model16 is not model and next(model.parameters()).dtype == torch.float32
    x = example_input(name)
    with torch.no_grad():
        out16, out32 = model16(x.half()), model(x)
    for a, b in zip(_tensors(out16), _tensors(out32), strict=True):
        assert a.dtype == torch.float16 and torch.isfinite(a).all()
        assert (a.float() - b).abs().max() < 0.15


@pytest.mark.parametrize("name", NAMES)
def test_compiled_matches_eager(name):
    model = _shared(name)
    x = example_input(name)
    try:
        with torch.no_grad():
            out_c, out_e = compiled(model)(x), model(x)
    finally:
        torch._dynamo.reset()
    assert type(out_c) is type(out_e)
    for a, b in zip(_tensors(out_c), _tensors(out_e), strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize("name", [*CLASSIFIERS, "vit", "binary", "binary_sigmoid", "detector", "segnet"])
def test_predictions_vary_across_random_images(name):
    model = _shared(name)
    with torch.no_grad():
        out = _select(name, model(example_input(name, n=16, seed=5)))
    if name.startswith("binary"):
        decision = out[:, 0] > (0.5 if name == "binary_sigmoid" else 0.0)
        assert 0 < decision.sum() < 16
    else:
        assert out.argmax(1).unique().numel() >= 2


@pytest.mark.parametrize("name", RELU_FAMILY)
def test_no_relu_is_dead(name):
    model = _shared(name)
    with torch.no_grad(), _ReluCalls() as rec:
        model(example_input(name, n=4, seed=6))
    assert rec.outputs
    for out in rec.outputs:
        assert (out > 0).float().mean() > 0.05


@pytest.mark.parametrize("name", NAMES)
def test_train_mode_forward_backward_is_fast(name):
    model = copy.deepcopy(_shared(name)).train()
    times = []
    for _ in range(3):
        x = example_input(name).requires_grad_(True)
        start = time.perf_counter()
        out = model(x)
        sum(t.float().sum() for t in _tensors(out)).backward()
        times.append(time.perf_counter() - start)
        assert x.grad is not None and torch.isfinite(x.grad).all()
    assert min(times) < 0.3  # typically 5-30 ms; loose for busy machines
