"""Tests for cnnwidgets.core.model: layer names, device, preserved_state, activations."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnwidgets.core.runner import private_model
from cnnwidgets.core.model import (
    CONV_TYPES,
    capture_activations,
    check_model,
    conv_layers,
    get_layer,
    model_device,
    named_layers,
    preserved_state,
    spatial_layers,
)

RESNET_NAMES = [
    "conv1", "bn1", "relu", "maxpool",
    "layer1", "layer1.0", "layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu", "layer1.0.conv2", "layer1.0.bn2",
    "layer2", "layer2.0", "layer2.0.conv1", "layer2.0.bn1", "layer2.0.relu", "layer2.0.conv2", "layer2.0.bn2",
    "layer2.0.downsample", "layer2.0.downsample.0", "layer2.0.downsample.1",
    "avgpool", "fc",
]  # fmt: skip


# ---------------------------------------------------------------- names
def test_named_layers_sequential(seq_cnn):
    layers = named_layers(seq_cnn)
    assert list(layers) == ["0", "1", "2", "3", "4", "5", "6"]
    assert layers["0"] is seq_cnn[0] and layers["6"] is seq_cnn[6]
    assert "" not in layers  # root left out


def test_named_layers_nested(nested_cnn):
    layers = named_layers(nested_cnn)
    assert list(layers) == ["stem", "block", "block.conv1", "block.act", "block.conv2", "head", "head.0", "head.1"]
    assert layers["block.conv1"] is nested_cnn.block.conv1
    assert layers["head.1"] is nested_cnn.head[1]


def test_named_layers_resnet_like(tiny_resnet):
    layers = named_layers(tiny_resnet)
    assert list(layers) == RESNET_NAMES
    assert layers["layer1.0.conv1"] is tiny_resnet.layer1[0].conv1
    assert layers["layer2.0.downsample.0"] is tiny_resnet.layer2[0].downsample[0]


def test_conv_layers_in_order(seq_cnn, nested_cnn, tiny_resnet):
    assert conv_layers(seq_cnn) == ["0", "3"]
    assert conv_layers(nested_cnn) == ["stem", "block.conv1", "block.conv2"]
    assert conv_layers(tiny_resnet) == [
        "conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0",
    ]  # fmt: skip


def test_conv_layers_includes_conv_transpose_not_conv1d():
    net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ConvTranspose2d(2, 3, 2), nn.Conv3d(1, 1, 1), nn.Conv2d(3, 1, 1))
    assert conv_layers(net) == ["1", "3"]
    assert nn.Conv2d in CONV_TYPES and nn.ConvTranspose2d in CONV_TYPES


def test_conv_layers_none():
    assert conv_layers(nn.Sequential(nn.Linear(2, 2), nn.ReLU())) == []


# ---------------------------------------------------------------- get_layer / check_model
def test_get_layer_returns_module(tiny_resnet):
    assert get_layer(tiny_resnet, "layer1.0.conv2") is tiny_resnet.layer1[0].conv2
    assert get_layer(tiny_resnet, "layer1.0.conv2", kinds=CONV_TYPES) is tiny_resnet.layer1[0].conv2


def test_get_layer_unknown_lists_valid_names(nested_cnn):
    with pytest.raises(ValueError) as err:
        get_layer(nested_cnn, "block.conv3")
    msg = str(err.value)
    assert "'block.conv3'" in msg
    for name in named_layers(nested_cnn):
        assert repr(name) in msg


def test_get_layer_unknown_with_kinds_lists_only_those(nested_cnn):
    with pytest.raises(ValueError) as err:
        get_layer(nested_cnn, "nope", kinds=CONV_TYPES)
    msg = str(err.value)
    for name in ("'stem'", "'block.conv1'", "'block.conv2'"):
        assert name in msg
    assert "'block.act'" not in msg and "'head'" not in msg


def test_get_layer_long_name_list_is_shortened():
    net = nn.Sequential(*[nn.ReLU() for _ in range(40)])
    with pytest.raises(ValueError, match=r"10 more") as err:
        get_layer(net, "x")
    assert "'29'" in str(err.value) and "'30'" not in str(err.value)


@pytest.mark.parametrize("bad", [0, None, ["0"], b"0"])
def test_get_layer_non_str_type_error(seq_cnn, bad):
    with pytest.raises(TypeError, match="str"):
        get_layer(seq_cnn, bad)


def test_get_layer_wrong_kind(seq_cnn):
    with pytest.raises(ValueError) as err:
        get_layer(seq_cnn, "1", kinds=CONV_TYPES)
    msg = str(err.value)
    assert "ReLU" in msg and "Conv2d" in msg
    assert "'0'" in msg and "'3'" in msg  # the valid choices


def test_get_layer_root_name_is_not_a_layer(seq_cnn):
    with pytest.raises(ValueError):
        get_layer(seq_cnn, "")


@pytest.mark.parametrize("bad", [None, {"0.weight": torch.zeros(1)}, torch.zeros(2), "net"])
def test_check_model_rejects_non_modules(bad):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        check_model(bad)


def test_check_model_state_dict_hint(seq_cnn):
    with pytest.raises(TypeError, match="state_dict"):
        check_model(seq_cnn.state_dict())
    assert check_model(seq_cnn) is seq_cnn


def test_named_layers_checks_model():
    with pytest.raises(TypeError):
        named_layers([nn.ReLU()])


# ---------------------------------------------------------------- model_device
def test_model_device_cpu(seq_cnn):
    assert model_device(seq_cnn) == torch.device("cpu")


def test_model_device_follows_parameters():
    net = nn.Sequential(nn.ReLU(), nn.Conv2d(1, 2, 3, device="meta"))
    assert model_device(net) == torch.device("meta")


def test_model_device_buffers_only():
    bn = nn.BatchNorm2d(3, affine=False, device="meta")
    assert list(bn.parameters()) == []
    assert model_device(bn) == torch.device("meta")


def test_model_device_no_parameters_or_buffers():
    assert model_device(nn.Sequential(nn.ReLU(), nn.Flatten())) == torch.device("cpu")


# ---------------------------------------------------------------- preserved_state
def _mixed_modes(net: nn.Module) -> dict[str, bool]:
    net.train()
    net.bn1.eval()
    net.layer1[0].eval()  # whole block in eval
    net.layer1[0].bn2.train()  # ...except one module inside it
    net.layer2.train()
    return {n: m.training for n, m in net.named_modules()}


def test_preserved_state_restores_mixed_training_flags(tiny_resnet, flags):
    before = _mixed_modes(tiny_resnet)
    assert len(set(before.values())) == 2  # really mixed
    with preserved_state(tiny_resnet) as m:
        assert m is tiny_resnet
        assert not any(flags(tiny_resnet).values())  # eval everywhere inside
        tiny_resnet.layer2.train()  # user code changes modes inside the block
    assert flags(tiny_resnet) == before


def test_preserved_state_eval_false_keeps_modes(tiny_resnet, flags):
    before = _mixed_modes(tiny_resnet)
    with preserved_state(tiny_resnet, eval=False):
        assert flags(tiny_resnet) == before
        tiny_resnet.eval()
    assert flags(tiny_resnet) == before


def test_preserved_state_restores_requires_grad(tiny_resnet):
    tiny_resnet.conv1.weight.requires_grad_(False)
    tiny_resnet.layer1[0].bn1.bias.requires_grad_(False)
    before = {n: p.requires_grad for n, p in tiny_resnet.named_parameters()}
    assert set(before.values()) == {True, False}
    with preserved_state(tiny_resnet):
        tiny_resnet.requires_grad_(False)
        tiny_resnet.conv1.weight.requires_grad_(True)
    assert {n: p.requires_grad for n, p in tiny_resnet.named_parameters()} == before


def _register_all_kinds(net: nn.Module) -> None:
    noop = lambda *a, **k: None  # noqa: E731
    net.conv1.register_forward_hook(noop)
    net.conv1.register_forward_hook(noop, with_kwargs=True)
    net.conv1.register_forward_hook(noop, always_call=True)
    net.layer1[0].register_forward_pre_hook(noop)
    net.layer1[0].register_forward_pre_hook(noop, with_kwargs=True)
    net.fc.register_full_backward_hook(noop)
    net.fc.register_full_backward_pre_hook(noop)
    net.register_forward_hook(noop)  # on the root


def test_preserved_state_removes_hooks_registered_inside(tiny_resnet, count_hooks):
    with preserved_state(tiny_resnet):
        _register_all_kinds(tiny_resnet)
        assert count_hooks(tiny_resnet) >= 8
    assert count_hooks(tiny_resnet) == 0


def test_preserved_state_removes_hooks_on_exception(tiny_resnet, count_hooks, flags):
    tiny_resnet.train()
    tiny_resnet.fc.weight.requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"):
        with preserved_state(tiny_resnet):
            _register_all_kinds(tiny_resnet)
            tiny_resnet.fc.weight.requires_grad_(True)
            raise RuntimeError("boom")
    assert count_hooks(tiny_resnet) == 0
    assert all(flags(tiny_resnet).values())
    assert tiny_resnet.fc.weight.requires_grad is False


def test_preserved_state_keeps_users_hooks(tiny_resnet, count_hooks, rgb_batch):
    calls = []
    h1 = tiny_resnet.conv1.register_forward_hook(lambda m, i, o: calls.append("fwd"))
    h2 = tiny_resnet.layer1.register_forward_pre_hook(lambda m, i: calls.append("pre"))
    assert count_hooks(tiny_resnet) == 2
    with preserved_state(tiny_resnet):
        tiny_resnet.conv1.register_forward_hook(lambda m, i, o: calls.append("inner"))
        tiny_resnet(rgb_batch)
    assert calls == ["fwd", "inner", "pre"]
    assert count_hooks(tiny_resnet) == 2
    calls.clear()
    tiny_resnet(rgb_batch)
    assert calls == ["fwd", "pre"]  # user's hooks still work, inner one gone
    h1.remove()
    h2.remove()
    assert count_hooks(tiny_resnet) == 0


def test_preserved_state_type_error():
    with pytest.raises(TypeError):
        with preserved_state("not a model"):
            pass


# ---------------------------------------------------------------- capture_activations
def test_capture_activations_sequential_values(seq_cnn, gray_batch):
    out, acts = capture_activations(seq_cnn, gray_batch)
    m = seq_cnn
    a0 = F.conv2d(gray_batch, m[0].weight, m[0].bias)
    a1 = a0.clamp_min(0)
    a2 = F.max_pool2d(a1, 2)
    a3 = F.conv2d(a2, m[3].weight, m[3].bias, padding=1)
    a4 = a3.clamp_min(0)
    a5 = a4.reshape(2, -1)
    a6 = a5 @ m[6].weight.T + m[6].bias
    expected = {"0": a0, "1": a1, "2": a2, "3": a3, "4": a4, "5": a5, "6": a6}
    assert list(acts) == list(expected)
    for name, e in expected.items():
        assert acts[name].shape == e.shape, name
        torch.testing.assert_close(acts[name], e.detach(), msg=name)
        assert not acts[name].requires_grad
    assert a3.shape == (2, 6, 3, 3)
    torch.testing.assert_close(out, a6.detach())
    assert not out.requires_grad


def test_capture_activations_subset(nested_cnn, rgb_batch):
    out, acts = capture_activations(nested_cnn, rgb_batch, ["block.conv1", "head"])
    assert set(acts) == {"block.conv1", "head"}
    s = nested_cnn.stem(rgb_batch)
    torch.testing.assert_close(acts["block.conv1"], nested_cnn.block.conv1(s).detach())
    torch.testing.assert_close(acts["head"], out)
    assert out.shape == (2, 5)


def test_capture_activations_unknown_layer(nested_cnn, rgb_batch, count_hooks):
    with pytest.raises(ValueError, match="block.conv1"):
        capture_activations(nested_cnn, rgb_batch, ["block.nope"])
    with pytest.raises(TypeError):
        capture_activations(nested_cnn, rgb_batch, [3])
    assert count_hooks(nested_cnn) == 0


def test_capture_activations_inplace_relu_keeps_pre_activation():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(inplace=True), nn.Conv2d(3, 2, 1))
    x = torch.randn(2, 1, 6, 6)
    _, acts = capture_activations(net, x, ["0", "1"])
    with torch.no_grad():
        conv = F.conv2d(x, net[0].weight, net[0].bias)
    assert (conv < 0).any()
    assert (acts["0"] < 0).any()  # not overwritten by the in-place ReLU
    torch.testing.assert_close(acts["0"], conv)
    torch.testing.assert_close(acts["1"], conv.clamp_min(0))


def test_capture_activations_resnet_inplace_and_shared_relu(tiny_resnet, rgb_batch):
    """``relu`` runs twice per block, both times in place; ``out += identity`` modifies bn2's output."""
    net = tiny_resnet
    b = net.layer1[0]
    with torch.no_grad():
        stem = net.maxpool(F.relu(net.bn1(net.conv1(rgb_batch))))
        first = F.relu(b.bn1(b.conv1(stem)))
        bn2 = b.bn2(b.conv2(first))
        last = F.relu(bn2 + stem)
    names = ["layer1.0.relu", "layer1.0.bn2", "layer1.0"]
    _, acts0 = capture_activations(net, rgb_batch, names, call=0)
    _, acts1 = capture_activations(net, rgb_batch, names, call=-1)
    torch.testing.assert_close(acts0["layer1.0.relu"], first)
    torch.testing.assert_close(acts1["layer1.0.relu"], last)
    assert not torch.allclose(first, last)
    # bn2's output is taken before the in-place residual addition
    assert (bn2 < 0).any()
    for acts in (acts0, acts1):
        torch.testing.assert_close(acts["layer1.0.bn2"], bn2)
        torch.testing.assert_close(acts["layer1.0"], last)


