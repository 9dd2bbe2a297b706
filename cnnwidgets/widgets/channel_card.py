"""ChannelCard: everything known about one channel, on one card.

Its filter weights, the optimized input patterns that excite it (several different ones, with
a diversity objective), the dataset images that excite it most with the region of each that
does it, and its activation statistics over the data. It follows the Selection: a channel
clicked in any linked view shows on the card.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import traitlets as t
from torch import nn

from ..core import optimize as opt
from ..core.channel import ChannelCardData, channel_card
from ..core.colormaps import lut as make_lut
from ..core.filters import kernel_tiles
from ..core.images import ImageSet
from ..core.layers import layer_labels, view_defaults
from ..core.model import check_model, get_layer, model_dtype
from ..core.passes import Stopped
from ..core.runner import spatial_layers
from ._base import ArrayTrait, BaseWidget, Float, ImageView, Int, check_labels, checked, error_text, images_uint8, int_in
from ._worker import LatestWorker
from .selection import SelectionMixin

__all__ = ["ChannelCard"]

#: Seconds between two updates of the optimized patterns while they grow.
PATTERN_UPDATE_SECONDS = 0.25
#: Weight of the diversity objective against the channel objective (Lucent's examples use a
#: comparable weight: enough to pull the patterns apart, not enough to stop them growing).
DIVERSITY_WEIGHT = 1.0


class _Either:
    """``is_set()`` of either of two events: a run ends when the card closes or its request
    is replaced."""

    def __init__(self, *events: threading.Event) -> None:
        self._events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)


class ChannelCard(ImageView, SelectionMixin, BaseWidget):
    """One card for one channel: its filter, optimized patterns, top images and statistics.

    * **Filter weights**: the channel's filter when the layer is a convolution (a colour tile
      for a filter that reads RGB, else one tile per input channel on a diverging scale, zero
      in the middle).
    * **Optimized input patterns**: :attr:`patterns` images grown together by gradient ascent
      on the channel's mean activation, with a diversity objective (Lucent's: the images' Gram
      matrices pushed apart) so that they show different things the channel responds to.
      They grow in the background and the card shows them as they do.
    * **Top images**: the :attr:`k` images with the highest maximum activation of the channel,
      each with the receptive field of its strongest position outlined (the input pixels that
      position can see).
    * **Statistics**: the distribution of the channel's per-image maximum over the data, the
      share of images where it fires, its quantiles, the class that excites it most.

    Everything is computed in the background; :meth:`wait` blocks until it is done. The pass
    over the data is cached (:mod:`cnnwidgets.core.passes`), so another channel of the same
    layer, or a layer another view has passed over, costs no second pass.

    Parameters
    ----------
    model : nn.Module
    images
        A tensor or array, a Dataset or DataLoader, PIL images or file paths, a class folder,
        or an :class:`~cnnwidgets.core.images.ImageSet` (as for the other views).
    labels, classes : optional
    layer : str, optional
        A layer with feature maps (default: the optimizer's default layer, a convolution about
        two thirds of the way in).
    channel : int, optional
        The channel shown; -1 for none (the card then asks for one). Default: the
        Selection's channel, else 0.
    k : int
        How many top images (1..64).
    patterns : int
        How many optimized patterns (0..8; 0: none).
    steps : int
        Optimization steps of the patterns.
    selection : cnnwidgets.Selection, optional
        Follows (and sets) the shared layer and channel.
    mean, std : optional
        The model's input normalization.
    transform : callable, optional
        Applied to each item's image as it is read.

    Examples
    --------
    >>> from cnnwidgets import ChannelCard, demo
    >>> d = demo.mnist("val")
    >>> card = ChannelCard(d.model, d.images[:200], d.labels[:200], d.classes, layer="features.3",
    ...                    channel=5, mean=d.mean, std=d.std, patterns=0)
    >>> card.wait()
    True
    >>> len(card.data.top)
    8
    >>> card.close()
    """

    _bundle = "channel_card"
    _shared = ("layer", "channel")
    #: The card's layer menu and channel field (js/src/widgets/channel_card.js).
    _page_writable = frozenset({"layer", "channel"})
    MAX_K = 64
    MAX_PATTERNS = 8
    MAX_STEPS = 2000

    # --- what the card shows
    layer = t.Unicode("").tag(sync=True)
    layers = t.List(t.Unicode(), read_only=True).tag(sync=True)
    #: What the layer menu shows beside each name: type and output shape ("Conv2d 16x14x14").
    layer_labels = t.Dict(read_only=True).tag(sync=True)
    channel = Int(0).tag(sync=True)
    n_channels = Int(0, read_only=True).tag(sync=True)
    k = Int(8).tag(sync=True)
    patterns = Int(4).tag(sync=True)
    steps = Int(128).tag(sync=True)

    # --- status
    busy = t.Bool(False).tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    #: Progress of the pass over the data, 0..1; -1 when none runs.
    progress = Float(-1.0).tag(sync=True)

    # --- data sent to the page (binary arrays, js/src/lib/codecs.js: decodeArray)
    #: uint8 (T, kh, kw) codes of the filter's kernels, or (1, kh, kw, 3) an RGB filter.
    _weights = ArrayTrait()
    #: uint8 (256, 3): the colours of the kernel codes (diverging, zero in the middle).
    _weights_lut = ArrayTrait()
    #: layer, channel, kind ("rgb", "kernels", "none"), in_channels, vmin, vmax, note.
    _weights_meta = t.Dict().tag(sync=True)
    #: uint8 (P, H, W, C): the optimized patterns.
    _patterns = ArrayTrait()
    #: layer, channel, state ("computing", "done", "failed", "stopped", "off"), step, steps,
    #: values (the objective of each pattern), error.
    _patterns_meta = t.Dict().tag(sync=True)
    #: uint8 (k, H, W, C): the top images.
    _top = ArrayTrait()
    #: layer, channel, state, items (index, value, box [x0, y0, x1, y1] in pixels, position
    #: [row, col] in the feature map, label), error.
    _top_meta = t.Dict().tag(sync=True)
    #: float32 (bins,): how many images have their maximum in each bin.
    _hist = ArrayTrait()
    #: layer, channel, edges (bins + 1), fraction_active, quantiles, dead, mean, n_images,
    #: n_valid, by_class (mean maximum per class, or None), class_names.
    _stats_meta = t.Dict().tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        images: Any,
        labels: Sequence[int] | torch.Tensor | None = None,
        classes: Sequence[str] | None = None,
        *,
        layer: str | None = None,
        channel: int | None = None,
        k: int = 8,
        patterns: int = 4,
        steps: int = 128,
        selection: Any = None,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        transform: Any = None,
    ) -> None:
        self._model = check_model(model)
        self._images = ImageSet.of(images, check_labels(labels), classes, mean=mean, std=std, transform=transform)
        x0 = self._images.item(0).to(model_dtype(self._model))
        spatial = spatial_layers(self._model, x0)
        if not spatial:
            raise ValueError("the model has no layer with feature maps (N x C x H x W), so no channel to show")
        self._ready = False
        self._closed = False
        self._data: ChannelCardData | None = None
        self._pattern_close = threading.Event()
        self._request = threading.Event()  # set when the pattern run is replaced
        try:
            super().__init__()
            self._worker = LatestWorker("cnnwidgets-card-data", owner=self)
            self._pattern_worker = LatestWorker("cnnwidgets-card-patterns", owner=self, stop=self._pattern_close)
            self.set_trait("layers", spatial)
            self.set_trait("layer_labels", layer_labels(self._model, x0, names=spatial))
            given_layer = layer
            if layer is None:
                defaults = view_defaults(self._model, x0)
                layer = defaults["optimizer"] if defaults["optimizer"] in spatial else spatial[-1]
            self.layer = layer
            self.k, self.patterns, self.steps = k, patterns, steps
            self.channel = (0 if selection is None else -1) if channel is None else channel
            self._ready = True
            explicit = tuple(n for n, v in (("layer", given_layer), ("channel", channel)) if v is not None)
            self._join(selection, explicit=explicit)
            self._refresh()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ public API
    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def data(self) -> ChannelCardData | None:
        """What the card found over the data (:func:`~cnnwidgets.core.channel.channel_card`)
        for the channel shown; None while it is being computed or when it failed."""
        return self._data

    def pattern_images(self) -> np.ndarray:
        """The optimized patterns as the card shows them, uint8 (P, H, W, C)."""
        return np.asarray(self._patterns)

    def top_overlays(self) -> np.ndarray:
        """The top images with their regions outlined as the page draws them, uint8
        (k, H, W, 3): a one-pixel frame in the accent colour (245, 133, 24) around the box."""
        meta = self._top_meta
        imgs = np.asarray(self._top)
        out = []
        for img, item in zip(imgs, meta.get("items", [])):
            rgb = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3].copy()
            x0, y0, x1, y1 = (int(v) for v in item["box"])
            color = np.array([245, 133, 24], np.uint8)
            rgb[y0, x0:x1] = color
            rgb[y1 - 1, x0:x1] = color
            rgb[y0:y1, x0] = color
            rgb[y0:y1, x1 - 1] = color
            out.append(rgb)
        return np.stack(out) if out else np.zeros((0, *self._images.shape[1:], 3), np.uint8)

    # ------------------------------------------------------------------ validation
    _released = ("_model", "_images", "_data")
    _workers = ("_worker", "_pattern_worker")
    _stops = ("_pattern_close", "_request")
    _wait_timeout = 300.0

    @t.validate("layer")
    @checked
    def _v_layer(self, proposal):
        if proposal["value"] not in self.layers:
            raise ValueError(f"layer {proposal['value']!r} has no feature maps (N x C x H x W); choose one of "
                             f"{list(self.layers)}")
        return proposal["value"]

    @t.validate("channel")
    @checked
    def _v_channel(self, proposal):
        n = self._channels_of(self.layer)
        return int_in(proposal, -1, n - 1, f"layer {self.layer!r} has {n} channels; -1 shows none")

    @t.validate("k")
    @checked
    def _v_k(self, proposal):
        return int_in(proposal, 1, self.MAX_K, "how many top images")

    @t.validate("patterns")
    @checked
    def _v_patterns(self, proposal):
        return int_in(proposal, 0, self.MAX_PATTERNS, "how many optimized patterns; 0 for none")

    @t.validate("steps")
    @checked
    def _v_steps(self, proposal):
        return int_in(proposal, 1, self.MAX_STEPS, "optimization steps of the patterns")

    def _cannot_show(self, name: str, value: Any) -> str:
        if name == "layer" and value and value not in self.layers:
            return f"The shared selection's layer {value!r} has no feature maps: the card stays on {self.layer!r}."
        return ""

    # ------------------------------------------------------------------ events
    def _channels_of(self, layer: str) -> int:
        from ..core.activations import _layer_channels

        cache = self.__dict__.setdefault("_n_channels", {})
        if layer not in cache:
            cache[layer] = _layer_channels(self._model, self._images, layer)
        return cache[layer]

    @t.observe("layer")
    def _on_layer(self, change):
        n = self._channels_of(change["new"])
        self.set_trait("n_channels", n)
        if self.channel >= n:
            self.channel = -1  # a channel of the old layer means nothing on this one
        if self._ready:
            self._refresh()

    @t.observe("channel", "k", "patterns", "steps")
    def _on_params(self, change):
        if self._ready:
            self._refresh()

    def _refresh(self) -> None:
        """Show the weights at once, and start the data pass and the patterns in the
        background (each replacing a run for an earlier channel)."""
        if self._closed:
            return
        layer, channel = self.layer, self.channel
        self._data = None
        self._show_weights(layer, channel)
        self._request.set()  # the pattern run for the previous channel ends within a step
        self._request = threading.Event()
        if channel < 0:
            with self.hold_sync():
                self.status = "select a channel: click a feature map, a filter, or type its number"
                self._top_meta = {"layer": layer, "channel": channel, "state": "none"}
                self._patterns_meta = {"layer": layer, "channel": channel, "state": "off"}
                self._stats_meta = {"layer": layer, "channel": channel, "state": "none"}
            return
        with self.hold_sync():
            self.busy = True
            self.status = f"{layer} · channel {channel}: reading the data ..."
            self._top_meta = {"layer": layer, "channel": channel, "state": "computing"}
            self._stats_meta = {"layer": layer, "channel": channel, "state": "computing"}
            self._patterns_meta = {"layer": layer, "channel": channel, "state": "computing" if self.patterns else "off",
                                   "step": 0, "steps": self.steps}
        k = self.k
        self._worker.submit(lambda: self._find(layer, channel, k))
        if self.patterns:
            p, steps, stop = self.patterns, self.steps, _Either(self._request, self._pattern_close)
            self._pattern_worker.submit(lambda: self._grow(layer, channel, p, steps, stop))

    # ------------------------------------------------------------------ the filter
    def _show_weights(self, layer: str, channel: int) -> None:
        module = get_layer(self._model, layer)
        meta: dict[str, Any] = {"layer": layer, "channel": channel, "kind": "none"}
        codes = None
        if channel < 0:
            meta["note"] = "no channel selected"
        elif not isinstance(module, nn.Conv2d):
            meta["note"] = f"{layer} is a {type(module).__name__}, not a convolution: it has no filter of its own"
        else:
            w = module.weight.detach()[channel : channel + 1].float().cpu()
            rgb = w.shape[1] == 3 and module.groups == 1
            tiles = kernel_tiles(w, mode="rgb" if rgb else "kernel", normalize="filter", symmetric=True)
            codes = tiles.codes
            lo, hi = float(w.min()), float(w.max())
            mag = max(abs(lo), abs(hi))
            meta.update(kind="rgb" if rgb else "kernels", in_channels=int(w.shape[1]), vmin=-mag, vmax=mag,
                        min=lo, max=hi, kernel=[int(w.shape[2]), int(w.shape[3])],
                        note=("the RGB filter, zero at mid-gray" if rgb else
                              f"{w.shape[1]} kernels, one per input channel; blue negative, red positive"))
        with self.hold_sync():
            self._weights = codes
            self._weights_lut = make_lut("diverging")
            self._weights_meta = meta

    # ------------------------------------------------------------------ the data pass
    def _find(self, layer: str, channel: int, k: int) -> None:
        worker = self._worker

        def progress(done: int, total: int) -> None:
            self.progress = done / max(1, total)

        try:
            data = channel_card(self._model, self._images, layer, channel, k=k, progress=progress,
                                stop=lambda: self._closed or worker.pending)
        except Stopped:
            return  # a newer channel's pass follows
        except Exception as exc:  # noqa: BLE001 - shown on the card, where the images would be
            if not self._closed:
                msg = error_text(exc)
                with self.hold_sync():
                    self._top_meta = {"layer": layer, "channel": channel, "state": "failed", "error": msg}
                    self._stats_meta = {"layer": layer, "channel": channel, "state": "failed", "error": msg}
                    self.status = f"the pass over the data failed: {msg}"
                    self.busy = False
            return
        finally:
            self.progress = -1.0
        if self._closed or (layer, channel) != (self.layer, self.channel):
            return
        self._data = data
        images = self._images
        items = []
        for i, v, pos, box in zip(data.top, data.top_values, data.positions, data.boxes):
            label = images.label(int(i))
            items.append({"index": int(i), "value": float(v), "position": [int(p) for p in pos],
                          "box": [int(b) for b in box], "label": images.class_name(label)})
        top = np.stack([images.display(int(i)) for i in data.top]) if len(data.top) else None
        counts, edges = data.histogram
        names = images.classes
        by_class = None if data.by_class is None else [None if not np.isfinite(v) else float(v) for v in data.by_class]
        stats = {"layer": layer, "channel": channel, "state": "done", "edges": [float(e) for e in edges],
                 "fraction_active": float(data.fraction_active), "quantiles": [float(q) for q in data.quantiles],
                 "dead": bool(data.dead), "mean": float(np.nanmean(data.max_values)) if data.n_valid else None,
                 "n_images": int(data.n_images), "n_valid": int(data.n_valid), "by_class": by_class,
                 "class_names": [images.class_name(c) for c in range(len(by_class))] if by_class is not None else None}
        if names is None and by_class is not None:
            stats["class_names"] = [str(c) for c in range(len(by_class))]
        with self.hold_sync():
            self._top = top
            self._top_meta = {"layer": layer, "channel": channel, "state": "done", "items": items}
            self._hist = np.asarray(counts, np.float32)
            self._stats_meta = stats
            self.status = images.broken_note() or ""
            self.busy = False

    # ------------------------------------------------------------------ the patterns
    def _objective(self, layer: str, channel: int, p: int) -> opt.Objective:
        obj = opt.channel(layer, channel)
        if p > 1:
            obj = obj + DIVERSITY_WEIGHT * opt.diversity(layer)
        return obj

    def _grow(self, layer: str, channel: int, p: int, steps: int, stop: Any) -> None:
        shape = tuple(self._images.shape)
        last = [0.0]

        def show(step: int, values: torch.Tensor, image_fn: Any) -> None:
            now = time.monotonic()
            if now - last[0] < PATTERN_UPDATE_SECONDS and step + 1 < steps:
                return
            last[0] = now
            imgs = images_uint8(image_fn())
            with self.hold_sync():
                self._patterns = imgs
                self._patterns_meta = {"layer": layer, "channel": channel, "state": "computing", "step": step + 1,
                                       "steps": steps, "values": [float(v) for v in values]}

        try:
            res = opt.optimize(self._model, self._objective(layer, channel, p), shape, batch=p, steps=steps,
                               **self.PATTERN_RECIPE, mean=self._images.mean, std=self._images.std, seed=0,
                               snapshots=None, callback=lambda s, v, f: None if stop.is_set() else show(s, v, f),
                               stop=stop)
        except Exception as exc:  # noqa: BLE001 - shown on the card, where the patterns would be
            if not self._closed and not stop.is_set():
                self._patterns_meta = {"layer": layer, "channel": channel, "state": "failed",
                                       "error": error_text(exc)}
            return
        if self._closed or stop.is_set():
            return
        with self.hold_sync():
            self._patterns = images_uint8(res.images)
            self._patterns_meta = {"layer": layer, "channel": channel, "state": "done", "step": res.steps_done,
                                   "steps": steps, "values": [float(v) for v in res.final_values]}

    #: How the patterns are grown: Lucent's recipe (a Fourier image with decorrelated colour,
    #: Adam at 0.05, a small jitter every step).
    PATTERN_RECIPE: dict[str, Any] = {"param": "fourier", "step_rule": "adam", "lr": 0.05,
                                      "transforms": (opt.jitter(2),)}

    def __repr__(self) -> str:
        if self._closed:
            return "ChannelCard(closed)"
        return f"ChannelCard(layer={self.layer!r}, channel={self.channel}, n_images={len(self._images)})"
