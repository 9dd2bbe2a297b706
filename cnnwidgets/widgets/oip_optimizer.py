"""OIPOptimizer: activation maximization, live, in a background thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

import bqplot as bq
import ipywidgets as ipw
import numpy as np
import torch
import traitlets as t
from torch import nn

from ..core import optimize as opt
from ..core._validate import as_int
from ..core.images import ImageSet
from ..core.layers import layer_labels, layers_with_output, not_a_cnn_notice, view_defaults
from ..core.model import check_model, model_device, model_dtype, unwrap_model
from ..core.optimize import InitName, ParamName, StepRule
from ..core.optimize.scan import _pre_relu_hint
from ..core.outputs import OutputSelector, check_output, class_names_for, describe_output
from ..core.runner import Scores, capture_activations, softmax_notice_off
from ._base import (ArrayTrait, BaseWidget, Choice, Float, Int, bounded_int, checked, close_widgets, float_in,
                    images_uint8, int_in)
from ._worker import start_thread
from .selection import Selection, SelectionMixin

__all__ = ["OIPOptimizer"]

# Choices the core has no Literal alias for (the core's functions take an Objective, a tensor or
# an inline Literal): kept here, one place for this view.
#: What the objective reads: a feature map's mean, its centre unit, or a class logit.
ObjectiveKind = Literal["channel", "neuron", "class"]
#: The starting image: the core's named ones, or an image of ``images=``.
StartImage = Literal[InitName, "dataset"]
#: How :func:`~cnnwidgets.core.optimize.clip_weak_pixels` ranks the pixels.
ClipBy = Literal["norm", "contribution"]
#: How the status line reads: the run's state, a warning (a dead map), an error.
StatusKind = Literal["info", "warning", "error"]

#: Formats of the loss chart's tick labels (d3-format). Given explicitly: with none, bqplot
#: guesses one from the axis' ticks, and an axis without data (before a run, after reset)
#: has none, which makes it build ".undefinedg" (invalid: an error per redraw, no labels).
STEP_TICKS = "~g"
VALUE_TICKS = "~g"


class OIPOptimizer(SelectionMixin, BaseWidget):
    """Grow the input pattern a feature map, neuron or class responds to most.

    Gradient ascent from a starting image, with regularizers and robustness transforms, in a
    background thread: the image and the loss curve update live (at most ~15 times a second),
    Start / Pause / Stop / Reset work while it runs, and the notebook stays usable.

    Parameters
    ----------
    model : nn.Module
    layer : str, optional
        Layer of the objective. Default: a convolution two thirds of the way into the network
        (:func:`~cnnwidgets.core.layers.optimizer_layer`: not the first conv, whose filters are edges,
        nor the last); for a vision transformer its patch embedding (the view then says what
        works on such a model).
    channel : int or list of int
        Channel to maximize; a list optimizes one image per channel as one batch.
    input_shape : (C, H, W), optional
        Shape of the image; else taken from ``images``.
    images : tensor or array, optional
        Dataset images: give the input shape and can be starting images.
    selection : cnnwidgets.Selection, optional
        Selecting a channel in FilterGrid or ActivationExplorer targets it here.
    mean, std : optional
        The model's input normalization (the optimized image lives in [0, 1]).
    steps, lr, seed, objective, param, init, step_rule : optional
        Initial settings (all are traits too).
    classes : sequence of str, optional
        Class names (at least as many as the model has classes; for a single-logit model one
        name X gives ``["not X", "X"]``): the class field, the status and the batch gallery
        name the classes instead of numbering them.
    output : int, str or callable, optional
        For the class objective on a model whose output is a tuple, dict or named tuple (a
        detector, a segmentation net): which part holds the class scores
        (:func:`~cnnwidgets.core.outputs.select_output`). Channel and neuron objectives read a layer and
        need none; without it such a model gets them only, and ``class_note`` says why.

    Examples
    --------
    >>> from cnnwidgets import OIPOptimizer, demo
    >>> d = demo.mnist("val")
    >>> oip = OIPOptimizer(d.model, "features.6", channel=[0, 1, 2], images=d.images, mean=d.mean, std=d.std)
    >>> oip.run(steps=20).shape
    (3, 1, 28, 28)
    """

    _bundle = "oip_optimizer"
    _shared = ("layer", "channel")
    #: The toolbars' controls (js/src/widgets/oip_optimizer.js); runs start by message.
    _page_writable = frozenset({
        "layer", "channel", "objective", "negate", "class_index", "steps", "lr", "step_rule", "param", "init",
        "dataset_index", "seed", "precursors", "converge", "l2", "tv", "blur_every", "blur_sigma",
        "clip_percentile", "clip_by", "jitter", "rotate", "scale",
    })
    #: Bounds of the settings. ``precursors`` is also limited to PRECURSOR_PIXELS values in all
    #: (the K starting images are made at once), ``jitter`` to the image side, ``blur_sigma``
    #: to half of it.
    MAX_STEPS = 100_000
    MAX_LR = 100.0
    MAX_WEIGHT = 1e4
    MAX_PRECURSORS = 1024
    PRECURSOR_PIXELS = 2**26
    MAX_BATCH = 64
    MAX_SEED = 2**32 - 1
    MAX_INPUT_SIDE = 2048
    MAX_INPUT_CHANNELS = 64

    # --- objective
    layer = t.Unicode("").tag(sync=True)
    layers = t.List(t.Unicode(), read_only=True).tag(sync=True)
    #: What the layer picker shows beside each layer: ``{name: "Conv2d 128x3x3"}``.
    layer_labels = t.Dict(read_only=True).tag(sync=True)
    channel = Int(0).tag(sync=True)
    batch_channels = t.List(Int()).tag(sync=True)
    objective = Choice(ObjectiveKind, "channel").tag(sync=True)
    negate = t.Bool(False).tag(sync=True)
    class_index = Int(0).tag(sync=True)
    n_classes = Int(0, read_only=True).tag(sync=True)
    #: Class names (empty when not given).
    classes = t.List(t.Unicode(), read_only=True).tag(sync=True)
    #: Why the class objective is off (``n_classes`` 0): no class scores, or an output structure
    #: that needs ``output=``; empty when it is on.
    class_note = t.Unicode("", read_only=True).tag(sync=True)
    # --- start image
    init = Choice(StartImage, "gray").tag(sync=True)
    param = Choice(ParamName, "pixel").tag(sync=True)
    dataset_index = Int(0).tag(sync=True)
    #: Number of dataset images (``images=``), the range of ``dataset_index``.
    n_images = Int(0, read_only=True).tag(sync=True)
    seed = Int(0).tag(sync=True)
    precursors = Int(0).tag(sync=True)  # K random starts tried first; 0 = off
    # --- run
    steps = Int(200).tag(sync=True)
    lr = Float(0.02).tag(sync=True)
    step_rule = Choice(StepRule, "rms").tag(sync=True)
    converge = t.Bool(False).tag(sync=True)
    # --- regularizers and transforms (blur and clipping act on the pixels: pixel
    # parameterization only, left out with param="fourier")
    l2 = Float(0.0).tag(sync=True)
    tv = Float(0.0).tag(sync=True)
    blur_every = Int(0).tag(sync=True)
    blur_sigma = Float(0.5).tag(sync=True)
    clip_percentile = Float(0.0).tag(sync=True)
    clip_by = Choice(ClipBy, "norm").tag(sync=True)
    jitter = Int(0).tag(sync=True)
    rotate = Float(0.0).tag(sync=True)
    scale = Float(0.0).tag(sync=True)  # random rescale by 1 - s, 1 or 1 + s each step
    # --- state
    running = t.Bool(False).tag(sync=True)
    paused = t.Bool(False).tag(sync=True)
    #: Steps done (1-based: 5 after the fifth step), live while a run goes on.
    step = Int(0).tag(sync=True)
    steps_per_second = Float(0.0).tag(sync=True)
    value = Float(0.0).tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    #: How the page shows ``status``: "info", "warning" (a dead map) or "error" (in the error colour).
    status_kind = Choice(StatusKind, "info").tag(sync=True)
    # --- data
    #: The current images, uint8 B x H x W x C.
    _image = ArrayTrait()
    #: About ``_image``: ``{"step", "final", "channels", "labels", "predictions", "dead"}``: the
    #: step it shows, whether the run is over, the channel each image maximizes, what each
    #: image maximizes as text, the class the model gives each final image
    #: (``{"class", "name", "p"}`` or None) and which images' objective stayed 0.
    _image_info = t.Dict().tag(sync=True)
    #: The first image after each snapshot step, uint8 K x H x W x C.
    _snapshots = ArrayTrait()
    #: The steps of ``_snapshots``, 1-based as ``step`` (the image after that many steps).
    snapshot_steps = t.List(Int()).tag(sync=True)
    probabilities = t.List(Float(), read_only=True).tag(sync=True)
    chart = t.Instance(bq.Figure).tag(sync=True, **ipw.widget_serialization)
    #: The loss curve ``chart`` shows, float32 (2, n): the steps (1-based) and the objective at
    #: each, updated with it (live during a run, at most ``CURVE_UPDATES_PER_SECOND`` times a second). The page
    #: draws it itself where ``chart`` cannot be rendered: in marimo (no child views) and in
    #: an exported page.
    _curve = ArrayTrait()

    #: Live updates per second, at most.
    MAX_UPDATES_PER_SECOND = 15

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        channel: int | Sequence[int] = 0,
        *,
        input_shape: Sequence[int] | None = None,
        images: Any = None,
        selection: Any = None,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        steps: int = 200,
        lr: float = 0.02,
        seed: int = 0,
        objective: str = "channel",
        param: str = "pixel",
        init: str = "gray",
        step_rule: str = "rms",
        output: OutputSelector = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self._model = check_model(model)
        self._device = model_device(model)
        self._images = ImageSet.of(images, mean=mean, std=std) if images is not None else None
        if input_shape is not None:
            shape = tuple(input_shape)
            if len(shape) != 3:
                raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {shape}")
            shape = (bounded_int(shape[0], "input_shape C", 1, self.MAX_INPUT_CHANNELS, "channels of the image"),
                     *(bounded_int(v, f"input_shape {n}", 1, self.MAX_INPUT_SIDE, "image side in pixels")
                       for n, v in zip("HW", shape[1:])))
        elif self._images is not None:
            shape = self._images.shape
        else:
            raise ValueError(
                "OIPOptimizer needs the input's (C, H, W): pass input_shape=(C, H, W) or images=... "
                "(e.g. images=demo.images)"
            )
        self._shape = shape
        self._mean, self._std = mean, std
        self._output = check_output(output)
        if selection is not None and not isinstance(selection, Selection):
            self._join(selection)  # raises the TypeError with its hint
        inner = unwrap_model(self._model)[0]  # layer names are the unwrapped module's
        probe = torch.full((1, *shape), 0.5)
        probe = self._normalize(probe).to(self._device, model_dtype(inner))
        try:
            out, acts = capture_activations(inner, probe)
            defaults = view_defaults(inner, probe)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"the model rejects inputs of shape {shape} (C, H, W): {exc}") from None
        modules = dict(inner.named_modules())
        self._widths = {k: int(acts[k].shape[1]) for k in layers_with_output(inner, acts, (2, 4))}
        self._spatial = {k for k, v in acts.items() if v.dim() == 4}
        names = list(self._widths)
        convs = [k for k in names if isinstance(modules[k], nn.Conv2d)]
        n_classes, self._class_note, head_note = self._read_head(inner, out)
        names_of_classes = self._class_names(classes, n_classes)
        labels = layer_labels(inner, probe, names)
        if layer is None:
            # a mid-to-deep convolution (the first conv shows edges, the last one is close to the classes)
            fallback = defaults["patch_embedding"] or (convs[-1] if convs else names[-1])
            layer = defaults["optimizer"] if defaults["optimizer"] in self._widths else fallback
            explicit: tuple[str, ...] = ()
        else:
            explicit = ("layer", "channel")
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._result: opt.OIPResult | None = None
        self._history: list[float] = []
        self._done = threading.Event()  # set while no run is going on
        self._done.set()
        self._start_lock = threading.Lock()  # one run at a time: start() checks and claims under it
        self._closed = False
        self._ready = False
        chart = self._make_chart()
        try:  # a failure closes the widget (its comm) and the chart's widgets
            super().__init__(chart=chart)
            self.set_trait("layers", names)
            # a class count only where the output reads as class scores (Head); 0 otherwise
            self.set_trait("n_classes", n_classes)
            self.set_trait("classes", names_of_classes)
            self.set_trait("layer_labels", labels)
            self.set_trait("n_images", len(self._images) if self._images is not None else 0)
            self.set_trait("class_note", self._class_note or "")
            self.note("head", head_note)
            self.note("output", self._class_note)
            if defaults["patch_embedding"] is not None:
                self.note("cnn", not_a_cnn_notice(defaults["patch_embedding"]))
            with self.hold_trait_notifications():
                self.layer = layer
                if isinstance(channel, (list, tuple, np.ndarray, torch.Tensor)):
                    chans = [as_int(c.item() if hasattr(c, "item") else c, "channel") for c in channel]
                    if not chans:
                        raise ValueError("channel list is empty; give at least one channel")
                    self.batch_channels = chans
                    self.channel = chans[0]
                else:
                    self.channel = as_int(channel, "channel")  # no bool; the range is the trait's
                self.steps, self.lr, self.seed = steps, lr, seed
                self.objective, self.param, self.init, self.step_rule = objective, param, init, step_rule
            self._ready = True
            self._join(selection, explicit=explicit)
            self._error: Exception | None = None
            self._show(self._start_images(), final=False)
        except BaseException:
            self.close()
            close_widgets(chart)  # if the constructor failed before the chart was held
            raise

    # ------------------------------------------------------------------ helpers
    def _read_head(self, model: nn.Module, out: Any) -> tuple[int, str | None, str | None]:
        """How the model's output ``out`` (of the probe) reads as classes, for the class
        objective: ``(n_classes, why the class objective is off or None, the head's note)``.
        Layer objectives never read the output, so they work whatever it is."""
        if self._output is None and isinstance(out, torch.Tensor) and out.dim() == 4:
            return 0, (
                "objective='class' needs class scores, and this model has no classifier head: its output is "
                f"{describe_output(out)} (feature maps). Use 'channel' or 'neuron'; if those maps are "
                "segmentation scores, pass output=lambda out: out"
            ), None
        scores = Scores(model, self._output)
        try:
            scores.select(out)
        except ValueError as exc:
            if self._output is not None:
                raise  # the output= the user gave selects nothing usable: say so at once
            return 0, f"objective='class' is off: {exc}", None
        self._head = scores.head
        return scores.head.n_classes, None, scores.note  # type: ignore[union-attr]

    def _class_names(self, classes: Sequence[str] | None, n_classes: int) -> list[str]:
        """``classes`` checked against the model's classes, as shown (a binary head's one name X
        as ``["not X", "X"]``); [] without names."""
        if classes is None:
            return []
        if isinstance(classes, (str, bytes)):
            raise TypeError(f"classes must be a sequence of class names, got the string {classes!r}")
        given = [str(c) for c in classes]
        head = getattr(self, "_head", None)
        names = class_names_for(head, given) if head is not None else given
        if n_classes and len(names) < n_classes:
            raise ValueError(f"classes names {len(names)} classes but the model has {n_classes}; "
                             f"give at least {n_classes} names")
        return names

    def class_name(self, k: int) -> str:
        """Class ``k`` as the view names it: ``"'cat' (3)"`` with ``classes``, else ``"class 3"``."""
        return f"{self.classes[k]!r} ({k})" if 0 <= k < len(self.classes) else f"class {k}"

    def _normalize(self, img: torch.Tensor) -> torch.Tensor:
        if self._mean is None:
            return img
        m = torch.as_tensor(self._mean, dtype=img.dtype).reshape(1, -1, 1, 1)
        s = torch.as_tensor(self._std, dtype=img.dtype).reshape(1, -1, 1, 1)
        return (img - m) / s

    def _make_chart(self) -> bq.Figure:
        """The loss curve: a bqplot Figure as wide as the view (its layout width 100%), with
        explicit tick formats (:data:`STEP_TICKS`, :data:`VALUE_TICKS`) and, while there is no
        data, a fixed domain, so that its axes always have ticks and labels."""
        xs, ys = bq.LinearScale(), bq.LinearScale()
        self._scales = (xs, ys)
        self._line = bq.Lines(x=np.zeros(0), y=np.zeros(0), scales={"x": xs, "y": ys}, colors=["#4c78a8"])
        self._axes = (bq.Axis(scale=xs, label="step", tick_format=STEP_TICKS),
                      bq.Axis(scale=ys, orientation="vertical", label="objective", tick_format=VALUE_TICKS))
        fig = bq.Figure(
            marks=[self._line], axes=list(self._axes),
            title="objective per step", layout=ipw.Layout(width="100%", height="240px", min_width="0"),
            fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 16},
        )
        self._set_curve(np.zeros(0), np.zeros(0))
        return fig

    def _set_curve(self, steps: np.ndarray, values: np.ndarray) -> None:
        """Show ``values`` over ``steps``, in the chart and in ``_curve``; with no point, the
        chart's axes keep the domain 0..1 (an empty domain gives bqplot no ticks to label)."""
        xs, ys = self._scales
        empty = len(steps) == 0
        finite = values[np.isfinite(values)] if not empty else values
        with self._line.hold_sync(), xs.hold_sync(), ys.hold_sync():
            xs.min, xs.max = (0.0, 1.0) if empty else (None, None)
            ys.min, ys.max = (0.0, 1.0) if empty or len(finite) == 0 else (None, None)
            self._line.x, self._line.y = steps, values
        self._curve = np.stack([steps, values]).astype(np.float32)

    @property
    def batch(self) -> int:
        return len(self.batch_channels) if self.batch_channels else 1

    def _channels(self) -> int | list[int]:
        return list(self.batch_channels) if self.batch_channels else self.channel

    def _objective(self) -> opt.Objective:
        if self.objective == "class":
            ks = self.class_index if not self.batch_channels else [self.class_index] * self.batch
            obj = opt.class_logit(ks)
        elif self.objective == "neuron":
            obj = opt.neuron(self.layer, self._channels())
        else:
            obj = opt.channel(self.layer, self._channels())
        return -1 * obj if self.negate else obj

    def _start_images(self) -> torch.Tensor:
        b = self.batch
        if self.init == "dataset":
            if self._images is None:
                raise ValueError("init='dataset' needs images=...; use 'gray' or 'multiscale' otherwise")
            i = self._images.check_index(self.dataset_index)
            from ..core.inputs import to_display

            img = torch.from_numpy(to_display(self._images.item(i)[0], mean=self._images.mean, std=self._images.std))
            img = img.permute(2, 0, 1).float().div(255.0)[None]
            if img.shape[1] != self._shape[0]:
                img = self._images.item(i).clamp(0, 1)
            return img.repeat(b, 1, 1, 1)
        if self.init == "multiscale":
            return opt.multiscale(self._shape, b, self.seed)
        return opt.gray_noise(self._shape, b, self.seed)

    def _settings(self) -> dict[str, Any]:
        transforms, penalties, ops = [], [], []
        if self.jitter:
            transforms.append(opt.jitter(self.jitter))
        if self.scale:
            transforms.append(opt.scale([1.0 - self.scale, 1.0, 1.0 + self.scale]))
        if self.rotate:
            transforms.append(opt.rotate([-self.rotate, 0.0, self.rotate]))
        if self.l2:
            penalties.append(opt.l2(self.l2))
        if self.tv:
            penalties.append(opt.total_variation(self.tv))
        if self.blur_every and self.param == "pixel":  # image operations act on the pixels
            ops.append(opt.blur_every(self.blur_every, self.blur_sigma))
        if self.clip_percentile and self.param == "pixel":
            ops.append(opt.clip_weak_pixels(self.clip_percentile, by=self.clip_by))
        return {"transforms": transforms, "penalties": penalties, "image_ops": ops}

    # ------------------------------------------------------------------ public API
    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def history(self) -> list[float]:
        """The objective per step (for several channels, their mean)."""
        return list(self._history)

    @property
    def result(self) -> opt.OIPResult | None:
        """The last finished run (images, history, snapshots), if any."""
        return self._result

    def run(self, steps: int | None = None, block: bool = True) -> np.ndarray | None:
        """Optimize with the current settings.

        Parameters
        ----------
        steps : int, optional
            Steps to run (default: the ``steps`` trait).
        block : bool
            Wait for the result (True) or return at once while it runs in the background.

        Returns
        -------
        numpy.ndarray or None
            float32 (B, C, H, W) in [0, 1] when ``block``; None otherwise.

        Raises
        ------
        KeyboardInterrupt
            Ctrl+C (or the notebook's interrupt button) while ``block`` waits stops the run
            within one step: the thread ends, ``running`` is False, the images reached so far
            are shown and kept in :attr:`result`, and the KeyboardInterrupt is raised again.
        RuntimeError
            While another run is in progress (call :meth:`stop` or :meth:`wait` first).
        """
        self._refuse_while_running()  # before the steps of the run in progress change
        if steps is not None:
            self.steps = steps
        self.start()
        if not block:
            return None
        try:
            self.wait()
        except KeyboardInterrupt:
            self._stop.set()
            self._resume.set()
            self.wait(30)  # the thread ends within a step; a second Ctrl+C gets through too
            raise
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result.images.numpy().astype(np.float32)

    def _refuse_while_running(self) -> None:
        if not self._done.is_set():
            raise RuntimeError(
                f"an optimization run is in progress (step {self.step}): call stop() to end it, or wait() "
                "for it to finish, before starting another"
            )

    def start(self) -> None:
        """Start the optimization in the background.

        Raises
        ------
        RuntimeError
            While a run is in progress: one run at a time (call :meth:`stop` or :meth:`wait`).
        """
        if self._closed:
            raise RuntimeError("this OIPOptimizer is closed; create a new one")
        with self._start_lock:  # the check and the claim together: of two starts at once, one runs
            self._refuse_while_running()
            self.stop()  # the last run is over: let its thread go
            self._done.clear()
        try:
            self._check_ready()
        except BaseException:
            self._done.set()
            raise
        self._stop.clear()
        self._resume.set()
        self._error: Exception | None = None
        with self.hold_sync():
            # nothing of the last result stays on the page while the new run goes on
            self.set_trait("probabilities", [])
            self._clear_snapshots()
            self.report_failure(None)
            self.status, self.status_kind = "running ...", "info"
            self.step = 0
            self.paused = False
            self.running = True
        stop, resume = self._stop, self._resume  # the exit hook's stop holds no widget

        def ask_stop() -> None:
            stop.set()
            resume.set()

        try:
            self._thread = start_thread(self._run, "cnnwidgets-oip", ask_stop)
        except BaseException:
            self.running = False
            self._done.set()
            raise

    def pause(self) -> None:
        """Pause after the current step; :meth:`resume` goes on."""
        if self.running:
            self._resume.clear()
            self.paused = True

    def resume(self) -> None:
        self._resume.set()
        self.paused = False

    def stop(self) -> None:
        """Stop the optimization (takes effect within one step) and wait for the thread."""
        self._stop.set()
        self._resume.set()
        self.wait(30)

    def reset(self) -> None:
        """Stop, forget the result and show the starting image again."""
        self.stop()
        self._result = None
        self._history = []
        self._set_curve(np.zeros(0), np.zeros(0))
        with self.hold_sync():
            self.step = 0
            self.value = 0.0
            self.steps_per_second = 0.0
            self._clear_snapshots()
            self.set_trait("probabilities", [])
            self._show(self._start_images(), final=False)
            self.status, self.status_kind = "reset", "info"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run is over (and its thread gone): True, or False after ``timeout``.

        Waits in short slices, so that Ctrl+C reaches a notebook or script waiting here at
        once (and never interrupts a ``Thread.join``: an interrupted join marks the running
        thread as finished on Python 3.11 and 3.12, bpo-45274).
        """
        th = self._thread
        if th is None or th is threading.current_thread():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.wait(0.1 if deadline is None else min(0.1, max(0.0, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                return False
        th.join(5)  # only the last lines of the thread are left: returns at once
        return not th.is_alive()

    #: Let go by close(): the model and the images (the last result stays).
    _released = ("_model", "_images")

    def close(self) -> None:
        """Stop the thread, leave the Selection and close the widget with its chart; the model
        and the images are let go, so the view cannot be used after this."""
        self._closed = True
        if hasattr(self, "_done"):
            self.stop()
        self._leave()
        super().close()

    # ------------------------------------------------------------------ validation
    def _check_ready(self) -> None:
        width = self._widths.get(self.layer)
        chans = self.batch_channels or [self.channel]
        if self.objective != "class":
            bad = [c for c in chans if not 0 <= c < width]
            if bad:
                raise ValueError(f"channel must be in 0..{width - 1} for layer {self.layer!r}, got {bad}")
            if self.objective == "channel" and self.layer not in self._spatial:
                raise ValueError(
                    f"layer {self.layer!r} has no spatial output: use objective='neuron' (one unit) there"
                )
        elif not self.n_classes:
            raise ValueError(self._class_note or "objective='class' needs a model whose output is (N, K) class "
                             "scores; this one has no classifier head: use 'channel' or 'neuron'")
        elif not 0 <= self.class_index < self.n_classes:
            raise ValueError(f"class_index must be in 0..{self.n_classes - 1}, got {self.class_index}")

    @t.validate("layer")
    @checked
    def _v_layer(self, proposal):
        if proposal["value"] not in self._widths:
            raise ValueError(f"unknown layer {proposal['value']!r}; layers: {list(self._widths)}")
        return proposal["value"]

    @t.validate("channel")
    @checked
    def _v_channel(self, proposal):
        c = proposal["value"]
        width = self._widths.get(self.layer)
        if width is not None and not 0 <= c < width:
            raise ValueError(f"channel must be in 0..{width - 1} for layer {self.layer!r}, got {c}")
        return c

    @t.validate("batch_channels")
    @checked
    def _v_batch(self, proposal):
        chans = [int(c) for c in proposal["value"]]
        if len(chans) > self.MAX_BATCH:
            raise ValueError(f"batch_channels may hold at most {self.MAX_BATCH} channels (one image each), "
                             f"got {len(chans)}. Hint: optimize them in several batches")
        width = self._widths.get(self.layer)
        bad = [c for c in chans if width is not None and not 0 <= c < width]
        if bad:
            raise ValueError(f"channels must be in 0..{width - 1} for layer {self.layer!r}, got {bad}")
        return chans

    @t.validate("steps")
    @checked
    def _v_steps(self, proposal):
        return int_in(proposal, 1, self.MAX_STEPS, "a positive number of steps; stop() ends a run early")

    @t.validate("lr")
    @checked
    def _v_lr(self, proposal):
        return float_in(proposal, 0.0, self.MAX_LR, "the learning rate, e.g. 0.02", above=True)

    @t.validate("class_index")
    @checked
    def _v_class_index(self, proposal):
        return int_in(proposal, 0, max(self.n_classes - 1, 0), "a class of the model's output")

    @t.validate("seed")
    @checked
    def _v_seed(self, proposal):
        return int_in(proposal, 0, self.MAX_SEED)

    @t.validate("init")
    @checked
    def _v_init(self, proposal):
        v = proposal["value"]  # one of StartImage already (the Choice trait)
        if v == "dataset" and getattr(self, "_images", None) is None:
            raise ValueError("init='dataset' needs images=...; use 'gray' or 'multiscale' otherwise")
        return v

    @t.validate("dataset_index")
    @checked
    def _v_dataset_index(self, proposal):
        n = len(self._images) if getattr(self, "_images", None) is not None else 0
        return int_in(proposal, 0, max(n - 1, 0), "an image of images=")

    @t.validate("l2", "tv")
    @checked
    def _v_weight(self, proposal):
        return float_in(proposal, 0.0, self.MAX_WEIGHT, "the weight of the penalty; 0 = off")

    @t.validate("rotate")
    @checked
    def _v_rotate(self, proposal):
        return float_in(proposal, 0.0, 180.0, "degrees: each step turns by -rotate, 0 or +rotate")

    @t.validate("blur_sigma")
    @checked
    def _v_blur_sigma(self, proposal):
        return float_in(proposal, 0.0, max(self._shape[1:]) / 2, "in pixels, at most half the image side")

    @t.validate("clip_percentile")
    @checked
    def _v_clip(self, proposal):
        return float_in(proposal, 0.0, 100.0, "a percentile")

    @t.validate("scale")
    @checked
    def _v_scale(self, proposal):
        v = float_in(proposal, 0.0, 1.0)
        if not 0 <= v < 1:
            raise ValueError(f"scale must be in 0..1 (0.1 rescales by 0.9, 1 or 1.1), got {v}")
        return v

    @property
    def max_precursors(self) -> int:
        """The largest ``precursors`` for this image size (the K starting images are made at once)."""
        c, h, w = self._shape
        return max(1, min(self.MAX_PRECURSORS, self.PRECURSOR_PIXELS // (c * h * w)))

    @t.validate("precursors")
    @checked
    def _v_precursors(self, proposal):
        return int_in(proposal, 0, self.max_precursors, "random starting images tried first; 0 = off")

    @t.validate("jitter")
    @checked
    def _v_jitter(self, proposal):
        return int_in(proposal, 0, max(self._shape[1:]), "the largest shift in pixels, at most the image side")

    @t.validate("blur_every")
    @checked
    def _v_blur_every(self, proposal):
        return int_in(proposal, 0, self.MAX_STEPS, "blur after every n-th step; 0 = off")

    @t.observe("layer")
    def _on_layer(self, change):
        width = self._widths.get(change["new"], 0)
        self._sel_muted = True  # a fallback of this view's own, not a choice to share
        try:
            if self.channel >= width:
                self.channel = 0
            if self.batch_channels and any(c >= width for c in self.batch_channels):
                self.batch_channels = [c for c in self.batch_channels if c < width]
        finally:
            self._sel_muted = False

    @t.observe("init", "seed", "dataset_index", "batch_channels")
    def _on_start_image(self, _change) -> None:
        """Before any run, the page shows the starting image the settings give."""
        if getattr(self, "_ready", False) and self._result is None and self._done.is_set():
            self._show(self._start_images(), final=False)

    # ------------------------------------------------------------------ the shared Selection
    def _cannot_show(self, name: str, value: Any) -> str:
        """The shared Selection's layers the optimizer cannot target, and channels its layer
        lacks, in words (SelectionMixin shows them in ``selection_note``)."""
        if name == "layer" and value and value not in self._widths:
            return (f"The shared selection is on layer {value!r}, which the optimizer cannot target (its "
                    f"output is not a feature map or a vector of units); it stays on {self.layer!r}.")
        if name == "channel" and isinstance(value, int) and value >= self._widths.get(self.layer, 0):
            return (f"The shared selection's channel {value} is not one of {self.layer!r} "
                    f"(0..{self._widths[self.layer] - 1}); the optimizer keeps channel {self.channel}.")
        return ""

    # ------------------------------------------------------------------ events from the page
    # (BaseWidget._dispatch_message routes the types of messages.json to these)
    def _on_start(self, _content: Any) -> None:
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - shown in the view, never a traceback from the page
            self._fail(exc)

    def _on_pause(self, _content: Any) -> None:
        self.pause()

    def _on_resume(self, _content: Any) -> None:
        self.resume()

    def _on_stop(self, _content: Any) -> None:
        self._stop.set()  # the thread ends within a step; the kernel does not wait for it here
        self._resume.set()

    def _on_reset(self, _content: Any) -> None:
        self.reset()

    def _fail(self, exc: BaseException, prefix: str = "") -> None:
        """Show why a run failed or was refused: the status line, in the error colour."""
        text = str(exc) if type(exc) in (ValueError, RuntimeError) else f"{type(exc).__name__}: {exc}"
        self.last_error = f"{type(exc).__name__}: {exc}"
        with self.hold_sync():
            self.status = prefix + text
            self.status_kind = "error"

    # ------------------------------------------------------------------ what the page shows
    def _targets(self, b: int) -> list[str]:
        """What each of ``b`` images maximizes (or minimizes), as the gallery labels it."""
        if self.objective == "class":
            return [self.class_name(self.class_index)] * b
        chans = list(self.batch_channels) or [self.channel] * b
        what = "neuron" if self.objective == "neuron" else "channel"
        return [f"{what} {c}" for c in chans]

    def _show(self, images: torch.Tensor, *, final: bool, predictions: list | None = None,
              dead: list[bool] | None = None) -> None:
        arr = images_uint8(images)
        b = arr.shape[0]
        info = {"step": self.step, "final": final, "channels": list(self.batch_channels) or [self.channel],
                "labels": self._targets(b), "predictions": predictions or [None] * b,
                "dead": dead or [False] * b}
        with self.hold_sync():
            self._image = arr
            self._image_info = info

    #: The live loss curve shows at most this many points (evenly spaced steps, the last one
    #: always): a long run's full history, redrawn 15 times a second, would swamp the page.
    CURVE_POINTS = 1000
    #: The live curve is redrawn at most this often (bqplot redraws the whole line each time:
    #: the costliest update a page gets from a run, measured to slow the other views' updates)
    CURVE_UPDATES_PER_SECOND = 3

    def _draw_curve(self, live: bool = False) -> None:
        now = time.perf_counter()
        if live and now - getattr(self, "_curve_at", 0.0) < 1.0 / self.CURVE_UPDATES_PER_SECOND:
            return
        self._curve_at = now
        h = np.asarray(self._history, dtype=np.float64)
        steps = np.arange(1, len(h) + 1, dtype=np.float64)
        if len(h) > self.CURVE_POINTS:
            keep = np.unique(np.linspace(0, len(h) - 1, self.CURVE_POINTS).round().astype(np.int64))
            steps, h = steps[keep], h[keep]
        self._set_curve(steps, h)

    # ------------------------------------------------------------------ background run
    def _run(self) -> None:
        n_steps = self.steps
        self._history = []
        last = [0.0]
        t_start = time.perf_counter()
        min_gap = 1.0 / self.MAX_UPDATES_PER_SECOND

        def push(done: int, image_fn, live: bool = True) -> None:
            with self.hold_sync():
                self.step = done
                self.value = self._history[-1] if self._history else 0.0
                elapsed = time.perf_counter() - t_start
                self.steps_per_second = done / elapsed if elapsed > 0 else 0.0
            self._show(image_fn().detach(), final=False)
            self._draw_curve(live=live)

        def callback(step: int, values: torch.Tensor, image_fn) -> bool:
            self._history.append(float(values.mean()))
            done = step + 1  # the core counts from 0; the page from 1, as many steps as are done
            if not self._resume.is_set():
                push(done, image_fn, live=False)  # paused: the whole curve so far
                self.status = f"paused at step {done}"
                while not self._resume.wait(0.1):
                    if self._stop.is_set():
                        break
                self.status = "running ..."
            now = time.perf_counter()
            if now - last[0] >= min_gap:
                last[0] = now
                push(done, image_fn)
            return False

        try:
            with softmax_notice_off():  # the view's note says how a final softmax is treated
                self._optimize(n_steps, callback, t_start)
        except opt.DeadTargetError as exc:
            self._error = exc
            with self.hold_sync():
                self.status = f"dead map: {exc}"
                self.status_kind = "warning"
        except Exception as exc:  # noqa: BLE001 - shown in the view; run() re-raises it
            self._error = exc
            self._fail(exc, prefix="error: ")
        finally:
            self.running = False
            self.paused = False
            self._done.set()

    def _start_text(self) -> str:
        """Where the run started from, in the words of the start-image controls."""
        if self.param == "fourier":
            return "a random Fourier spectrum"
        if self.precursors:
            return f"the best of {self.precursors} random {self.init if self.init != 'dataset' else 'gray'} starts"
        if self.init == "dataset":
            return f"dataset image {self.dataset_index}"
        return f"the {self.init!r} start"

    def _dead_text(self, objective: opt.Objective, dead: torch.Tensor, steps: int) -> str:
        """Why the images whose objective stayed exactly 0 did not change, and what to try (the
        advice of :class:`~cnnwidgets.core.optimize.DeadTargetError`)."""
        b = len(dead)
        idx = [i for i in range(b) if bool(dead[i])]
        targets = self._targets(b)
        if self.objective == "class":
            what = f"the logit of {targets[0]}"
        elif b == 1:
            what = f"{targets[0]} of {self.layer!r}" + (" (its centre unit)" if self.objective == "neuron" else "")
        else:
            shown = ", ".join(str(self._channels()[i]) for i in idx[:12]) + (", ..." if len(idx) > 12 else "")
            what = (f"{'all ' if len(idx) == b else ''}{len(idx)} of the {b} {self.objective}s of {self.layer!r} "
                    f"({shown})")
        hint = _pre_relu_hint(self._model, objective) if self.objective != "class" else ""
        layer_tip = f", or the pre-ReLU convolution layer{hint}" if hint else ", or another layer"
        return (f"dead map: {what} stayed exactly 0 at every one of the {steps} steps from {self._start_text()}: "
                "a dead map for this kind of input (e.g. a ReLU map that never turns on), so there is no gradient "
                "to follow. Try another starting image (init 'multiscale', or 'dataset' for an image of images=), "
                f"precursors (random starts tried first), another {'class' if self.objective == 'class' else 'channel'}"
                f"{layer_tip}.")

    def _optimize(self, n_steps: int, callback: Any, t_start: float) -> None:
        """The run itself: precursor scan, optimization, probabilities, final state."""
        with self.hold_sync():
            self.status = "running ..."
            self.status_kind = "info"
        objective = self._objective()
        init: Any = self._start_images()
        if self.precursors and self.param == "pixel":
            self.status = f"precursor scan over {self.precursors} random starts ..."
            best, value, _ = opt.precursor_scan(
                self._model, objective, self._shape, candidates=self.precursors,
                init="multiscale" if self.init == "multiscale" else "gray",
                mean=self._mean, std=self._std, seed=self.seed, stop=self._stop, output=self._output,
                chunk=max(1, 2**20 // max(1, self._shape[0] * self._shape[1] * self._shape[2])),
            )
            init = best.repeat(self.batch, 1, 1, 1)
            self.status = "running ..."
        result = opt.optimize(
            self._model, objective, self._shape, batch=self.batch, steps=n_steps, lr=self.lr,
            step_rule=self.step_rule, param=self.param, init=init if self.param == "pixel" else None,
            mean=self._mean, std=self._std, seed=self.seed, snapshots="log", output=self._output,
            converge={"window": 20, "rtol": 1e-4} if self.converge else None,
            callback=callback, stop=self._stop, **self._settings(),
        )
        probs = (opt.class_probabilities(self._model, result.images, mean=self._mean, std=self._std,
                                         output=self._output) if self.n_classes else None)
        self._result = result
        self._history = list(result.history)
        elapsed = time.perf_counter() - t_start
        predictions = None
        with self.hold_sync():
            self.step = result.steps_done
            self.value = self._history[-1] if self._history else 0.0
            self.steps_per_second = result.steps_done / elapsed if elapsed > 0 else 0.0
            if probs is not None:
                self.set_trait("probabilities", [float(p) for p in probs.mean(0)] if self.batch > 1 else
                               [float(p) for p in probs[0]])
                tops = probs.argmax(dim=1).tolist()
                predictions = [{"class": int(k), "name": self.classes[k] if k < len(self.classes) else None,
                                "p": float(probs[i, k])} for i, k in enumerate(tops)]
        dead = result.dead
        self._show(result.images, final=True, predictions=predictions, dead=[bool(d) for d in dead])
        self._draw_curve()
        self._send_snapshots(result)
        how = "stopped" if result.stopped else "converged" if result.converged else "done"
        top = int(np.argmax(self.probabilities)) if self.probabilities else -1
        finite = np.isfinite(np.asarray(self._history, dtype=np.float64))
        if not finite.all() or not bool(torch.isfinite(result.images).all()):
            # NaN/inf reach the page as null (BaseWidget.get_state); the status says why
            first = int(np.argmin(finite)) + 1 if not finite.all() else result.steps_done
            self._fail(ValueError(f"diverged: the objective is NaN or infinite from step {first} on. Hint: lower "
                                  f"lr (now {self.lr:g}) or the penalty weights, or check the model for NaN outputs"))
        elif result.steps_done and bool(dead.any()):
            text = self._dead_text(objective, dead, result.steps_done)
            with self.hold_sync():
                self.status = text if bool(dead.all()) else f"{how} after {result.steps_done} steps; {text}"
                self.status_kind = "warning"
        else:
            says = (f"; the model says {self.class_name(top)} with p = {max(self.probabilities):.3f}"
                    + (" (mean over the batch)" if self.batch > 1 else "") if top >= 0 else "")
            with self.hold_sync():
                self.status = f"{how} after {result.steps_done} steps{says}"
                self.status_kind = "info"

    def _send_snapshots(self, result: opt.OIPResult) -> None:
        steps = sorted(result.snapshots)
        if not steps:
            self._clear_snapshots()
            return
        with self.hold_sync():
            self._snapshots = np.stack([images_uint8(result.snapshots[s][:1])[0] for s in steps])
            self.snapshot_steps = [s + 1 for s in steps]  # the core's 0-based step k: k + 1 done

    def _clear_snapshots(self) -> None:
        with self.hold_sync():
            self._snapshots = None
            self.snapshot_steps = []

    def __repr__(self) -> str:
        return f"OIPOptimizer(layer={self.layer!r}, channel={self._channels()!r}, steps={self.steps})"
