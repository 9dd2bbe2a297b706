"""Views never touch the user's model, and the kernel thread never waits on background work.

Each background job (t-SNE's feature pass, ActivationExplorer's top images, SaliencyViewer's
layer gradient, an OIP run) is held in the middle of its forward pass (a global pre-hook that
blocks the job's thread only) while the test, as the user, runs the model, trains it,
registers a hook and calls train(); the job then finishes correctly and undoes nothing.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import threading

import numpy as np
import pytest
import torch

import cnnwidgets
from cnnwidgets.core import as_batch, extract_features, top_images
from tests.conftest import hook_count, view_pre_hook


@pytest.fixture
def model(demo):
    return copy.deepcopy(demo.model).eval()


@contextlib.contextmanager
def deadline(seconds: float, what: str):
    """Fail (instead of hanging the suite) if the block has not returned after ``seconds``:
    a SIGALRM interrupts a main thread blocked on a lock. A liveness check, not a timing."""

    def fire(_sig, _frame):
        raise TimeoutError(f"{what} did not return within {seconds} s: the kernel thread is blocked")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Gate:
    """Holds the first pass of a background thread named ``thread_prefix`` at ``layer``."""

    def __init__(self, layer: torch.nn.Module, thread_prefix: str) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.prefix = thread_prefix

        def pre(_m, _inp):
            if threading.current_thread().name.startswith(self.prefix) and not self.release.is_set():
                self.entered.set()
                self.release.wait(30)

        self.handle = view_pre_hook(layer, pre)

    def close(self) -> None:
        self.release.set()
        self.handle.remove()


def _user_code(model, x, expected) -> torch.utils.hooks.RemovableHandle:
    """What a user does in the next cell while a job runs: their own model(x), train(), a hook
    of their own, a training step (lr 0: the weights stay, the autograd path is exercised)."""
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    model.train()
    seen = []
    handle = model.features[0].register_forward_hook(lambda m, i, o: seen.append(1))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), torch.zeros(len(x), dtype=torch.long)).backward()
    opt.step()
    assert seen and all(p.grad is not None for p in model.parameters())
    model.eval()
    model.train()  # left in training mode: the job's end must not undo it
    return handle


def _start_job(kind, model, demo, gate):
    """Build the view, then put up the gate and start the job (so only the job is held)."""
    kw = dict(mean=demo.mean, std=demo.std)
    if kind == "tsne":
        g = gate()
        w = cnnwidgets.TSNEScatter(model, demo.images[:300], demo.labels[:300], demo.classes, method="pca",
                                   layer="classifier.2", **kw)
    elif kind == "top_images":
        w = cnnwidgets.ActivationExplorer(model, demo.images[:300], demo.labels[:300], demo.classes, **kw)
        w.layer, w.channel = "features.3", 4
        w.wait()
        g = gate()
        w.request_top_images()
    elif kind == "layer_gradient":
        w = cnnwidgets.SaliencyViewer(model, demo.images[:50], demo.labels[:50], demo.classes, **kw)
        w.set_state({"layer": "features.3"})
        w.wait()
        g = gate()
        w.set_state({"method": "layer_gradient"})  # from the page: computed on the worker
    else:
        w = cnnwidgets.OIPOptimizer(model, "features.6", channel=5, images=demo.images[:1], **kw)
        g = gate()
        w.run(steps=30, block=False)
    w._test_gate = g
    return w, w.wait


@pytest.mark.parametrize("kind", ["tsne", "top_images", "layer_gradient", "oip"])
def test_the_users_code_works_during_a_background_job_and_is_not_undone(kind, model, demo):
    x = as_batch(demo.images[:8], mean=demo.mean, std=demo.std)
    with torch.no_grad():
        expected = model(x)
    gate = None
    w = None
    try:
        w, wait = _start_job(kind, model, demo, lambda: Gate(model.features[3], "cnnwidgets-"))
        gate = w._test_gate
        assert gate.entered.wait(30), "the job never reached the gated layer"
        assert threading.current_thread().name == "MainThread"
        handle = _user_code(model, x, expected)
        gate.release.set()
        assert wait(60) is not False
        # nothing the job did is visible on the user's model, nothing the user did was undone
        assert model.training and all(m.training for m in model.modules())
        assert len(model.features[0]._forward_hooks) == 1
        assert all(p.requires_grad for p in model.parameters())
        assert all("forward" not in m.__dict__ for m in model.modules())
        handle.remove()
        model.eval()
        if kind == "tsne":
            ref = extract_features(model, demo.images[:300], "classifier.2", mean=demo.mean, std=demo.std)
            np.testing.assert_allclose(w.features, ref, rtol=1e-5, atol=1e-6)  # every row right
            assert "error" not in w.status
        elif kind == "top_images":
            ref, _ = top_images(model, demo.images[:300], "features.3", 4, w.k, mean=demo.mean, std=demo.std)
            assert w._top_info["indices"] == ref.tolist() and w.last_error is None
        elif kind == "layer_gradient":
            assert w.last_error is None and w._heat_meta["method"] == "layer_gradient"
        else:
            assert w.step >= 1 and not w.running and w.last_error is None
            assert not w.status.startswith("error"), w.status
    finally:
        if gate is not None:
            gate.close()
        if w is not None:
            w.close()


def test_kernel_handlers_answer_while_oip_is_paused_or_running(model, demo):
    """The lock-up: OIP paused (and then running), the user changes image and clicks a channel
    and a class bar; every handler returns, and Resume / Stop take effect."""
    kw = dict(mean=demo.mean, std=demo.std)
    oip = cnnwidgets.OIPOptimizer(model, "features.6", channel=5, images=demo.images[:1], **kw)
    ae = cnnwidgets.ActivationExplorer(model, demo.images[:200], demo.labels[:200], demo.classes, **kw)
    sv = cnnwidgets.SaliencyViewer(model, demo.images[:200], demo.labels[:200], demo.classes, **kw)
    try:
        ae.wait()
        sv.wait()
        oip.run(steps=100_000, block=False)
        oip.pause()
        for state in ("paused", "running"):
            if state == "running":
                oip.resume()
            for i, (index, channel) in enumerate([(37, 3), (120, 9)]):
                with deadline(10, f"handlers with OIP {state}"):
                    ae.set_state({"index": index + i})  # an image not yet computed
                    ae.set_state({"channel": channel})
                    sv.set_state({"index": index})
                    cls = (sv.resolve_target() + 1) % 10  # not the class shown now
                    sv._bars.set_state({"selected": [cls]})  # a class-bar click
                    ae.wait(30)
                    sv.wait(30)
                assert ae.index == index + i and ae.channel == channel and ae.last_error is None
                assert sv.target == cls and sv._heat_meta["index"] == index
            assert oip.running
        with deadline(10, "OIPOptimizer.stop()"):
            oip.stop()
        assert not oip.running and oip.step < 100_000
    finally:
        for w in (oip, ae, sv):
            w.close()


def test_explorer_next_and_stop_while_oip_runs(model, demo):
    ex = cnnwidgets.Explorer(model, demo.images[:100], demo.labels[:100], demo.classes, mean=demo.mean,
                             std=demo.std, tsne_images=100)
    try:
        ex.activations.wait()
        ex.optimizer.run(steps=100_000, block=False)
        with deadline(10, "Explorer: next image while OIP runs"):
            ex.activations.set_state({"index": 5})
            ex.activations.set_state({"channel": 2})
            ex.activations.wait(30)
        assert ex.activations.index == 5 and ex.optimizer.running
        with deadline(10, "Explorer: Stop while the other views are busy"):
            ex.optimizer._dispatch_message(ex.optimizer, {"type": "stop"}, [])
            assert ex.optimizer.wait(10)
        assert not ex.optimizer.running and ex.optimizer.step < 100_000
    finally:
        ex.close()


class _Slotted(torch.nn.Sequential):
    """A module class with __slots__: cnnwidgets cannot copy it into a private view."""

    __slots__ = ("tag",)


def test_a_model_without_a_private_view_still_works_and_the_view_says_so(demo):
    model = _Slotted(*copy.deepcopy(demo.model).children()).eval()
    model.train()
    ae = cnnwidgets.ActivationExplorer(model, demo.images[:20], demo.labels[:20], demo.classes,
                                       mean=demo.mean, std=demo.std)
    try:
        assert "model itself" in ae.model_note and "__slots__" in ae.model_note
        ae.set_state({"index": 3})
        ae.wait()
        assert ae._maps_info["index"] == 3 and ae.last_error is None
        assert model.training and hook_count(model) == 0  # restored after each use
    finally:
        ae.close()
    ok = cnnwidgets.ActivationExplorer(demo.model, demo.images[:20], mean=demo.mean, std=demo.std)
    try:
        assert ok.model_note == ""
    finally:
        ok.close()