def test_capture_activations_call_index_second_of_three():
    relu = nn.ReLU()

    class Thrice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = relu

        def forward(self, x):
            return self.act(self.act(x) - 1) - self.act(x - 5)

    x = torch.arange(10.0).view(1, 1, 2, 5)
    net = Thrice()
    _, a = capture_activations(net, x, ["act"], call=1)
    torch.testing.assert_close(a["act"], (x - 1).clamp_min(0))
    _, a = capture_activations(net, x, ["act"], call=0)
    torch.testing.assert_close(a["act"], x)
    _, a = capture_activations(net, x, ["act"], call=-1)
    torch.testing.assert_close(a["act"], (x - 5).clamp_min(0))


def test_capture_activations_skips_non_tensor_and_unused_layers():
    class TupleOut(nn.Module):
        def forward(self, x):
            return x, x + 1

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = TupleOut()
            self.unused = nn.ReLU()

        def forward(self, x):
            a, b = self.pair(x)
            return a * b

    x = torch.ones(1, 1, 2, 2)
    out, acts = capture_activations(Net(), x)
    assert acts == {}
    torch.testing.assert_close(out, 2 * x)


def test_capture_activations_restores_on_forward_error(tiny_resnet, count_hooks, flags):
    tiny_resnet.train()
    tiny_resnet.layer1.eval()
    before = flags(tiny_resnet)
    with pytest.raises(ValueError, match="channel"):  # the real cause, in words
        capture_activations(tiny_resnet, torch.randn(2, 1, 8, 8))  # 1 channel, conv1 wants 3
    assert count_hooks(tiny_resnet) == 0
    assert flags(tiny_resnet) == before


