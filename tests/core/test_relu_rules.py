"""Tests for cnnwidgets.core.relu_rules: deconvnet / guided ReLU backward passes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnwidgets.core.relu_rules import RELU_RULES, relu_rule


def relus(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.ReLU)]


def patched(model: nn.Module) -> list[bool]:
    """Whether a module carries a forward of its own (the rules must not patch modules)."""
    return ["forward" in vars(m) for m in model.modules()]


def input_grad(model: nn.Module, x: torch.Tensor, grad_out: torch.Tensor | None = None) -> torch.Tensor:
    xg = x.detach().clone().requires_grad_(True)
    out = model(xg)
    if grad_out is None:
        grad_out = torch.ones_like(out)
    (g,) = torch.autograd.grad(out, xg, grad_outputs=grad_out)
    return g


# ---------------------------------------------------------------- hand-computed values
def test_single_relu_elementwise():
    x = torch.tensor([-2.0, -1.0, 0.5, 3.0, 0.0])
    g = torch.tensor([1.0, -1.0, -2.0, 4.0, 5.0])
    for inplace in (False, True):
        relu = nn.ReLU(inplace=inplace)
        if not inplace:  # (ordinary in-place ReLU refuses a leaf that requires grad)
            assert input_grad(relu, x, g).tolist() == [0.0, 0.0, -2.0, 4.0, 0.0]
        with relu_rule(relu, "deconvnet"):
            # positive part of the incoming gradient, whatever the sign of x
            assert input_grad(relu, x, g).tolist() == [1.0, 0.0, 0.0, 4.0, 5.0]
        with relu_rule(relu, "guided"):
            # positive part, and only where x > 0 (x == 0 blocks)
            assert input_grad(relu, x, g).tolist() == [0.0, 0.0, 0.0, 4.0, 0.0]


def two_layer() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 4, bias=False), nn.ReLU(), nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 1.0], [-1.0, 1.0], [2.0, -1.0]]))
        net[2].weight.copy_(torch.tensor([[2.0, 3.0, 1.0, -1.0]]))
    return net


def test_two_layer_net_hand_values():
    # x = [1, -1]: hidden pre-activation h = W1 x = [-1, 2, -2, 3], the gradient arriving at the
    # ReLU output is W2 = [2, 3, 1, -1], and the input gradient is W1^T (rule applied to W2):
    #   plain:     W2 * (h > 0)        = [0, 3, 0, -1] -> 3*[3, 1] - [2, -1]          = [7, 4]
    #   deconvnet: max(W2, 0)          = [2, 3, 1, 0]  -> 2*[1, 2] + 3*[3, 1] + [-1, 1] = [10, 8]
    #   guided:    max(W2, 0) * (h>0)  = [0, 3, 0, 0]  -> 3*[3, 1]                      = [9, 3]
    net = two_layer()
    x = torch.tensor([[1.0, -1.0]])
    assert input_grad(net, x).tolist() == [[7.0, 4.0]]
    with relu_rule(net, "deconvnet"):
        assert input_grad(net, x).tolist() == [[10.0, 8.0]]
    with relu_rule(net, "guided"):
        assert input_grad(net, x).tolist() == [[9.0, 3.0]]
    assert input_grad(net, x).tolist() == [[7.0, 4.0]]  # ordinary again after the block


def test_guided_survives_inplace_change_of_the_relu_output():
    class ScaleAfter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.relu(x)
            y.mul_(2)  # would break ordinary autograd, which saves the ReLU output
            return y

    net = ScaleAfter()
    x = torch.tensor([-1.0, 2.0, 3.0])
    g = torch.tensor([1.0, -1.0, 2.0])
    with relu_rule(net, "guided"):
        # gradient at the ReLU output 2*g = [2, -2, 4] -> positive part [2, 0, 4] -> mask x > 0
        assert input_grad(net, x, g).tolist() == [0.0, 0.0, 4.0]
    with relu_rule(net, "deconvnet"):
        assert input_grad(net, x, g).tolist() == [2.0, 0.0, 4.0]


# ---------------------------------------------------------------- in-place and reused modules
class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        return self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x)))))


class Inplace(Plain):
    def __init__(self) -> None:
        super().__init__()
        self.relu1 = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU(inplace=True)


class Reused(Plain):
    """One in-place ReLU module called twice, as in torchvision's BasicBlock."""

    def __init__(self) -> None:
        super().__init__()
        del self.relu1, self.relu2
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.conv3(self.relu(self.conv2(self.relu(self.conv1(x)))))


