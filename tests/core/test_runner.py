"""The model runner: private views of the user's model, LayerTap, logits_only.

The contract: nothing cnnwidgets does is visible on the user's model (modes, hooks,
requires_grad, forward), from any thread, and nothing the user does (train(), their hooks, a
training step, their own model(x) from another thread, replacing parameters) breaks a view.
"""

from __future__ import annotations

import threading

import torch.nn.utils.prune

import pytest
import torch
from torch import nn

from cnnwidgets.core import extract_features, reconstruct, top_images
from cnnwidgets.core.runner import (
    LayerTap,
    capture_activations,
    logits_only,
    origin_of,
    private_model,
    using_model,
    view_note,
)
from tests.conftest import hook_count, make_seq_cnn, make_tiny_resnet, requires_grad_flags, training_flags


# ---------------------------------------------------------------- the private view
def test_view_shares_weights_and_has_its_own_flags_and_hooks(gray_batch):
    net = make_seq_cnn().train()
    user_hook_calls = []
    net[0].register_forward_hook(lambda m, i, o: user_hook_calls.append(1))
    view = private_model(net)
    assert view is not net and view[0] is not net[0]
    assert not any(m.training for m in view.modules())  # eval, while the user's model trains
    assert all(m.training for m in net.modules())
    for (name, p), (vname, vp) in zip(net.named_parameters(), view.named_parameters()):
        assert name == vname and vp.data_ptr() == p.data_ptr()  # no weight copy
        assert p.requires_grad and not vp.requires_grad
    assert hook_count(view) == 0 and hook_count(net) == 1
    with torch.no_grad():
        out = view(gray_batch)
    assert user_hook_calls == []  # the user's hooks do not run in the view
    with torch.no_grad():
        torch.testing.assert_close(out, net.eval()(gray_batch))
    assert private_model(net) is view  # one per thread, reused
    assert private_model(view) is view and origin_of(view) is net
    assert view_note(net) is None


def test_a_training_step_shows_in_the_view_at_once(gray_batch):
    net = make_seq_cnn()
    view = private_model(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net.train()
    loss = net(gray_batch).square().mean()
    loss.backward()
    opt.step()
    assert private_model(net) is view  # in-place updates: same view, new values
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(view(gray_batch), net(gray_batch))


@pytest.mark.parametrize("change", ["assign", "dtype", "replace_layer"])
def test_the_view_is_rebuilt_when_the_user_replaces_parameters_or_layers(change, gray_batch):
    net = make_seq_cnn().eval()
    view = private_model(net)
    x = gray_batch
    if change == "assign":
        other = make_seq_cnn()
        with torch.no_grad():
            for p in other.parameters():
                p.mul_(-2.0)
        net.load_state_dict(other.state_dict(), assign=True)
    elif change == "dtype":
        net.double()
        x = x.double()
    else:
        net[6] = nn.Linear(54, 5)
    new = private_model(net)
    assert new is not view
    with torch.no_grad():
        torch.testing.assert_close(new(x), net(x))


def test_scripted_model_works_on_the_model_itself_and_says_so(gray_batch):
    net = torch.jit.script(make_seq_cnn().eval())
    assert private_model(net) is net
    note = view_note(net)
    assert note is not None and "TorchScript" in note and "model itself" in note
    before = net.training
    with using_model(net) as run:
        assert run is net
    assert net.training == before


def test_lazy_model_falls_back_with_a_hint_until_it_has_run(gray_batch):
    net = nn.Sequential(nn.LazyConv2d(3, 3))
    assert private_model(net) is net
    assert "run it once" in view_note(net)
    net(gray_batch)  # the parameters are made: from now on it has a view
    assert private_model(net) is not net and view_note(net) is None


def test_weight_computing_hooks_are_kept_in_the_view(gray_batch):
    """Pruning and weight norm compute the weights in a forward pre-hook: part of the model."""
    net = make_seq_cnn().eval()
    torch.nn.utils.prune.l1_unstructured(net[0], "weight", amount=0.5)
    net[3] = torch.nn.utils.weight_norm(net[3])
    net[0].register_forward_pre_hook(lambda m, i: None)  # the user's own: not kept
    view = private_model(net)
    assert len(view[0]._forward_pre_hooks) == 1 and len(view[3]._forward_pre_hooks) == 1
    with torch.no_grad():
        torch.testing.assert_close(view(gray_batch), net(gray_batch))


def test_parametrized_and_data_parallel_models(gray_batch):
    net = make_seq_cnn().eval()
    torch.nn.utils.parametrize.register_parametrization(net[0], "weight", _Double())
    dp = nn.DataParallel(net)
    for model in (net, dp):
        view = private_model(model)
        assert view is not model
        with torch.no_grad():
            torch.testing.assert_close(view(gray_batch), model(gray_batch))
    # the view's parametrization reads the user's parameter, shared
    with torch.no_grad():
        net[0].parametrizations.weight.original.mul_(0)
        torch.testing.assert_close(private_model(net)[0].weight, torch.zeros_like(net[0].weight))


class _Double(nn.Module):
    def forward(self, w):
        return 2 * w


def test_instance_forward_bound_to_the_module_is_rebound_to_the_copy(gray_batch):
    net = make_seq_cnn().eval()
    calls = []

    def forward(self, x):
        calls.append(self)
        return type(self).forward(self, x)

    import types

    net[0].forward = types.MethodType(forward, net[0])
    view = private_model(net)
    with torch.no_grad():
        view(gray_batch)
    assert calls == [view[0]]


# ---------------------------------------------------------------- nothing leaks to the user's model
class _Gate(nn.Module):
    """Identity that, in a thread other than the one that built it, signals it has started and
    waits until released: a background pass held in the middle of the model."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.main = threading.get_ident()

    def forward(self, x):
        if threading.get_ident() != self.main:
            self.entered.set()
            assert self.release.wait(30)
        return x


def _gated_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), _Gate(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(54, 3),
    )


_JOBS = {
    "extract_features": lambda net, x: extract_features(net, x, "5", pool="avg"),
    "top_images": lambda net, x: top_images(net, x, "4", channel=1, k=2),
    "reconstruct": lambda net, x: reconstruct(net, x, "4"),
    "capture_activations": lambda net, x: capture_activations(net, x),
}


@pytest.mark.parametrize("job", sorted(_JOBS))
def test_user_code_during_a_background_job(job, gray_batch):
    """While a job is held in the middle of a pass in another thread, the user's model(x),
    training step, hooks and train() work, and the job's end undoes none of them."""
    net = _gated_cnn().eval()
    with torch.no_grad():
        expected = net(gray_batch)
    x = gray_batch
    result: dict = {}

    def work():
        try:
            result["value"] = _JOBS[job](net, x)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            result["error"] = exc

    th = threading.Thread(target=work)
    th.start()
    gate = net[2]
    assert gate.entered.wait(30)
    try:
        with torch.no_grad():
            torch.testing.assert_close(net(gray_batch), expected)  # the user's own model(x)
        net.train()
        seen = []
        handle = net[4].register_forward_hook(lambda m, i, o: seen.append(o.shape))
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)
        net(gray_batch).sum().backward()  # a training step: parameters still require grad
        opt.step()
        assert seen and all(p.grad is not None for p in net.parameters())
    finally:
        gate.release.set()
        th.join(30)
    assert "error" not in result, result.get("error")
    # the job ended: the user's hook and mode are still there
    assert net.training and all(m.training for m in net.modules())
    assert len(net[4]._forward_hooks) == 1 and hook_count(net) == 1
    assert all(requires_grad_flags(net).values())
    handle.remove()