def test_capture_activations_train_mode_model_runs_in_eval(rgb_batch, flags):
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten())
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    net.train()
    bn_state = {k: v.clone() for k, v in net[1].state_dict().items()}
    before = flags(net)
    out1, acts = capture_activations(net, rgb_batch)
    out2, _ = capture_activations(net, rgb_batch)
    torch.testing.assert_close(out1, out2)  # no dropout randomness
    with torch.no_grad():
        conv = net[0](rgb_batch)
        rm, rv = bn_state["running_mean"], bn_state["running_var"]
        bn = (conv - rm.view(1, -1, 1, 1)) / torch.sqrt(rv.view(1, -1, 1, 1) + net[1].eps)
        bn = bn * net[1].weight.view(1, -1, 1, 1) + net[1].bias.view(1, -1, 1, 1)
    torch.testing.assert_close(acts["1"], bn)
    torch.testing.assert_close(acts["2"], bn)  # dropout is the identity in eval mode
    torch.testing.assert_close(out1, bn.flatten(1))
    assert flags(net) == before and all(before.values())
    for k, v in net[1].state_dict().items():  # running stats not updated
        assert torch.equal(v, bn_state[k]), k


def test_capture_activations_keeps_requires_grad(seq_cnn, gray_batch):
    seq_cnn[0].weight.requires_grad_(False)
    capture_activations(seq_cnn, gray_batch)
    assert seq_cnn[0].weight.requires_grad is False
    assert seq_cnn[3].weight.requires_grad is True