@pytest.mark.parametrize("rule", RELU_RULES)
def test_inplace_and_reused_match_plain(rule):
    x = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(4))
    g = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    plain, inplace, reused = Plain(), Inplace(), Reused()
    for net in (inplace, reused):
        net.load_state_dict(plain.state_dict())
    ordinary = input_grad(plain, x, g)
    with relu_rule(plain, rule):
        expected = input_grad(plain, x, g)
    assert not torch.allclose(expected, ordinary)  # the rule matters on this net
    for net in (inplace, reused):
        with relu_rule(net, rule) as report:
            got = input_grad(net, x, g)
            assert not any(patched(net))
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        assert dict(report.applied) == {"ReLU": 2}  # two calls, also when one module runs twice


@pytest.mark.parametrize("rule", RELU_RULES)
def test_tiny_resnet_inplace_reused_matches_non_inplace_copy(tiny_resnet, rgb_batch, rule):
    reference = copy.deepcopy(tiny_resnet)
    for m in relus(reference):
        m.inplace = False
    g = torch.randn(2, 5, generator=torch.Generator().manual_seed(6))
    with relu_rule(reference, rule):
        expected = input_grad(reference, rgb_batch, g)
    with relu_rule(tiny_resnet, rule):
        got = input_grad(tiny_resnet, rgb_batch, g)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


# ---------------------------------------------------------------- forward values, clean-up
@pytest.mark.parametrize("rule", RELU_RULES)
def test_output_unchanged(tiny_resnet, rgb_batch, seq_cnn, gray_batch, rule):
    for net, x in ((tiny_resnet, rgb_batch), (seq_cnn, gray_batch)):
        with torch.no_grad():
            expected = net(x)
            with relu_rule(net, rule):
                got = net(x)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_inplace_relu_writes_in_place_as_the_model_asks():
    net = nn.ReLU(inplace=True)  # the root module itself is a ReLU
    leaf = torch.tensor([-1.0, 2.0], requires_grad=True)
    x = leaf * 1.0  # a non-leaf: in-place is allowed, and the model's code may rely on it
    with relu_rule(net, "deconvnet"):
        y = net(x)
    assert y is x and x.tolist() == [0.0, 2.0]
    (g,) = torch.autograd.grad(y, leaf, torch.tensor([3.0, -1.0]))
    assert g.tolist() == [3.0, 0.0]  # deconvnet: the positive part, whatever the sign of x
    z = torch.tensor([-1.0, 2.0], requires_grad=True)
    with relu_rule(net, "guided"):
        assert net(z).tolist() == [0.0, 2.0] and z.tolist() == [-1.0, 2.0]  # a leaf: never overwritten


def test_rule_ends_with_the_block_also_after_an_error(tiny_resnet):
    x = torch.tensor([[1.0, -1.0]])
    net = two_layer()
    with relu_rule(tiny_resnet, "guided"):
        assert not any(patched(tiny_resnet))
    with pytest.raises(RuntimeError, match="boom"):
        with relu_rule(net, "deconvnet"):
            raise RuntimeError("boom")
    assert input_grad(net, x).tolist() == [[7.0, 4.0]]  # the plain gradient again
    assert not any(patched(net))