def test_jobs_in_two_threads_get_two_views():
    net = make_seq_cnn()
    views = {}
    both = threading.Barrier(2)

    def grab(key):
        views[key] = private_model(net)
        both.wait(10)  # both threads alive at once (a finished thread's id may be reused)

    threads = [threading.Thread(target=grab, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert views[0] is not views[1] and views[0] is not private_model(net)


# ---------------------------------------------------------------- LayerTap and logits_only
def test_layer_tap_stops_after_the_layers_and_keeps_the_chosen_call(gray_batch):
    net = make_tiny_resnet().eval()
    view = private_model(net)
    x = torch.randn(2, 3, 8, 8)
    _, ref = capture_activations(net, x)
    with torch.no_grad(), LayerTap(view, ["conv1", "layer1.0.conv1"]) as tap:
        out, acts = tap.run(x)
    assert out is None  # stopped early
    for n in ("conv1", "layer1.0.conv1"):
        torch.testing.assert_close(acts[n], ref[n])
    with torch.no_grad(), LayerTap(view, "conv1", need_output=True) as tap:
        out, _ = tap.run(x)
    assert out is not None and hook_count(view) == 0
    with pytest.raises(ValueError, match="out of range"), LayerTap(view, "conv1", call=3) as tap:
        tap.run(x)
    with pytest.raises(ValueError, match="not in the model"):
        LayerTap(view, "nope")


def test_logits_only_bypasses_a_final_softmax_on_the_view_only(gray_batch):
    net = nn.Sequential(make_seq_cnn(), nn.Softmax(dim=1)).eval()
    view = private_model(net)
    with torch.no_grad():
        with logits_only(view):
            logits = view(gray_batch)
        probs = net(gray_batch)
    torch.testing.assert_close(logits.softmax(1), probs)
    assert "forward" not in net[1].__dict__ and "forward" not in view[1].__dict__
    with pytest.warns(UserWarning, match="attribution uses the logits"), logits_only(view, "attribution"):
        pass


def test_core_functions_leave_the_users_model_exactly_as_found(gray_batch):
    net = _gated_cnn().train()
    net[2].main = -1  # never gate
    net[2].release.set()
    flags, grads, hooks = training_flags(net), requires_grad_flags(net), hook_count(net)
    for job in _JOBS.values():
        job(net, gray_batch)
    assert training_flags(net) == flags and requires_grad_flags(net) == grads and hook_count(net) == hooks
    assert all("forward" not in m.__dict__ for m in net.modules())