# ---------------------------------------------------------------- spatial_layers
def test_spatial_layers_sequential(seq_cnn, gray_batch, count_hooks):
    seq_cnn.train()
    assert spatial_layers(seq_cnn, gray_batch) == ["0", "1", "2", "3", "4"]
    assert count_hooks(seq_cnn) == 0
    assert seq_cnn.training


def test_spatial_layers_nested_execution_order(nested_cnn, rgb_batch):
    names = spatial_layers(nested_cnn, rgb_batch)
    assert set(names) == {"stem", "block.conv1", "block.act", "block.conv2", "block", "head.0"}
    leaves = [n for n in names if n != "block"]
    assert leaves == ["stem", "block.conv1", "block.act", "block.conv2", "head.0"]


def test_spatial_layers_execution_not_registration_order(rgb_batch):
    class Reversed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.late = nn.Conv2d(4, 2, 1)
            self.early = nn.Conv2d(3, 4, 1)
            self.fc = nn.Linear(2, 1)

        def forward(self, x):
            return self.fc(self.late(self.early(x)).mean((2, 3)))

    assert spatial_layers(Reversed(), rgb_batch) == ["early", "late"]


def test_spatial_layers_shared_module_listed_once(tiny_resnet, rgb_batch, count_hooks):
    names = spatial_layers(tiny_resnet, rgb_batch)
    assert len(names) == len(set(names))
    assert "fc" not in names
    assert names.index("conv1") < names.index("layer1.0.conv1") < names.index("layer2.0.conv2")
    assert "avgpool" in names  # N x 8 x 1 x 1 is still 4-D
    assert count_hooks(tiny_resnet) == 0


