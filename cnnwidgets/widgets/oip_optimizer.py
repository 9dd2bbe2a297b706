"""OIPOptimizer: activation maximization, live, in a background thread."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import bqplot as bq
import ipywidgets as ipw
import numpy as np
import torch
import traitlets as t
from torch import nn

from ..core import optimize as opt
from ..core.images import ImageSet
from ..core.model import capture_activations, check_model, model_device
from ._base import BaseWidget, checked, one_of
from ._worker import model_lock
from .selection import Selection, SelectionMixin

__all__ = ["OIPOptimizer"]


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """B x C x H x W in [0, 1] -> uint8 B x H x W x C."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


class OIPOptimizer(SelectionMixin, BaseWidget):
    """Grow the input pattern a feature map, neuron or class responds to most.

    Gradient ascent from a starting image, with regularizers and robustness transforms, in a
    background thread: the image and the loss curve update live (at most ~15 times a second),
    Start / Pause / Stop / Reset work while it runs, and the notebook stays usable.

    Parameters
    ----------
    model : nn.Module
    layer : str, optional
        Layer of the objective (default: the last conv layer).
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

    # --- objective
    layer = t.Unicode("").tag(sync=True)
    layers = t.List(t.Unicode(), read_only=True).tag(sync=True)
    channel = t.Int(0).tag(sync=True)
    batch_channels = t.List(t.Int()).tag(sync=True)
    objective = t.Unicode("channel").tag(sync=True)  # "channel" | "neuron" | "class"
    negate = t.Bool(False).tag(sync=True)
    class_index = t.Int(0).tag(sync=True)
    n_classes = t.Int(0, read_only=True).tag(sync=True)
    # --- optimization
    steps = t.Int(200).tag(sync=True)
    lr = t.Float(0.02).tag(sync=True)
    step_rule = t.Unicode("rms").tag(sync=True)  # "rms" | "adam"
    param = t.Unicode("pixel").tag(sync=True)  # "pixel" | "fourier"
    init = t.Unicode("gray").tag(sync=True)  # "gray" | "multiscale" | "dataset"
    dataset_index = t.Int(0).tag(sync=True)
    seed = t.Int(0).tag(sync=True)
    precursors = t.Int(0).tag(sync=True)  # K random starts tried first; 0 = off
    converge = t.Bool(False).tag(sync=True)
    # --- regularizers and transforms
    l2 = t.Float(0.0).tag(sync=True)
    tv = t.Float(0.0).tag(sync=True)
    blur_every = t.Int(0).tag(sync=True)
    blur_sigma = t.Float(0.5).tag(sync=True)
    clip_percentile = t.Float(0.0).tag(sync=True)
    clip_by = t.Unicode("norm").tag(sync=True)  # "norm" | "contribution"
    jitter = t.Int(0).tag(sync=True)
    rotate = t.Float(0.0).tag(sync=True)
    scale = t.Float(0.0).tag(sync=True)  # random rescale by 1 - s, 1 or 1 + s each step
    # --- state
    running = t.Bool(False).tag(sync=True)
    paused = t.Bool(False).tag(sync=True)
    step = t.Int(0).tag(sync=True)
    steps_per_second = t.Float(0.0).tag(sync=True)
    value = t.Float(0.0).tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    # --- data
    _image = t.Bytes(b"").tag(sync=True)
    _image_meta = t.Dict().tag(sync=True)
    _snapshots = t.Bytes(b"").tag(sync=True)
    _snapshots_meta = t.Dict().tag(sync=True)
    probabilities = t.List(t.Float(), read_only=True).tag(sync=True)
    chart = t.Instance(bq.Figure).tag(sync=True, **ipw.widget_serialization)

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
    ) -> None:
        self._model = check_model(model)
        self._device = model_device(model)
        self._images = ImageSet(images, mean=mean, std=std) if images is not None else None
        if input_shape is not None:
            shape = tuple(int(v) for v in input_shape)
            if len(shape) != 3 or min(shape) < 1:
                raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}")
        elif self._images is not None:
            shape = self._images.shape
        else:
            raise ValueError(
                "OIPOptimizer needs the input's (C, H, W): pass input_shape=(C, H, W) or images=... "
                "(e.g. images=demo.images)"
            )
        self._shape = shape
        self._mean, self._std = mean, std
        if selection is not None and not isinstance(selection, Selection):
            self._join(selection)  # raises the TypeError with its hint
        probe = torch.full((1, *shape), 0.5)
        probe = self._normalize(probe).to(self._device)
        with model_lock(self._model):
            try:
                logits, acts = capture_activations(self._model, probe)
            except RuntimeError as exc:
                raise ValueError(f"the model rejects inputs of shape {shape} (C, H, W): {exc}") from None
        modules = dict(self._model.named_modules())
        self._widths = {k: int(v.shape[1]) for k, v in acts.items()
                        if v.dim() in (2, 4) and not isinstance(modules[k], (nn.Sequential, nn.ModuleList, nn.ModuleDict))}
        self._spatial = {k for k, v in acts.items() if v.dim() == 4}
        names = list(self._widths)
        convs = [k for k in names if isinstance(modules[k], nn.Conv2d)]
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._result: opt.OIPResult | None = None
        self._history: list[float] = []
        self._closed = False
        self._ready = False
        super().__init__(chart=self._make_chart())
        self.set_trait("layers", names)
        # a class count only for a classifier's (N, K) output; 0 for a features-only model
        self.set_trait("n_classes", int(logits.shape[-1]) if logits.dim() == 2 else 0)
        with self.hold_trait_notifications():
            self.layer = layer if layer is not None else (convs[-1] if convs else names[-1])
            if isinstance(channel, (list, tuple, np.ndarray, torch.Tensor)):
                chans = [int(c) for c in channel]
                if not chans:
                    raise ValueError("channel list is empty; give at least one channel")
                self.batch_channels = chans
                self.channel = chans[0]
            else:
                self.channel = int(channel)
            self.steps, self.lr, self.seed = steps, lr, seed
            self.objective, self.param, self.init, self.step_rule = objective, param, init, step_rule
        self._ready = True
        self._join(selection, explicit=("layer", "channel") if layer is not None else ())
        self._error: Exception | None = None
        self._show(self._start_images(), final=False)
        self.on_msg(self._on_page_message)

    # ------------------------------------------------------------------ helpers
    def _normalize(self, img: torch.Tensor) -> torch.Tensor:
        if self._mean is None:
            return img
        m = torch.as_tensor(self._mean, dtype=img.dtype).reshape(1, -1, 1, 1)
        s = torch.as_tensor(self._std, dtype=img.dtype).reshape(1, -1, 1, 1)
        return (img - m) / s

    def _make_chart(self) -> bq.Figure:
        xs, ys = bq.LinearScale(), bq.LinearScale()
        self._line = bq.Lines(x=np.zeros(0), y=np.zeros(0), scales={"x": xs, "y": ys}, colors=["#4c78a8"])
        return bq.Figure(
            marks=[self._line],
            axes=[bq.Axis(scale=xs, label="step"), bq.Axis(scale=ys, orientation="vertical", label="objective")],
            title="objective per step", layout=ipw.Layout(width="420px", height="240px"),
            fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 10},
        )

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

            img = torch.from_numpy(to_display(self._images.x[i], mean=self._images.mean, std=self._images.std))
            img = img.permute(2, 0, 1).float().div(255.0)[None]
            if img.shape[1] != self._shape[0]:
                img = self._images.x[i : i + 1].clamp(0, 1)
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
        if self.blur_every:
            ops.append(opt.blur_every(self.blur_every, self.blur_sigma))
        if self.clip_percentile:
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
        """
        if steps is not None:
            self.steps = steps
        self.start()
        if not block:
            return None
        self.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result.images.numpy().astype(np.float32)

    def start(self) -> None:
        """Start (or restart) the optimization in the background."""
        self.stop()
        self._check_ready()
        self._stop.clear()
        self._resume.set()
        self._error: Exception | None = None
        self.paused = False
        self.running = True
        self._thread = threading.Thread(target=self._run, name="cnnwidgets-oip", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """Pause after the current step; :meth:`resume` goes on."""
        if self.running:
            self._resume.clear()
            self.paused = True

    def resume(self) -> None:
        self._resume.set()
        self.paused = False

    def stop(self) -> None:
        """Stop the optimization (takes effect within one step)."""
        self._stop.set()
        self._resume.set()
        th = self._thread
        if th is not None and th.is_alive() and th is not threading.current_thread():
            th.join(timeout=30)

    def reset(self) -> None:
        """Stop, forget the result and show the starting image again."""
        self.stop()
        self._result = None
        self._history = []
        self._line.x, self._line.y = np.zeros(0), np.zeros(0)
        self.step = 0
        self.value = 0.0
        self._snapshots, self._snapshots_meta = b"", {}
        self.set_trait("probabilities", [])
        self._show(self._start_images(), final=False)
        self.status = "reset"

    def wait(self, timeout: float | None = None) -> bool:
        th = self._thread
        if th is not None:
            th.join(timeout)
            return not th.is_alive()
        return True

    def close(self) -> None:
        """Stop the thread and close the widget."""
        self._closed = True
        if hasattr(self, "_stop"):
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
            raise ValueError("objective='class' needs a model whose output is (N, K) class scores; "
                             "this one has no classifier head: use 'channel' or 'neuron'")
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
        width = self._widths.get(self.layer)
        bad = [c for c in chans if width is not None and not 0 <= c < width]
        if bad:
            raise ValueError(f"channels must be in 0..{width - 1} for layer {self.layer!r}, got {bad}")
        return chans

    @t.validate("steps")
    @checked
    def _v_steps(self, proposal):
        if proposal["value"] < 1:
            raise ValueError(f"steps must be a positive number of steps, got {proposal['value']}")
        return proposal["value"]

    @t.validate("lr")
    @checked
    def _v_lr(self, proposal):
        v = float(proposal["value"])
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"lr (learning rate) must be > 0, got {v}")
        return v

    @t.validate("objective")
    @checked
    def _v_objective(self, proposal):
        return one_of(proposal, ("channel", "neuron", "class"))

    @t.validate("param")
    @checked
    def _v_param(self, proposal):
        return one_of(proposal, ("pixel", "fourier"))

    @t.validate("init")
    @checked
    def _v_init(self, proposal):
        return one_of(proposal, ("gray", "multiscale", "dataset"))

    @t.validate("step_rule")
    @checked
    def _v_rule(self, proposal):
        return one_of(proposal, ("rms", "adam"))

    @t.validate("l2", "tv", "blur_sigma", "rotate")
    @checked
    def _v_nonneg(self, proposal):
        v = float(proposal["value"])
        if not v >= 0:
            raise ValueError(f"{proposal['trait'].name} must be >= 0, got {v}")
        return v

    @t.validate("clip_percentile")
    @checked
    def _v_clip(self, proposal):
        v = float(proposal["value"])
        if not 0 <= v <= 100:
            raise ValueError(f"clip_percentile must be a percentile in 0..100, got {v}")
        return v

    @t.validate("clip_by")
    @checked
    def _v_clip_by(self, proposal):
        return one_of(proposal, ("norm", "contribution"))

    @t.validate("scale")
    @checked
    def _v_scale(self, proposal):
        v = float(proposal["value"])
        if not 0 <= v < 1:
            raise ValueError(f"scale must be in 0..1 (0.1 rescales by 0.9, 1 or 1.1), got {v}")
        return v

    @t.validate("blur_every", "jitter", "precursors")
    @checked
    def _v_nonneg_int(self, proposal):
        if proposal["value"] < 0:
            raise ValueError(f"{proposal['trait'].name} must be >= 0, got {proposal['value']}")
        return proposal["value"]

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

    # ------------------------------------------------------------------ events from the page
    def _on_page_message(self, _widget, content, _buffers):
        try:
            kind = content.get("type") if isinstance(content, dict) else None
            if kind == "start":
                self.start()
            elif kind == "pause":
                self.pause()
            elif kind == "resume":
                self.resume()
            elif kind == "stop":
                self._stop.set()
                self._resume.set()
            elif kind == "reset":
                self.reset()
        except Exception as exc:  # noqa: BLE001 - never a traceback from the page
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.status = str(exc)

    # ------------------------------------------------------------------ background run
    def _show(self, images: torch.Tensor, *, final: bool) -> None:
        arr = _to_uint8(images)
        b, h, w, c = arr.shape
        with self.hold_sync():
            self._image = arr.tobytes()
            self._image_meta = {"b": b, "h": h, "w": w, "c": c, "step": self.step, "final": final,
                                "channels": list(self.batch_channels) or [self.channel]}

    def _run(self) -> None:
        n_steps = self.steps
        self._history = []
        last = [0.0]
        t_start = time.perf_counter()
        min_gap = 1.0 / self.MAX_UPDATES_PER_SECOND

        def push(step: int, image_fn) -> None:
            with self.hold_sync():
                self.step = step
                self.value = self._history[-1] if self._history else 0.0
                elapsed = time.perf_counter() - t_start
                self.steps_per_second = step / elapsed if elapsed > 0 else 0.0
            self._show(image_fn().detach(), final=False)
            xs = np.arange(1, len(self._history) + 1, dtype=np.float64)
            with self._line.hold_sync():
                self._line.x, self._line.y = xs, np.asarray(self._history, dtype=np.float64)

        def callback(step: int, values: torch.Tensor, image_fn) -> bool:
            self._history.append(float(values.mean()))
            if not self._resume.is_set():
                push(step, image_fn)
                self.status = f"paused at step {step}"
                while not self._resume.wait(0.1):
                    if self._stop.is_set():
                        break
                self.status = "running ..."
            now = time.perf_counter()
            if now - last[0] >= min_gap:
                last[0] = now
                push(step, image_fn)
            return False

        try:
            self.status = "running ..."
            objective = self._objective()
            init: Any = self._start_images()
            if self.precursors:
                self.status = f"precursor scan over {self.precursors} random starts ..."
                with model_lock(self._model):
                    best, value, _ = opt.precursor_scan(
                        self._model, objective, self._shape, candidates=self.precursors,
                        init="multiscale" if self.init == "multiscale" else "gray",
                        mean=self._mean, std=self._std, seed=self.seed,
                    )
                init = best.repeat(self.batch, 1, 1, 1)
            with model_lock(self._model):
                result = opt.optimize(
                    self._model, objective, self._shape, batch=self.batch, steps=n_steps, lr=self.lr,
                    step_rule=self.step_rule, param=self.param, init=init if self.param == "pixel" else None,
                    mean=self._mean, std=self._std, seed=self.seed, snapshots="log",
                    converge={"window": 20, "rtol": 1e-4} if self.converge else None,
                    callback=callback, stop=self._stop, **self._settings(),
                )
                probs = (opt.class_probabilities(self._model, result.images, mean=self._mean, std=self._std)
                         if self.n_classes else None)
            self._result = result
            self._history = list(result.history)
            elapsed = time.perf_counter() - t_start
            with self.hold_sync():
                self.step = result.steps_done
                self.value = self._history[-1] if self._history else 0.0
                self.steps_per_second = result.steps_done / elapsed if elapsed > 0 else 0.0
                if probs is not None:
                    self.set_trait("probabilities", [float(p) for p in probs.mean(0)] if self.batch > 1 else
                                   [float(p) for p in probs[0]])
            self._show(result.images, final=True)
            self._line.x = np.arange(1, len(self._history) + 1, dtype=np.float64)
            self._line.y = np.asarray(self._history, dtype=np.float64)
            self._send_snapshots(result)
            how = "stopped" if result.stopped else "converged" if result.converged else "done"
            top = int(np.argmax(self.probabilities)) if self.probabilities else -1
            self.status = (f"{how} after {result.steps_done} steps; the model says class {top} "
                           f"with p = {max(self.probabilities):.3f}" if top >= 0 else how)
        except opt.DeadTargetError as exc:
            self._error = exc
            self.status = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown in the view; run() re-raises it
            self._error = exc
            self.status = f"error: {type(exc).__name__}: {exc}"
            self.last_error = self.status
        finally:
            self.running = False
            self.paused = False

    def _send_snapshots(self, result: opt.OIPResult) -> None:
        steps = sorted(result.snapshots)
        if not steps:
            return
        first = [_to_uint8(result.snapshots[s][:1])[0] for s in steps]
        arr = np.stack(first)
        self._snapshots = arr.tobytes()
        self._snapshots_meta = {"steps": steps, "h": arr.shape[1], "w": arr.shape[2], "c": arr.shape[3]}

    def _export_state(self) -> dict[str, Any]:
        """The objective per step as float32 bytes, for the exported page's static curve."""
        return {"_history": np.asarray(self.history, dtype=np.float32).tobytes()}

    def __repr__(self) -> str:
        return f"OIPOptimizer(layer={self.layer!r}, channel={self._channels()!r}, steps={self.steps})"
