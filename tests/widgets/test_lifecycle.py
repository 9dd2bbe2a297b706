"""Widget lifecycle: close() lets go of everything, a failing constructor leaves nothing
behind, a dropped widget is collected with its threads, a script exits cleanly while background
work runs, and Ctrl+C stops a blocking optimization.

Every test builds a fresh demo model (``cnnwidgets.demo.mnist("val")`` loads new weights each
call), so ``weakref.ref(model)`` shows whether anything still holds it.
"""

from __future__ import annotations

import _thread
import gc
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import ipywidgets
import pytest
from torch import nn

import cnnwidgets
from cnnwidgets import ActivationExplorer, ChannelCard, Explorer, FilterGrid, OIPOptimizer, SaliencyViewer, TSNEScatter

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small passes: one intra-op thread


# ---------------------------------------------------------------- helpers
def registry() -> dict:
    """ipywidgets' registry of open widgets (``_instances`` in 8, ``Widget.widgets`` in 7)."""
    from ipywidgets.widgets import widget

    reg = getattr(widget, "_instances", None)
    return reg if reg is not None else ipywidgets.Widget.widgets


def cnnwidgets_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("cnnwidgets-") and t.is_alive()}


def threads_end(before: set[threading.Thread], timeout: float = 10.0) -> set[threading.Thread]:
    """The cnnwidgets threads not in ``before`` still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := cnnwidgets_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def holders(ref: weakref.ref) -> list[str]:
    """Short description of what still refers to the object (for failure messages)."""
    obj = ref()
    if obj is None:
        return []
    return [type(r).__name__ + (f" with {sorted(r)[:6]}" if isinstance(r, dict) else "") for r in gc.get_referrers(obj)]


def fresh():
    """A new demo model with the first 60 validation digits (the demo object itself dropped)."""
    d = cnnwidgets.demo.mnist("val")
    return d.model, d.images[:60].clone(), d.labels[:60].clone(), d.classes, d.mean, d.std


def build(kind: str, model, images, labels, classes, mean, std):
    """One view (or the dashboard), put to some background work, then waited for."""
    if kind == "FilterGrid":
        w = FilterGrid(model)
    elif kind == "ActivationExplorer":
        w = ActivationExplorer(model, images[:20], labels[:20], classes, mean=mean, std=std)
        w.set_state({"index": 3})  # a page request: runs on the worker thread
        w.channel = 2
        assert w.wait(60)
    elif kind == "SaliencyViewer":
        w = SaliencyViewer(model, images[:20], labels[:20], classes, mean=mean, std=std)
        w.set_state({"index": 3})
        assert w.wait(60)
    elif kind == "TSNEScatter":
        w = TSNEScatter(model, images[:40], labels[:40], classes, method="pca", mean=mean, std=std)
        assert w.wait(60)
    elif kind == "OIPOptimizer":
        w = OIPOptimizer(model, images=images[:1], mean=mean, std=std)
        w.run(steps=3)
    else:
        w = Explorer(model, images[:40], labels[:40], classes, mean=mean, std=std, tsne_images=20)
        assert w.tsne.wait(120) and w.activations.wait(60) and w.saliency.wait(60)
        w.optimizer.run(steps=2)
    return w


KINDS = ["FilterGrid", "ActivationExplorer", "SaliencyViewer", "TSNEScatter", "OIPOptimizer", "Explorer"]


# ---------------------------------------------------------------- close() lets go of everything
@pytest.mark.parametrize("kind", KINDS)
def test_close_frees_the_model_images_widgets_and_threads(kind):
    gc.collect()
    threads_before = cnnwidgets_threads()
    n_before = len(registry())
    model, images, labels, classes, mean, std = fresh()
    w = build(kind, model, images, labels, classes, mean, std)
    views = w.views if kind == "Explorer" else [w]
    model_ref, images_ref = weakref.ref(model), weakref.ref(images)
    image_sets = [weakref.ref(v._images) for v in views if getattr(v, "_images", None) is not None]
    assert len(registry()) > n_before
    del model, images, labels, views
    w.close()
    gc.collect()
    # the closed widget is still referenced here, yet holds neither the model nor the images
    assert model_ref() is None, holders(model_ref)
    assert images_ref() is None
    assert all(r() is None for r in image_sets)
    assert len(registry()) == n_before, [type(x).__name__ for x in registry().values()][n_before:]
    assert threads_end(threads_before, 1.0) == set()
    repr(w)
    w.close()  # twice is fine
    w_ref = weakref.ref(w)
    del w
    gc.collect()
    assert w_ref() is None


def _observers(obj) -> int:
    return sum(len(handlers) for by_type in obj._trait_notifiers.values() for handlers in by_type.values())


def test_close_unlinks_the_views_from_a_shared_selection():
    model, images, labels, classes, mean, std = fresh()
    sel = cnnwidgets.Selection()
    try:
        alone = _observers(sel)
        views = [ActivationExplorer(model, images[:10], selection=sel, mean=mean, std=std),
                 SaliencyViewer(model, images[:10], selection=sel, mean=mean, std=std),
                 FilterGrid(model, selection=sel),
                 OIPOptimizer(model, images=images[:1], selection=sel, mean=mean, std=std),
                 TSNEScatter(model, images[:10], method="pca", selection=sel, mean=mean, std=std)]
        assert _observers(sel) > alone
        for v in views:
            if hasattr(v, "wait"):
                assert v.wait(60)
            v.close()
        assert _observers(sel) == alone
        assert all(v.selection is None for v in views)
        shown = [(getattr(v, "index", None), getattr(v, "channel", None)) for v in views]
        sel.index, sel.channel = 4, 1  # no closed view follows (nor raises)
        assert [(getattr(v, "index", None), getattr(v, "channel", None)) for v in views] == shown
        refs = [weakref.ref(v) for v in views]
        model_ref = weakref.ref(model)
        del views, v, model, images
        gc.collect()
        assert all(r() is None for r in refs) and model_ref() is None  # the Selection holds none of them
    finally:
        sel.close()


# ---------------------------------------------------------------- a constructor that raises
class _TupleOut(nn.Module):
    """The demo CNN, but its forward returns a tuple."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x), x