# ---------------------------------------------------------------- capture_activations: on_output, copies
def test_on_output_is_called_during_the_pass_with_the_returned_tensor(seq_cnn, gray_batch, count_hooks):
    events: list[tuple[str, torch.Tensor | None]] = []

    class Recording(nn.Linear):  # the user's own hooks do not run in cnnwidgets' view: a layer that records
        def forward(self, input):  # noqa: A002
            events.append(("linear runs", None))
            return super().forward(input)

    old = seq_cnn[6]
    seq_cnn[6] = Recording(old.in_features, old.out_features)
    seq_cnn[6].load_state_dict(old.state_dict())
    seq_cnn[6].register_forward_pre_hook(lambda m, i: None)

    def frame(t):
        assert not t.requires_grad
        events.append(("frame", t.clone()))

    out, acts = capture_activations(seq_cnn, gray_batch, on_output={"3": frame})
    assert [e[0] for e in events] == ["frame", "linear runs"]  # before the rest of the pass
    torch.testing.assert_close(events[0][1], acts["3"])
    with torch.no_grad():
        torch.testing.assert_close(acts["3"], seq_cnn[:4](gray_batch))
    assert count_hooks(seq_cnn) == 1  # only the test's own pre-hook is left


def test_on_output_subset_and_call_index():
    relu = nn.ReLU()

    class Thrice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = relu
            self.lin = nn.Linear(5, 5)

        def forward(self, x):
            return self.act(self.lin(self.act(self.act(x) - 1))) - self.act(x - 5)

    x = torch.arange(10.0).view(2, 5)
    net = Thrice()
    for call, want in [(0, x), (1, (x - 1).clamp_min(0)), (-1, (x - 5).clamp_min(0)), (7, (x - 5).clamp_min(0))]:
        got = []
        _, acts = capture_activations(net, x, ["act"], call=call, on_output={"act": got.append})
        assert len(got) == 1, call
        torch.testing.assert_close(got[0], want)
        assert got[0] is acts["act"]


def test_on_output_bad_arguments(seq_cnn, gray_batch, count_hooks):
    with pytest.raises(ValueError, match="'9'"):
        capture_activations(seq_cnn, gray_batch, on_output={"9": print})
    with pytest.raises(ValueError, match="not among the captured layers"):
        capture_activations(seq_cnn, gray_batch, ["0"], on_output={"3": print})
    with pytest.raises(TypeError, match="callable"):
        capture_activations(seq_cnn, gray_batch, on_output={"3": 5})
    assert count_hooks(seq_cnn) == 0