def test_functional_relus_get_the_rule():
    """F.relu, torch.relu, x.relu_(), clamp(min=0) and F.relu6 inside a forward, as in GoogLeNet
    and DenseNet, back-propagate by the rule like nn.ReLU modules."""
    w1 = torch.tensor([[1.0, 2.0], [3.0, 1.0], [-1.0, 1.0], [2.0, -1.0]])
    w2 = torch.tensor([[2.0, 3.0, 1.0, -1.0]])
    calls = {
        "F.relu": lambda h: F.relu(h),
        "F.relu inplace": lambda h: F.relu(h, inplace=True),
        "torch.relu": torch.relu,
        "relu_": lambda h: h.relu_(),
        "clamp(min=0)": lambda h: h.clamp(min=0),
        "clamp_min(0)": lambda h: torch.clamp_min(h, 0),
        "F.relu6": F.relu6,  # no value of h reaches 6 here
    }
    x = torch.tensor([[1.0, -1.0]])
    for name, act in calls.items():
        xg = x.clone().requires_grad_(True)
        for rule, expected in (("deconvnet", [[10.0, 8.0]]), ("guided", [[9.0, 3.0]])):
            with relu_rule(two_layer(), rule) as report:
                (g,) = torch.autograd.grad((act(xg @ w1.T) @ w2.T).sum(), xg)
            assert g.tolist() == expected, (name, rule)
            assert report.total == 1, name
        (g,) = torch.autograd.grad((act(xg @ w1.T) @ w2.T).sum(), xg)
        assert g.tolist() == [[7.0, 4.0]], name  # plain outside the block


def test_other_rectifiers_get_the_positive_gradient_rule_gates_do_not():
    class MyReLU(nn.ReLU):
        pass

    x = torch.tensor([-1.0, 0.5, 2.0])
    upstream = torch.tensor([3.0, -2.0, 1.0])
    for module in (MyReLU(), nn.ReLU6(), nn.LeakyReLU(0.1), nn.SiLU(), nn.GELU(), nn.Hardswish(), nn.ELU()):
        xg = x.clone().requires_grad_(True)
        (slope,) = torch.autograd.grad(module(xg), xg, torch.ones(3))  # f'(x)
        with relu_rule(module, "guided") as report:
            guided = input_grad(module, x, upstream)
        with relu_rule(module, "deconvnet"):
            deconv = input_grad(module, x, upstream)
        torch.testing.assert_close(guided, upstream.clamp(min=0) * slope)
        assert deconv.tolist() == [3.0, 0.0, 1.0]
        assert report.total == 1, type(module).__name__
    gate = nn.Sigmoid()
    with relu_rule(gate, "guided") as report:
        got = input_grad(gate, x, upstream)
    torch.testing.assert_close(got, upstream * torch.sigmoid(x) * (1 - torch.sigmoid(x)))
    assert report.total == 0 and dict(report.gates) == {"Sigmoid": 1}
    assert "plain gradient" in report.describe()


def test_nested_rules_restore_the_outer_rule():
    net = two_layer()
    x = torch.tensor([[1.0, -1.0]])
    with relu_rule(net, "deconvnet"):
        with relu_rule(net, "guided"):
            assert input_grad(net, x).tolist() == [[9.0, 3.0]]
        assert input_grad(net, x).tolist() == [[10.0, 8.0]]
    assert not any(patched(net))


def test_forward_hooks_on_relu_still_run():
    net = nn.Sequential(nn.ReLU())
    seen = []
    handle = net[0].register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    with relu_rule(net, "guided"):
        net(torch.tensor([-1.0, 1.0]))
    handle.remove()
    assert [t.tolist() for t in seen] == [[0.0, 1.0]]


def test_unknown_rule():
    net = two_layer()
    with pytest.raises(ValueError, match="'deconvnet', 'guided'.*'gradient'"):
        with relu_rule(net, "gradient"):
            pass
    assert not any(patched(net))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        with relu_rule(net.state_dict(), "guided"):
            pass


def test_other_threads_keep_the_ordinary_relu_gradient():
    import threading

    net = nn.Sequential(nn.ReLU())
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    upstream = torch.tensor([1.0, -1.0])
    got = []

    def other():
        xi = x.detach().clone().requires_grad_(True)
        net(xi).backward(upstream)
        got.append(xi.grad)

    with relu_rule(net, "deconvnet"):
        net(x).backward(upstream)
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert torch.equal(x.grad, torch.tensor([1.0, 0.0]))  # deconvnet: the positive part of upstream
    assert torch.equal(got[0], torch.tensor([0.0, -1.0]))  # ordinary: upstream where x > 0
