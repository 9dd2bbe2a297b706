"""SaliencyViewer: gradient attribution overlaid on the image, with the class probabilities."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import Any

import bqplot as bq
import ipywidgets as ipw
import numpy as np
import torch
import traitlets as t
from torch import nn

from ..core.colormaps import blend_overlay, heat_codes
from ..core.colormaps import lut as make_lut
from ..core.images import ImageSet
from ..core.runner import using_model
from ..core.model import spatial_layers
from ..core.model import capture_activations, check_model, conv_layers, model_device
from ..core.saliency import BASELINES, METHODS, REGISTRY, attribute, final_softmax, logits_only, softmax_notice_off, to_heatmap
from ._base import (BaseWidget, Float, Int, PageScheduled, bounded_int, check_labels, checked, close_widgets, float_in,
                    frontend_safe, int_in, one_of)
from ._worker import LatestWorker
from .selection import Selection, SelectionMixin

__all__ = ["SaliencyViewer"]

#: Methods shown side by side in compare mode by default.
COMPARE_DEFAULT = ["vanilla", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "guided_gradcam"]
#: Target codes shared with :class:`cnnwidgets.Selection`.
PREDICTED, TRUE_LABEL = -1, -2


class SaliencyViewer(PageScheduled, SelectionMixin, BaseWidget):
    """Where the model looks: an attribution map over the input image.

    Parameters
    ----------
    model : nn.Module
        A PyTorch classifier (logits out; a final softmax is bypassed, and said so).
    images : tensor or array
        N x C x H x W floats the model takes as is, or uint8 N x H x W x C.
    labels, classes : optional
        True labels (N) and class names (at least as many as the model's outputs).
    method : str
        One of :attr:`methods`: ``"vanilla"``, ``"grad_x_input"``, ``"smoothgrad"``,
        ``"integrated_gradients"``, ``"guided_backprop"``, ``"deconvnet"``, ``"gradcam"``,
        ``"guided_gradcam"``, ``"layer_gradient"``.
    target : "predicted", "true", int or class name
        The class whose score is explained.
    layer : str, optional
        Layer for Grad-CAM and layer gradients (default: the last conv layer).
    selection : cnnwidgets.Selection, optional
        Shares image index, layer, channel and target with other views.
    mean, std : optional
        The model's input normalization, for display.

    Examples
    --------
    >>> from cnnwidgets import SaliencyViewer, demo
    >>> d = demo.mnist("val")
    >>> sv = SaliencyViewer(d.model, d.images, d.labels, d.classes, method="integrated_gradients")
    >>> sv.attribution(0, steps=32).shape
    (1, 28, 28)
    """

    _bundle = "saliency_viewer"
    _export_keys = ("index", "_image", "_image_meta", "_probs", "_heat", "_heat_meta")
    _shared = ("index", "layer", "channel", "target")
    #: The toolbar's controls and clicks on panels (js/src/widgets/saliency_viewer.js), and
    #: the grid view's size.
    _page_writable = frozenset({"index", "method", "target", "layer", "display", "opacity", "view", "steps",
                                "samples", "noise", "baseline", "grid_size"})
    #: Largest Integrated Gradients ``steps`` and SmoothGrad ``samples`` (passes per map), and
    #: largest number of images in the grid view.
    MAX_PASSES = 1000
    MAX_GRID = 100

    # --- choices
    index = Int(0).tag(sync=True)
    n_images = Int(0, read_only=True).tag(sync=True)
    method = t.Unicode("vanilla").tag(sync=True)
    methods = t.List(t.Unicode(), read_only=True).tag(sync=True)
    #: Per method, from the core's one registry: its menu label and the options it takes
    #: (``layer``, ``steps``, ``samples``), so the page keeps no method list of its own.
    method_info = t.Dict(read_only=True).tag(sync=True)
    target = Int(PREDICTED).tag(sync=True)
    class_names = t.List(t.Unicode(), read_only=True).tag(sync=True)
    layer = t.Unicode("").tag(sync=True)
    layers = t.List(t.Unicode(), read_only=True).tag(sync=True)
    channel = Int(-1).tag(sync=True)
    display = t.Unicode("abs").tag(sync=True)  # "abs" | "signed"
    cmap = t.Unicode("inferno").tag(sync=True)
    opacity = Float(0.6).tag(sync=True)
    view = t.Unicode("single").tag(sync=True)  # "single" | "compare" | "grid"
    compare_methods = t.List(t.Unicode(), default_value=list(COMPARE_DEFAULT)).tag(sync=True)
    grid_size = Int(12).tag(sync=True)
    steps = Int(50).tag(sync=True)
    samples = Int(25).tag(sync=True)
    noise = Float(0.15).tag(sync=True)
    baseline = t.Unicode("black").tag(sync=True)

    # --- status
    busy = t.Bool(False).tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    progress = Float(-1.0).tag(sync=True)

    # --- data (binary)
    _image = t.Bytes(b"").tag(sync=True)
    _image_meta = t.Dict().tag(sync=True)
    #: float32 (K,) class probabilities of the shown image; drawn by the page itself where no
    #: widget manager renders ``chart`` (a standalone HTML export).
    _probs = t.Bytes(b"").tag(sync=True)
    _heat = t.Bytes(b"").tag(sync=True)
    _heat_meta = t.Dict().tag(sync=True)
    _heat_lut = t.Bytes(b"").tag(sync=True)
    _panels = t.Bytes(b"").tag(sync=True)
    _panel_images = t.Bytes(b"").tag(sync=True)
    _panels_meta = t.Dict().tag(sync=True)

    chart = t.Instance(bq.Figure).tag(sync=True, **ipw.widget_serialization)

    def __init__(
        self,
        model: nn.Module,
        images: Any,
        labels: Sequence[int] | torch.Tensor | None = None,
        classes: Sequence[str] | None = None,
        *,
        method: str = "vanilla",
        target: str | int = "predicted",
        layer: str | None = None,
        selection: Any = None,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
    ) -> None:
        self._model = check_model(model)
        self._device = model_device(model)
        self._images = ImageSet(images, check_labels(labels), classes, mean=mean, std=std)
        if selection is not None and not isinstance(selection, Selection):
            self._join(selection)  # raises the TypeError with its hint
        logits = self._logits(0)
        self._n_classes = int(logits.shape[-1])
        self._images.check_classes(self._n_classes)
        names = self._images.classes[: self._n_classes] if self._images.classes else [str(i) for i in range(self._n_classes)]
        spatial = self._spatial_layers()
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}; got {method!r}")
        self._ready = False
        self._from_page = False
        self._closed = False
        self._stop = threading.Event()
        chart = self._make_chart(names)
        try:  # a failure closes what was started: threads, the chart's widgets, the comm
            super().__init__(chart=chart)
            self._worker = LatestWorker("cnnwidgets-saliency", owner=self)
            self._panel_worker = LatestWorker("cnnwidgets-saliency-panels", owner=self, stop=self._stop)
            self.set_trait("n_images", len(self._images))
            self.set_trait("methods", list(METHODS))
            self.set_trait("method_info", {m: {"label": spec.label, "layer": spec.takes_layer, "steps": spec.takes_steps,
                                               "samples": spec.takes_samples} for m, spec in REGISTRY.items()})
            self.set_trait("class_names", names)
            self.set_trait("layers", spatial)
            self.method = method
            self.target = self._parse_target(target)
            convs = [n for n in conv_layers(model) if n in spatial]
            self.layer = layer if layer is not None else (convs[-1] if convs else spatial[-1])
            self._ready = True
            self._join(selection, explicit=("layer",) if layer is not None else ())
            self._update_image()
            self._update_heat()
            self.on_msg(self._on_page_message)
        except BaseException:
            self.close()
            close_widgets(chart)  # if the constructor failed before the chart was held
            raise

    # ------------------------------------------------------------------ setup helpers
    def _logits(self, index: int) -> torch.Tensor:
        with using_model(self._model) as run, logits_only(run):
            try:
                out, _ = capture_activations(run, self._images.x[index : index + 1].to(self._device), [])
            except RuntimeError as exc:
                raise ValueError(
                    f"the model rejects images of shape {self._images.shape} (C, H, W): {exc}"
                ) from None
        return out.reshape(-1).float().cpu()

    def _spatial_layers(self) -> list[str]:
        return spatial_layers(self._model, self._images.x[:1].to(self._device))

    def _parse_target(self, target: str | int) -> int:
        if target in ("predicted", None):
            return PREDICTED
        if target in ("true", "label"):
            return TRUE_LABEL
        if isinstance(target, str):
            names = list(self.class_names)
            if target in names:
                return names.index(target)
            raise ValueError(f"target {target!r} is not a class name; use 'predicted', 'true', an index or one of {names}")
        return int(target)

    def _make_chart(self, names: list[str]) -> bq.Figure:
        xs = bq.OrdinalScale()
        ys = bq.LinearScale(min=0.0, max=1.0)
        self._bars = bq.Bars(
            x=names, y=np.zeros(len(names)), scales={"x": xs, "y": ys}, colors=["#4c78a8"],
            interactions={"click": "select"}, selected_style={"fill": "#f58518"}, unselected_style={"opacity": 0.8},
        )
        self._bars.observe(self._on_bar_select, "selected")
        ax = bq.Axis(scale=xs, label="class")
        ay = bq.Axis(scale=ys, orientation="vertical", tick_format=".0%", label="probability")
        return bq.Figure(
            marks=[self._bars], axes=[ax, ay], title="class probabilities (click a bar to explain it)",
            layout=ipw.Layout(width="420px", height="240px"),
            fig_margin={"top": 40, "bottom": 40, "left": 55, "right": 10},
        )

    # ------------------------------------------------------------------ public API
    @property
    def model(self) -> nn.Module:
        return self._model

    def probabilities(self, index: int | None = None) -> np.ndarray:
        """Softmax of the logits for image ``index``, float32 (K,)."""
        index = self.index if index is None else self._images.check_index(index)
        return torch.softmax(self._logits(index), 0).numpy()

    def resolve_target(self, index: int | None = None, target: int | str | None = None) -> int:
        """The class index explained for image ``index`` under ``target`` (default: the widget's)."""
        index = self.index if index is None else self._images.check_index(index)
        code = self.target if target is None else self._parse_target(target)
        if code == PREDICTED:
            return int(self._logits(index).argmax())
        if code == TRUE_LABEL:
            label = self._images.label(index)
            return int(self._logits(index).argmax()) if label is None else label
        if not 0 <= code < self._n_classes:
            raise ValueError(f"target must be in 0..{self._n_classes - 1} (or 'predicted'/'true'), got {code}")
        return code

    def attribution(self, index: int | None = None, method: str | None = None, target: int | str | None = None,
                    **params: Any) -> np.ndarray:
        """Raw attribution of ``method`` for image ``index`` and class ``target``.

        Parameters
        ----------
        index : int, optional
        method : str, optional
            One of :attr:`methods` (default: the widget's).
        target : int, str, optional
            Class index or name, ``"predicted"`` or ``"true"`` (default: the widget's).
        **params
            ``steps=``, ``baseline=`` (Integrated Gradients), ``samples=``, ``noise=``
            (SmoothGrad), ``layer=`` (Grad-CAM, layer gradients), ``channel=`` (layer gradients).

        Returns
        -------
        numpy.ndarray
            float32 (C, H, W) like the input; (H, W) at input size for ``"gradcam"``.
        """
        a, notes = self._attribute(index, method, target, params)
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=2)
        return a

    def _attribute(self, index, method, target, params) -> tuple[np.ndarray, list[str]]:
        index = self.index if index is None else self._images.check_index(index)
        method = self.method if method is None else method
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}; got {method!r}")
        cls = self.resolve_target(index, target)
        kw = self._params(method, params)
        xi = self._images.x[index : index + 1].to(self._device)
        with softmax_notice_off():
            a = attribute(self._model, xi, method, cls if REGISTRY[method].targeted else None, **kw)
        last = final_softmax(self._model) if REGISTRY[method].targeted else None
        notes = [f"the model ends in {type(last).__name__}; attribution uses the logits before the softmax "
                 "(the module is bypassed during the call)"] if last is not None else []
        return a[0].detach().cpu().numpy().astype(np.float32), notes

    def heatmap(self, index: int | None = None, method: str | None = None, target: int | str | None = None,
                **params: Any) -> np.ndarray:
        """The displayed map in [0, 1] (``display="abs"``) or [-1, 1] (signed), float32 (H, W)."""
        a, self._last_notes = self._attribute(index, method, target, params)
        a = a[None] if a.ndim == 2 else a
        return to_heatmap(a, self.display)

    def overlay_image(self) -> np.ndarray:
        """The current heatmap over the image as the page draws it, uint8 (H, W, 3)."""
        meta = self._heat_meta
        codes = np.frombuffer(self._heat, np.uint8).reshape(meta["h"], meta["w"])
        return blend_overlay(self._images.display_rgb(meta["index"]), codes, self._table(), self.opacity)

    def wait(self, timeout: float = 120.0) -> bool:
        """Block until background computations are done."""
        return self._worker.wait(timeout) and self._panel_worker.wait(timeout)

    #: Let go by close(): the model and the images.
    _released = ("_model", "_images")

    def close(self) -> None:
        """Stop the background threads, leave the Selection and close the widget with its chart
        (figure, bars, scales, axes); the model and the images are let go, so the view cannot
        be used after this."""
        self._closed = True
        if hasattr(self, "_stop"):
            self._stop.set()
        for name in ("_worker", "_panel_worker"):
            if hasattr(self, name):
                getattr(self, name).close()
        self._leave()
        super().close()

    # ------------------------------------------------------------------ validation
    @t.validate("index")
    @checked
    def _v_index(self, proposal):
        return self._images.check_index(proposal["value"])

    @t.validate("method")
    @checked
    def _v_method(self, proposal):
        if proposal["value"] not in METHODS:
            raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}; got {proposal['value']!r}")
        return proposal["value"]

    @t.validate("target")
    @checked
    def _v_target(self, proposal):
        v = proposal["value"]
        if not (v in (PREDICTED, TRUE_LABEL) or 0 <= v < self._n_classes):
            raise ValueError(f"target must be in 0..{self._n_classes - 1}, -1 (predicted) or -2 (true label), got {v}")
        return v

    @t.validate("layer")
    @checked
    def _v_layer(self, proposal):
        if proposal["value"] not in self.layers:
            raise ValueError(
                f"layer {proposal['value']!r} has no spatial (N x C x H x W) output; choose one of {list(self.layers)}"
            )
        return proposal["value"]

    @t.validate("display")
    @checked
    def _v_display(self, proposal):
        return one_of(proposal, ("abs", "signed"))

    @t.validate("cmap")
    @checked
    def _v_cmap(self, proposal):
        make_lut(proposal["value"])
        return proposal["value"]

    @t.validate("opacity", "noise")
    @checked
    def _v_unit(self, proposal):
        return float_in(proposal, 0.0, 1.0)

    @t.validate("steps", "samples")
    @checked
    def _v_count(self, proposal):
        return int_in(proposal, 1, self.MAX_PASSES, "passes through the model for one map")

    @t.validate("grid_size")
    @checked
    def _v_grid_size(self, proposal):
        return int_in(proposal, 1, self.MAX_GRID, "images in the grid view")

    @t.validate("baseline")
    @checked
    def _v_baseline(self, proposal):
        if proposal["value"] not in BASELINES:
            raise ValueError(f"baseline must be one of {list(BASELINES)}, got {proposal['value']!r}")
        return proposal["value"]

    @t.validate("view")
    @checked
    def _v_view(self, proposal):
        return one_of(proposal, ("single", "compare", "grid"))

    @t.validate("compare_methods")
    @checked
    def _v_compare(self, proposal):
        bad = [m for m in proposal["value"] if m not in METHODS]
        if bad:
            raise ValueError(f"unknown methods {bad}; choose from {list(METHODS)}")
        return list(proposal["value"])

    # ------------------------------------------------------------------ events
    @t.observe("index")
    def _on_index(self, change):
        if self._ready:
            self._schedule(lambda: (self._update_image(), self._update_heat(), self._refresh_panels()))

    @t.observe("method", "target", "layer", "channel", "steps", "samples", "noise", "baseline", "display", "cmap")
    def _on_params(self, change):
        if self._ready:
            # a pending index change may be superseded by this job: bring the image along
            self._schedule(lambda: (self._sync_image(), self._update_heat(), self._refresh_panels()))

    def _sync_image(self) -> None:
        if self._image_meta.get("index") != self.index:
            self._update_image()

    @t.observe("view", "compare_methods", "grid_size")
    def _on_view(self, change):
        if self._ready:
            self._refresh_panels()

    @frontend_safe
    def _on_bar_select(self, change):
        """A click on a class bar (the bqplot chart's page state): explain that class."""
        sel = change["new"]
        if not self._ready or sel is None or len(sel) != 1:
            return
        value = np.asarray(sel).reshape(-1)[0].item()  # "x", NaN, 2.5 ... arrive here too
        try:
            c = bounded_int(value, "the selected bar", 0, self._n_classes - 1, "one class index")
        except (TypeError, ValueError):
            self._bars.selected = [self.resolve_target()]  # the chart shows the explained class again
            raise
        if c != self.resolve_target():
            self.target = c

    def _on_page_message(self, _widget, content, _buffers):
        try:
            if isinstance(content, dict) and content.get("type") == "stop":
                self._stop.set()
        except Exception as exc:  # noqa: BLE001
            self.last_error = f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ updates
    def _params(self, method: str, extra: dict[str, Any]) -> dict[str, Any]:
        spec = REGISTRY[method]
        kw: dict[str, Any] = {}
        if spec.takes_samples:
            kw = {"samples": self.samples, "noise": self.noise, "seed": 0}
        elif spec.takes_steps:
            kw = {"steps": self.steps, "baseline": self.baseline, "seed": 0}
        elif spec.takes_layer and spec.targeted:  # Grad-CAM: default the last conv layer
            kw = {"layer": self.layer or None}
        elif spec.takes_layer:
            kw = {"layer": self.layer, "channel": self.channel if self.channel >= 0 else None}
        kw.update(extra)
        return kw

    def _table(self) -> np.ndarray:
        return make_lut("diverging" if self.display == "signed" else self.cmap)

    def _update_image(self) -> None:
        index = self.index
        img = self._images.display(index)
        p = torch.softmax(self._logits(index), 0).numpy()
        pred = int(p.argmax())
        label = self._images.label(index)
        with self.hold_sync():
            self._image = img.tobytes()
            self._image_meta = {"index": index, "h": img.shape[0], "w": img.shape[1], "c": img.shape[2],
                                "label": self._images.class_name(label), "predicted": self._images.class_name(pred),
                                "probability": float(p[pred]), "correct": None if label is None else label == pred}
            self._probs = p.astype(np.float32).tobytes()
        self._bars.y = p.astype(np.float64)

    def _update_heat(self) -> None:
        index, method, code = self.index, self.method, self.target
        try:
            cls = self.resolve_target(index)
            heat = self.heatmap(index, method)
        except ValueError as exc:
            self.status = str(exc)
            self.busy = False
            return
        codes = heat_codes(heat, self.display == "signed")
        notes = [n for n in getattr(self, "_last_notes", []) if "softmax" in n.lower()]
        with self.hold_sync():
            self._heat_lut = self._table().tobytes()
            self._heat = codes.tobytes()
            self._heat_meta = {"index": index, "h": codes.shape[0], "w": codes.shape[1], "method": method,
                               "target": cls, "target_name": self._images.class_name(cls),
                               "display": self.display, "note": " ".join(notes)}
            self.status = notes[0] if notes else ""
            self.busy = False
        # a click on another bar meanwhile is not undone by this (older) update: the newer one follows
        if self.target == code and list(self._bars.selected or []) != [cls]:
            self._bars.selected = [cls]

    def _refresh_panels(self) -> None:
        if self.view == "single" or self._closed:
            return
        self._stop.clear()
        view, index = self.view, self.index
        self._panel_worker.submit(lambda: self._make_panels(view, index))

    def _make_panels(self, view: str, index: int) -> None:
        if view == "compare":
            jobs = [(index, m) for m in self.compare_methods]
        else:
            jobs = [(i, self.method) for i in range(index, min(len(self._images), index + self.grid_size))]
        heats, items, imgs = [], [], []
        self.progress = 0.0
        for k, (i, m) in enumerate(jobs):
            if self._stop.is_set() or self._closed:
                self.progress = -1.0
                self.status = "stopped"
                return
            cls = self.resolve_target(i)
            heats.append(heat_codes(self.heatmap(i, m), self.display == "signed"))
            items.append({"index": i, "method": m, "target": cls, "target_name": self._images.class_name(cls)})
            imgs.append(self._images.display(i))
            self.progress = (k + 1) / len(jobs)
        h, w = heats[0].shape
        with self.hold_sync():
            self._panel_images = np.stack(imgs).tobytes()
            self._panels = np.stack(heats).tobytes()
            self._panels_meta = {"kind": view, "items": items, "h": h, "w": w, "c": imgs[0].shape[2]}
            self.progress = -1.0

    def panel_overlay(self, k: int) -> np.ndarray:
        """Panel ``k`` of the compare/grid view as the page draws it, uint8 (H, W, 3)."""
        meta = self._panels_meta
        h, w, c = meta["h"], meta["w"], meta["c"]
        codes = np.frombuffer(self._panels, np.uint8).reshape(-1, h, w)[k]
        img = np.frombuffer(self._panel_images, np.uint8).reshape(-1, h, w, c)[k]
        img = np.repeat(img, 3, axis=-1) if c == 1 else img[..., :3]
        return blend_overlay(img, codes, self._table(), self.opacity)

    def __repr__(self) -> str:
        if self._closed:
            return "SaliencyViewer(closed)"
        return f"SaliencyViewer(n_images={len(self._images)}, method={self.method!r}, index={self.index})"