def test_on_output_that_runs_the_model_is_not_captured(seq_cnn, gray_batch, count_hooks):
    nested = []

    def frame(_t):
        with torch.no_grad():
            nested.append(seq_cnn(gray_batch[:1] * 2))  # another pass from inside the callback

    out, acts = capture_activations(seq_cnn, gray_batch, on_output={"1": frame})
    assert len(nested) == 1
    with torch.no_grad():
        for k in range(7):
            torch.testing.assert_close(acts[str(k)], seq_cnn[: k + 1](gray_batch))
    assert count_hooks(seq_cnn) == 0


def test_outputs_are_not_copied_without_in_place_modules(seq_cnn, gray_batch):
    """Nothing overwrites them, so the captured tensors are the layers' own outputs."""
    seen = {}
    view = private_model(seq_cnn)  # the user's own hooks do not run in cnnwidgets' view: hook the view
    for i in ("0", "3"):
        view.get_submodule(i).register_forward_hook(lambda m, inp, out, i=i: seen.__setitem__(i, out))
    _, acts = capture_activations(seq_cnn, gray_batch)
    for i in ("0", "3"):
        assert acts[i].untyped_storage().data_ptr() == seen[i].untyped_storage().data_ptr()


def test_inplace_relu_on_a_view_of_a_captured_output():
    class ViewRelu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            y = self.conv(x)
            self.act(y[:, :2])  # overwrites half of the conv's output in place
            return y

    torch.manual_seed(5)
    net = ViewRelu()
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        conv = net.conv(x)
    assert (conv[:, :2] < 0).any()
    out, acts = capture_activations(net, x)
    torch.testing.assert_close(acts["conv"], conv)
    torch.testing.assert_close(acts["act"], conv[:, :2].clamp_min(0))
    torch.testing.assert_close(out[:, :2], conv[:, :2].clamp_min(0))