@pytest.mark.parametrize("case", ["too_few_for_tsne", "tuple_output"])
def test_a_failing_explorer_leaves_no_thread_no_widget_and_no_noise(case, monkeypatch, capfd):
    """A view that fails late (t-SNE needs at least 5 images: the three views before it are built
    and running) or early (a tuple output without output=) leaves nothing behind."""
    _, images, labels, classes, mean, std = fresh()
    model = cnnwidgets.demo.mnist("val").model if case == "too_few_for_tsne" else _TupleOut(cnnwidgets.demo.mnist("val").model)
    n_tsne = 4 if case == "too_few_for_tsne" else 20
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    gc.collect()
    threads_before = cnnwidgets_threads()
    n_before = len(registry())
    capfd.readouterr()
    with pytest.raises((ValueError, TypeError, AttributeError)) as info:
        Explorer(model, images[:20], labels[:20], classes, mean=mean, std=std, tsne_images=n_tsne)
    del info  # its traceback holds the half-built objects
    gc.collect()
    assert threads_end(threads_before, 2.0) == set()
    assert len(registry()) == n_before
    assert [u.exc_value for u in unraisable] == []
    err = capfd.readouterr().err
    assert "Exception ignored" not in err and "_stop" not in err, err


def test_half_built_views_close_quietly(monkeypatch, capfd):
    """close() and the finalizer on objects whose constructor never ran (or stopped early)."""
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    for cls in (ActivationExplorer, SaliencyViewer, TSNEScatter, OIPOptimizer, FilterGrid, ChannelCard, Explorer):
        w = cls.__new__(cls)
        w.close()
        repr(w)
        del w
    gc.collect()
    assert [u.exc_value for u in unraisable] == []
    assert "Exception ignored" not in capfd.readouterr().err


# ---------------------------------------------------------------- a widget dropped without close()
@pytest.mark.parametrize("kind", ["ActivationExplorer", "SaliencyViewer"])
def test_a_dropped_view_is_collected_and_its_threads_end(kind):
    """A view that was never displayed and never closed, once nothing refers to it any more,
    is garbage collected and its threads end: the worker threads hold no reference to it.

    ipywidgets keeps every open widget in its registry (and its comm in the comm manager)
    until ``close()``; here those entries are removed by hand, which is what "dropped" means.
    """
    gc.collect()
    threads_before = cnnwidgets_threads()
    keys_before = set(registry())
    model, images, labels, classes, mean, std = fresh()
    w = build(kind, model, images, labels, classes, mean, std)
    assert cnnwidgets_threads() - threads_before
    w_ref, model_ref = weakref.ref(w), weakref.ref(model)
    reg = registry()
    for key in set(reg) - keys_before:
        widget = reg.pop(key)
        if widget.comm is not None:
            widget.comm.close()  # out of the comm manager too
    del w, widget, model, images
    gc.collect()
    assert w_ref() is None, holders(w_ref)
    assert model_ref() is None
    assert threads_end(threads_before, 5.0) == set()