class _FunctionalInplace(nn.Module):
    """``conv``'s output is changed in place by a functional op in ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.conv = nn.Conv2d(1, 3, 3)
        self.head = nn.Flatten()

    def forward(self, x):
        y = self.conv(x)
        y.relu_()
        y += 1
        return self.head(y)


def test_functional_inplace_change_falls_back_to_a_copying_pass_once():
    net = _FunctionalInplace()
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        conv = net.conv(x)
    assert (conv < 0).any()
    passes = []
    view = private_model(net)  # the user's own hooks do not run in cnnwidgets' view: hook the view
    view.register_forward_pre_hook(lambda m, i: passes.append(1))
    frames = []
    _, acts = capture_activations(net, x, on_output={"conv": lambda t: frames.append(t.clone())})
    torch.testing.assert_close(acts["conv"], conv)  # the value before relu_ and += 1
    torch.testing.assert_close(acts["head"], (conv.clamp_min(0) + 1).flatten(1))
    assert len(passes) == 2  # the change was detected after the pass: a second, copying pass
    assert len(frames) == 1  # the callback saw the output before the change; not called again
    torch.testing.assert_close(frames[0], conv)
    # the model now copies that layer as it is captured: one pass, same values
    passes.clear()
    _, again = capture_activations(net, x)
    assert len(passes) == 1
    torch.testing.assert_close(again["conv"], conv)
    assert len(view._forward_hooks) == 0 and len(view._forward_pre_hooks) == 1
    assert len(net._forward_hooks) == 0 and len(net._forward_pre_hooks) == 0


def test_capture_under_inference_mode(tiny_resnet, rgb_batch):
    """Inference tensors have no version counter: they are copied as captured."""
    with torch.no_grad():
        ref = capture_activations(tiny_resnet, rgb_batch)[1]
    with torch.inference_mode():
        _, acts = capture_activations(tiny_resnet, rgb_batch)
    assert list(acts) == list(ref)
    for k in ref:
        torch.testing.assert_close(acts[k], ref[k], msg=k)


def test_capture_removes_hooks_the_forward_pass_registers(seq_cnn, gray_batch, count_hooks):
    class Registers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = seq_cnn

        def forward(self, x):
            self.body[0].register_forward_hook(lambda *a: None)  # a model that adds hooks
            return self.body(x)

    net = Registers()
    _, acts = capture_activations(net, gray_batch, ["body.0"])
    assert "body.0" in acts
    assert count_hooks(net) == 0


def test_preserved_state_skips_eval_when_already_in_eval(count_hooks):
    calls = []

    class Counting(nn.Sequential):
        def train(self, mode=True):
            calls.append(mode)
            return super().train(mode)

    net = Counting(nn.Conv2d(1, 2, 3), nn.ReLU()).eval()
    calls.clear()
    with preserved_state(net):
        assert not net.training
    assert calls == []  # nothing to switch
    net.train()
    calls.clear()
    with preserved_state(net):
        assert not net.training and not net[0].training
    assert calls == [False]
    assert net.training and net[0].training


def test_preserved_state_removes_hooks_of_modules_added_inside(seq_cnn, count_hooks):
    with preserved_state(seq_cnn):
        extra = nn.ReLU()
        seq_cnn.add_module("7", extra)
        extra.register_forward_hook(lambda *a: None)
        seq_cnn[0].register_forward_pre_hook(lambda *a: None)
    assert count_hooks(seq_cnn) == 0


# ---------------------------------------------------------------- replaced_forward
def _swap_in_thread(module, forward, entered, release, seen, x):
    """Enter replaced_forward on a thread of its own, record what the module gives there,
    wait for ``release``, leave."""
    from cnnwidgets.core.model import replaced_forward

    def run():
        with replaced_forward(module, forward):
            seen.append(module(x))
            entered.set()
            release.wait(10)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_replaced_forward_is_per_thread_and_overlaps_in_any_order():
    from cnnwidgets.core.model import replaced_forward

    relu = nn.ReLU()
    x = torch.tensor([-1.0, 2.0])
    a_in, a_out, b_in, b_out = (threading.Event() for _ in range(4))
    seen_a, seen_b = [], []
    ta = _swap_in_thread(relu, lambda v: v * 10, a_in, a_out, seen_a, x)
    assert a_in.wait(10)
    tb = _swap_in_thread(relu, lambda v: v * 100, b_in, b_out, seen_b, x)
    assert b_in.wait(10)
    # each thread its own forward; this thread the module's own
    assert torch.equal(seen_a[0], x * 10) and torch.equal(seen_b[0], x * 100)
    assert torch.equal(relu(x), torch.tensor([0.0, 2.0]))
    a_out.set()  # the first to enter leaves first: not nested
    ta.join(10)
    assert torch.equal(relu(x), torch.tensor([0.0, 2.0]))
    with replaced_forward(relu, lambda v: v - 1):  # and this thread, while B still holds one
        assert torch.equal(relu(x), x - 1)
    b_out.set()
    tb.join(10)
    assert "forward" not in relu.__dict__ and torch.equal(relu(x), torch.tensor([0.0, 2.0]))


def test_replaced_forward_nests_and_restores_an_existing_instance_forward():
    from cnnwidgets.core.model import has_own_forward, replaced_forward

    relu = nn.ReLU()
    mine = lambda v: v + 5  # noqa: E731 - a user's own instance forward
    relu.forward = mine
    assert has_own_forward(relu)
    x = torch.tensor([-1.0])
    with replaced_forward(relu, lambda v: v * 2):
        with replaced_forward(relu, lambda v: v * 3):
            assert relu(x).item() == -3.0
        assert relu(x).item() == -2.0
        assert has_own_forward(relu)
    assert relu.__dict__["forward"] is mine and relu(x).item() == 4.0
    with pytest.raises(RuntimeError):
        with replaced_forward(relu, lambda v: v * 2):
            raise RuntimeError("boom")
    assert relu.__dict__["forward"] is mine


def test_a_copy_or_pickle_taken_during_a_swap_has_the_modules_own_forward():
    import copy
    import io

    from cnnwidgets.core.model import replaced_forward

    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    x = torch.tensor([[1.0, -3.0]])
    with replaced_forward(net[1], lambda v: v * 0):
        dup = copy.deepcopy(net)
        buf = io.BytesIO()
        torch.save(net, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    want = net(x)
    for other in (dup, loaded):
        assert torch.equal(other(x), want)
        with torch.no_grad():
            other[0].weight.zero_()
            other[0].bias.fill_(-1.0)
        assert torch.equal(other(x), torch.zeros(1, 2))  # its own layers, not the original's
    assert torch.equal(net(x), want)