def test_a_worker_forgets_each_job_and_ends_with_its_owner():
    """LatestWorker's thread holds neither the last job it ran (a closure over the widget) nor
    its owner; when the owner is garbage collected without closing it, the thread ends."""
    from cnnwidgets.widgets._worker import LatestWorker

    ran: list[str] = []

    class Owner:
        def update(self) -> None:
            ran.append(threading.current_thread().name)

    owner = Owner()
    worker = LatestWorker("cnnwidgets-test-owned", owner=owner)
    worker.submit(owner.update)  # a bound method of the owner, as a view's jobs are
    assert worker.wait(5) and ran == ["cnnwidgets-test-owned"]
    owner_ref = weakref.ref(owner)
    del owner
    gc.collect()
    assert owner_ref() is None
    worker._thread.join(5)
    assert not worker.alive


# ---------------------------------------------------------------- interpreter exit
EXIT_SCRIPTS = {
    "tsne_pca": """
        import cnnwidgets as cw
        d = cw.demo.mnist('val')
        cw.TSNEScatter(d.model, d.images[:200], d.labels[:200], d.classes, method='pca')
    """,
    "oip_run_block_false": """
        import time
        import cnnwidgets as cw
        d = cw.demo.mnist('val')
        w = cw.OIPOptimizer(d.model, images=d.images[:1], mean=d.mean, std=d.std)
        w.run(steps=100_000, block=False)
        while w.step < 3:
            time.sleep(0.01)
    """,
    "activations_top_images": """
        import time
        import cnnwidgets as cw
        d = cw.demo.mnist('val')
        w = cw.ActivationExplorer(d.model, d.images, d.labels, d.classes, mean=d.mean, std=d.std)
        w.channel = 3
        w.request_top_images()  # a pass over the 2000 images, on a worker thread
        while w.progress <= 0:
            time.sleep(0.01)
    """,
}


@pytest.mark.parametrize("script", sorted(EXIT_SCRIPTS))
def test_a_script_exits_cleanly_while_background_work_runs(script):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(EXIT_SCRIPTS[script])],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "terminate called" not in proc.stderr


# ---------------------------------------------------------------- Ctrl+C
STEPS = 1500  # many more than run before the interrupt; few enough that the old bug ends


@pytest.mark.parametrize("how", ["sigint", "interrupt_main"])
def test_ctrl_c_stops_a_blocking_run(how):
    """KeyboardInterrupt while ``run(block=True)`` waits, raised the way a terminal's Ctrl+C
    or IPython's interrupt does (SIGINT to the main thread), or by ``_thread.interrupt_main``:
    the run stops within a step, nothing is left running, the KeyboardInterrupt propagates."""
    model, images, *_, mean, std = fresh()
    w = OIPOptimizer(model, images=images[:1], mean=mean, std=std)
    threads_before = cnnwidgets_threads()
    main = threading.main_thread().ident
    fired = threading.Event()

    def interrupt():
        deadline = time.monotonic() + 60
        while w.step < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        if w.running:  # never interrupt pytest itself after the run
            fired.set()
            if how == "sigint":
                signal.pthread_kill(main, signal.SIGINT)
            else:
                _thread.interrupt_main()

    timer = threading.Thread(target=interrupt, name="test-interrupter", daemon=True)
    t0 = time.monotonic()
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            w.run(steps=STEPS)
            timer.join()  # (a late interrupt would land here, still inside pytest.raises)
        elapsed = time.monotonic() - t0
        assert fired.is_set()
        step = w.step
        assert not w.running
        assert threads_end(threads_before, 0.5) == set()
        time.sleep(0.3)
        assert w.step == step < STEPS, "steps went on after Ctrl+C"
        assert w.result is not None and w.result.stopped
        assert w.wait(0)
        assert elapsed < 30
    finally:
        w._stop.set()
        w._resume.set()
        threads_end(threads_before, 60.0)  # the old code keeps optimizing: let it end
        w.close()
    assert threads_end(threads_before, 1.0) == set()
