"""ActivationExplorer: every feature map of a layer for an image, and what made it fire."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import traitlets as t
from torch import nn

from ..core.activations import map_stats, maps_codes, order_channels, top_channels, top_images
from ..core.colormaps import MAX_CODE, MID_CODE
from ..core.colormaps import blend_overlay
from ..core.colormaps import lut as make_lut
from ..core.deconv import reconstruct as deconv_reconstruct
from ..core.filters import grid_shape, render_grid
from ..core.images import ImageSet
from ..core.layers import layers_with_output, not_a_cnn_notice, view_defaults
from ..core.model import capture_activations, check_model, model_device, model_dtype
from ..core.outputs import OutputSelector, check_output, class_names_for
from ..core.runner import Scores, logits_only, using_model
from ._base import BaseWidget, Float, Int, PageScheduled, bounded_int, check_labels, checked, float_in, int_in, one_of
from ._worker import LatestWorker
from .selection import Selection, SelectionMixin

__all__ = ["ActivationExplorer", "blend_overlay"]

#: Colours of the enlarged map drawn over the input image.
OVERLAY_CMAP = "inferno"


def _norm_uint8(x: torch.Tensor) -> np.ndarray:
    """Projection (C, H, W) -> uint8 (H, W, C) min-max scaled, as the deconvnet papers show it."""
    x = x.detach().float().cpu()
    lo, hi = float(x.min()), float(x.max())
    y = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    return (y.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def _maps_frame(acts: torch.Tensor, scale: str = "shared") -> tuple[np.ndarray, np.ndarray]:
    """Display codes and statistics of one image's feature maps, in few passes over them.

    Returns exactly ``maps_codes(acts, scale).codes`` (uint8, C x H x W) and
    ``map_stats(acts)`` (float32, C x 3): the same float32 operations in the same order
    (``(x - lo) * (254 / span) + 0.5``, truncated), with the min/max of each map computed
    once for both. The clip of the reference is left out: for finite values with a finite
    span, ``x - lo`` lies in ``[0, span]`` so the codes stay in 0..254 anyway. Non-finite
    values (or a span that overflows) go through the reference functions.
    """
    t = acts.detach()
    if t.dim() != 3 or t.dtype != torch.float32 or t.device.type != "cpu" or t.numel() == 0:
        return maps_codes(acts, scale).codes, map_stats(acts)
    c, h, w = t.shape
    tf = t.reshape(c, h * w)
    flat = tf.numpy()
    lo_c = tf.amin(dim=1).numpy()  # torch reduces rows of any length fast; numpy short ones slowly
    hi_c = tf.amax(dim=1).numpy()
    if scale == "shared":
        lo, hi = lo_c.min(), hi_c.max()
        span = hi - lo  # float32, as in the reference
        if not np.isfinite(span):  # NaN/Inf somewhere, or an overflowing range
            return maps_codes(acts, scale).codes, map_stats(acts)
        if span > 0:
            q = np.subtract(flat, lo, dtype=np.float32)
            q *= np.float32(MAX_CODE) / span
            q += np.float32(0.5)
            codes = q.astype(np.uint8)
        else:  # one value everywhere: the middle code, or black for all-zero (dead) maps
            codes = np.full(flat.shape, 0 if lo == 0 else MID_CODE, np.uint8)
    else:
        span = hi_c - lo_c
        if not np.isfinite(span).all():
            return maps_codes(acts, scale).codes, map_stats(acts)
        pos = span > 0
        q = np.subtract(flat, lo_c[:, None], dtype=np.float32)
        q *= np.divide(np.float32(MAX_CODE), span, out=np.zeros_like(span), where=pos)[:, None]
        q += np.where(pos, np.float32(0.5), np.float32(MID_CODE + 0.5))[:, None]
        codes = q.astype(np.uint8)
        codes[(lo_c == 0) & (hi_c == 0)] = 0  # dead maps are black
    stats = np.empty((c, 3), np.float32)
    stats[:, 0] = tf.mean(dim=1).numpy()
    stats[:, 1] = hi_c
    stats[:, 2] = lo_c
    return codes.reshape(c, h, w), stats


class ActivationExplorer(PageScheduled, SelectionMixin, BaseWidget):
    """Every feature map of a layer for one image, with the strongest one projected back.

    Parameters
    ----------
    model : nn.Module
        A PyTorch CNN.
    images : torch.Tensor or numpy.ndarray
        N x C x H x W float tensor the model takes as is, or uint8 N x H x W x C
        (normalized with ``mean``/``std`` when given).
    labels : sequence of int, optional
        True class of each image (length N).
    classes : sequence of str, optional
        Class names, at least as many as the model has classes (for a single-logit model,
        one name X reads as ``["not X", "X"]``).
    layer : str, optional
        Qualified name of a layer with 4-D output; default: the first one to run
        (:func:`~cnnwidgets.core.layers.view_defaults`' ``"activation"``).
    output : int, str or callable, optional
        Which part of a structured model output (tuple, dict, named tuple) holds the class
        scores, for the predicted class (see :func:`~cnnwidgets.core.outputs.select_output`).
        Without it such a model still shows every layer's maps, projections and top images;
        the prediction is left out and the note above the view says to pass ``output=``.
    selection : cnnwidgets.Selection, optional
        Shares image index, layer and channel with other views.
    mean, std : float or sequence, optional
        The model's input normalization, used to show images as they were.

    Examples
    --------
    >>> from cnnwidgets import ActivationExplorer, demo
    >>> d = demo.mnist("val")
    >>> ex = ActivationExplorer(d.model, d.images, d.labels, d.classes, mean=d.mean, std=d.std)
    >>> ex.activations(0, "features.0").shape      # 32 maps of 26 x 26
    (32, 26, 26)
    """

    _bundle = "activation_explorer"
    _export_keys = ("index", "_image", "_image_meta", "_maps", "_map_stats", "_order", "_maps_meta",
                    "_recon", "_recon_meta")
    _shared = ("index", "layer", "channel")
    #: The toolbar's controls, a click on a map or a thumbnail (js/src/widgets/activation_explorer.js).
    _page_writable = frozenset({"index", "layer", "channel", "sort", "scale", "opacity"})
    #: Largest zoom of the maps grid, ``k`` (top images) and batch view size.
    MAX_ZOOM = 64
    MAX_K = 100

    # --- what the user chooses
    index = Int(0).tag(sync=True)
    n_images = Int(0, read_only=True).tag(sync=True)
    layer = t.Unicode("").tag(sync=True)
    layers = t.List(t.Unicode(), read_only=True).tag(sync=True)
    channel = Int(-1).tag(sync=True)
    sort = t.Unicode("index").tag(sync=True)  # "index" | "mean" | "max"
    scale = t.Unicode("shared").tag(sync=True)  # "shared" | "per_map"
    opacity = Float(0.6).tag(sync=True)
    zoom = Int(0).tag(sync=True)  # 0 = automatic
    k = Int(9).tag(sync=True)

    # --- status for the page
    busy = t.Bool(False).tag(sync=True)
    progress = Float(-1.0).tag(sync=True)  # -1: no dataset pass running
    status = t.Unicode("").tag(sync=True)

    # --- data sent to the page (binary)
    _image = t.Bytes(b"").tag(sync=True)
    _image_meta = t.Dict().tag(sync=True)
    _maps = t.Bytes(b"").tag(sync=True)
    _map_stats = t.Bytes(b"").tag(sync=True)
    _order = t.Bytes(b"").tag(sync=True)
    _maps_meta = t.Dict().tag(sync=True)
    _lut = t.Bytes(b"").tag(sync=True)
    _overlay_lut = t.Bytes(b"").tag(sync=True)
    _recon = t.Bytes(b"").tag(sync=True)
    _recon_meta = t.Dict().tag(sync=True)
    _top = t.Bytes(b"").tag(sync=True)
    _top_meta = t.Dict().tag(sync=True)
    _batch = t.Bytes(b"").tag(sync=True)
    _batch_meta = t.Dict().tag(sync=True)

    CACHE_IMAGES = 4

    def __init__(
        self,
        model: nn.Module,
        images: Any,
        labels: Sequence[int] | torch.Tensor | None = None,
        classes: Sequence[str] | None = None,
        *,
        layer: str | None = None,
        selection: Any = None,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        output: OutputSelector = None,
    ) -> None:
        self._model = check_model(model)
        self._device = model_device(model)
        self._dtype = model_dtype(model)  # images go through the model in its dtype
        self._scores = Scores(model, check_output(output))
        #: Why the view shows no prediction (a structured output without ``output=``), or None.
        self._no_prediction: str | None = None
        self._images = ImageSet(images, check_labels(labels), classes, mean=mean, std=std)
        self._x = self._images.x
        self._x_model: torch.Tensor | None = None
        self._cache: OrderedDict[int, tuple[torch.Tensor | None, dict[str, torch.Tensor]]] = OrderedDict()
        self._cache_lock = threading.Lock()
        _, acts = self._forward(0)
        head = self._scores.head
        if head is not None:
            self._images.classes = class_names_for(head, self._images.classes)
            self._images.check_classes(head.n_classes)
        n = len(self._images)
        names = layers_with_output(self._model, acts, (3,))  # a 4-D output: C x H x W per image
        if not names:
            raise ValueError("no layer of the model has a 4-D (N x C x H x W) output for these images")
        self._layer_names = names
        defaults = view_defaults(self._model, self._model_input(0))
        first = defaults["activation"] if defaults["activation"] in names else names[0]
        # channels per layer: the same for every image of the set (one C x H x W shape), so
        # channel checks never need a forward pass on the kernel thread
        self._n_channels = {k: int(acts[k].shape[0]) for k in names}
        if layer is not None:
            self._check_layer_name(layer)
        if selection is not None and not isinstance(selection, Selection):
            self._join(selection)  # raises the TypeError with its hint
        self._closed = False
        self._from_page = False
        self._stop_dataset = threading.Event()
        self._worker = LatestWorker("cnnwidgets-activations", owner=self)
        try:  # from here on a failure closes what was started (threads, the widget's comm)
            self._recon_worker = LatestWorker("cnnwidgets-deconvnet", owner=self)
            self._dataset_worker = LatestWorker("cnnwidgets-top-images", owner=self, stop=self._stop_dataset)
            super().__init__()
            self.set_trait("n_images", n)
            self.set_trait("layers", names)
            self._lut = make_lut("gray").tobytes()
            self._overlay_lut = make_lut(OVERLAY_CMAP).tobytes()
            self._ready = False
            with self.hold_trait_notifications():
                self.layer = layer if layer is not None else first
            if defaults["patch_embedding"] is not None:
                self.note("cnn", not_a_cnn_notice(defaults["patch_embedding"]))
            self.note("head", self._scores.note)
            if self._no_prediction is not None:
                self.note("output", f"No predicted class is shown: {self._no_prediction}")
                self.status = self._no_prediction
            self._ready = True
            self._join(selection, explicit=("layer",) if layer is not None else ())
            self._update_image()
            self._recon_worker.wait()
            self.on_msg(self._on_page_message)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ compute (cached)
    def _model_input(self, index: int | Sequence[int]) -> torch.Tensor:
        """Image ``index`` (1 x C x H x W), or the images ``index`` lists, as the model takes
        them: on its device, in its dtype."""
        x = self._x[index : index + 1] if isinstance(index, int) else self._x[list(index)]
        return x.to(device=self._device, dtype=self._dtype)

    def _dataset(self) -> torch.Tensor:
        """The whole image set in the model's dtype, for dataset passes (one copy, kept)."""
        if self._dtype == self._x.dtype:
            return self._x
        if self._x_model is None:
            self._x_model = self._x.to(self._dtype)
        return self._x_model

    def _forward(
        self, index: int, on_output: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Class probabilities and every layer's output for image ``index``: one forward pass,
        cached.

        The probabilities (K, float32) are those of :class:`~cnnwidgets.core.runner.Scores`
        (the pass runs under :func:`~cnnwidgets.core.runner.logits_only`, so a final softmax
        is applied once); None when the output gives none (``_no_prediction`` says why). The
        layer outputs are float32 C x H x W (or C x ...), whatever the model's dtype.

        ``on_output`` is passed to :func:`capture_activations` (``{layer: fn}``, ``fn`` called
        with the layer's output while the rest of the pass still runs); it is not called when
        the image is found in the cache.
        """
        with self._cache_lock:
            hit = self._cache.get(index)
            if hit is not None:
                self._cache.move_to_end(index)
                return hit
        xi = self._model_input(index)
        # once the layers with feature maps are known, only those are captured (fewer hooks)
        layers = getattr(self, "_layer_names", None)
        with using_model(self._model) as run, logits_only(run):
            try:
                out, acts = capture_activations(run, xi, layers, on_output=on_output)
            except RuntimeError as exc:  # one forward_errors does not recognize
                raise ValueError(
                    f"the forward pass on images of shape {self._images.shape} (C, H, W) raised "
                    f"RuntimeError: {exc}{self._channel_hint()}"
                ) from exc
            except ValueError as exc:  # forward_errors' message (too small, channels, dtype)
                hint = self._channel_hint()
                if hint and isinstance(exc.__cause__, RuntimeError):
                    raise ValueError(f"{exc}{hint}") from exc.__cause__
                raise
        entry = (self._probabilities(out),
                 {k: v.select(0, 0).float().cpu() for k, v in acts.items() if v.dim() >= 2})
        with self._cache_lock:
            self._cache[index] = entry
            while len(self._cache) > self.CACHE_IMAGES:
                self._cache.popitem(last=False)
        return entry

    def _probabilities(self, out: Any) -> torch.Tensor | None:
        """Probabilities (K,) of one image from the model's output, or None (and the reason
        in ``_no_prediction``) when no tensor of it reads as class scores."""
        try:
            return self._scores.probabilities(out)[0].cpu()
        except ValueError as exc:  # a structured output without output=, or no score shape
            self._no_prediction = str(exc)
            return None

    def _channel_hint(self) -> str:
        """A sentence when the images' channels differ from the first convolution's, else ""."""
        from ..core.model import conv_layers, get_layer

        convs = conv_layers(self._model)
        c = self._images.shape[0]
        if convs:
            first = get_layer(self._model, convs[0])
            if first.in_channels != c:
                return (f" Its first conv layer {convs[0]!r} expects {first.in_channels} channel(s); the images "
                        f"{self._images.shape} (C, H, W) have {c}.")
        return ""

    def _check_index(self, index: int) -> int:
        return self._images.check_index(index)

    def _check_layer_name(self, layer: str) -> str:
        if layer not in self._layer_names:
            raise ValueError(
                f"layer {layer!r} has no 4-D output here. Layers with feature maps: "
                f"{', '.join(repr(n) for n in self._layer_names)}"
            )
        return layer

    # ------------------------------------------------------------------ public API
    @property
    def model(self) -> nn.Module:
        return self._model

    def activations(self, index: int | None = None, layer: str | None = None) -> np.ndarray:
        """Feature maps of ``layer`` for image ``index`` (defaults: the current ones).

        Returns
        -------
        numpy.ndarray
            float32 (C, H, W).
        """
        index = self.index if index is None else self._check_index(index)
        layer = self.layer if layer is None else self._check_layer_name(layer)
        return self._forward(index)[1][layer].numpy()

    def predict(self, index: int | None = None) -> tuple[int, float]:
        """Predicted class of image ``index`` and its probability.

        The probability is read by the model's head (:class:`~cnnwidgets.core.outputs.Head`):
        the softmax of the logits (a final Softmax module applied once, not twice), the
        sigmoid of a single logit (two classes), or for segmentation scores the share of the
        pixels whose top class it is.

        Raises
        ------
        ValueError
            When the model's output holds no class scores the view can read (a tuple or dict
            output without ``output=``; the message says what to pass).
        """
        index = self.index if index is None else self._check_index(index)
        p = self._forward(index)[0]
        if p is None:
            raise ValueError(self._no_prediction)
        c = int(p.argmax())
        return c, float(p[c])

    def top_channels(self, k: int = 5, index: int | None = None, layer: str | None = None) -> np.ndarray:
        """Indices of the ``k`` maps with the largest maximum activation, strongest first."""
        acts = torch.from_numpy(self.activations(index, layer))
        return top_channels(acts, k)

    def reconstruct(self, index: int | None = None, layer: str | None = None, channel: int | None = None) -> np.ndarray:
        """Deconvnet projection of one map of ``layer`` back to pixel space.

        Keeps the strongest map (or ``channel``), zeroes all others, and runs the deconvnet
        (transposed convolutions, ReLU on the way back, unpooling with the forward pass's
        switches) down to the input.

        Returns
        -------
        numpy.ndarray
            float32 (C, H, W), shaped like the input image.
        """
        proj, _ = self._reconstruct(index, layer, channel)
        return proj[0].numpy()

    def _reconstruct(self, index, layer, channel):
        index = self.index if index is None else self._check_index(index)
        layer = self.layer if layer is None else self._check_layer_name(layer)
        proj, chans = deconv_reconstruct(self._model, self._model_input(index), layer, channel)
        return proj.float().cpu(), chans.cpu()

    def reconstruct_batch(self, indices: Sequence[int], layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Strongest-map projections for many images at once.

        Returns
        -------
        projections : numpy.ndarray
            float32 (N, C, H, W).
        channels : numpy.ndarray
            int64 (N,), the strongest channel of each image.
        """
        idx = [self._check_index(i) for i in indices]
        layer = self.layer if layer is None else self._check_layer_name(layer)
        proj, chans = deconv_reconstruct(self._model, self._model_input(idx), layer, None)
        return proj.float().cpu().numpy(), chans.cpu().numpy()

    def top_images(self, layer: str | None = None, channel: int | None = None, k: int = 9, *, progress=None) -> np.ndarray:
        """Indices of the ``k`` images of the set whose ``channel`` map fires most (by max)."""
        layer = self.layer if layer is None else self._check_layer_name(layer)
        channel = self.channel if channel is None else channel
        if channel < 0:
            raise ValueError("choose a channel first (channel=...), or click a map")
        idx, _ = top_images(self._model, self._dataset(), layer, channel, k, progress=progress)
        return idx

    def display_image(self, index: int | None = None) -> np.ndarray:
        """Image ``index`` as shown (normalization undone), uint8 (H, W, C)."""
        return self._images.display(self.index if index is None else self._check_index(index))

    def maps_image(self) -> np.ndarray:
        """The grid of maps as the page draws it, uint8 (H, W, 3)."""
        meta = self._maps_meta
        codes = np.frombuffer(self._maps, np.uint8).reshape(meta["n"], meta["h"], meta["w"])
        order = np.frombuffer(self._order, np.int32)
        return render_grid(codes[order], make_lut("gray"), columns=meta["columns"], zoom=meta["zoom"], padding=1)

    def overlay_image(self, channel: int | None = None, opacity: float | None = None) -> np.ndarray:
        """Map ``channel`` over the input image, as the enlarged view draws it, uint8 (H, W, 3)."""
        channel = self.channel if channel is None else channel
        meta = self._maps_meta
        codes = np.frombuffer(self._maps, np.uint8).reshape(meta["n"], meta["h"], meta["w"])[channel]
        img = self._images.display_rgb(self.index)
        return blend_overlay(img, codes, make_lut(OVERLAY_CMAP), self.opacity if opacity is None else opacity)

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until background updates (page requests, dataset passes) are done."""
        return all(w.wait(timeout) for w in (self._worker, self._recon_worker, self._dataset_worker))

    #: Let go by close(): the model, the images and the cached activations.
    _released = ("_model", "_images", "_x", "_x_model", "_cache")

    def close(self) -> None:
        """Stop the background threads, leave the Selection and close the widget (with its
        layout); the model and the images are let go, so the view cannot be used after this."""
        self._closed = True
        for name in ("_stop_dataset",):
            if hasattr(self, name):
                getattr(self, name).set()
        for name in ("_worker", "_recon_worker", "_dataset_worker"):
            if hasattr(self, name):
                getattr(self, name).close()
        self._leave()
        super().close()

    # ------------------------------------------------------------------ trait validation
    @t.validate("index")
    @checked
    def _v_index(self, proposal):
        return self._check_index(proposal["value"])

    @t.validate("layer")
    @checked
    def _v_layer(self, proposal):
        return self._check_layer_name(proposal["value"])

    @t.validate("channel")
    @checked
    def _v_channel(self, proposal):
        c = proposal["value"]
        if self.layer:
            n = self._n_channels[self.layer]
            if not -1 <= c < n:
                raise ValueError(f"channel must be -1 (none) or in 0..{n - 1} for layer {self.layer!r}, got {c}")
        return c

    @t.validate("sort")
    @checked
    def _v_sort(self, proposal):
        return one_of(proposal, ("index", "mean", "max"))

    @t.validate("scale")
    @checked
    def _v_scale(self, proposal):
        return one_of(proposal, ("shared", "per_map"))

    @t.validate("opacity")
    @checked
    def _v_opacity(self, proposal):
        return float_in(proposal, 0.0, 1.0, "0 shows the image only, 1 the map only")

    @t.validate("zoom")
    @checked
    def _v_zoom(self, proposal):
        return int_in(proposal, 0, self.MAX_ZOOM, "screen pixels per map pixel; 0 = automatic")

    @t.validate("k")
    @checked
    def _v_k(self, proposal):
        return int_in(proposal, 1, self.MAX_K, "how many top images to find")

    # ------------------------------------------------------------------ page events
    @t.observe("index")
    def _on_index(self, change):
        if self._ready:
            self._schedule(self._update_image)

    @t.observe("layer")
    def _on_layer(self, change):
        if self._ready:
            if self.channel >= 0:
                n = self._n_channels[change["new"]]
                if self.channel >= n:
                    self.channel = -1
            self._schedule(self._update_maps_and_recon)

    @t.observe("sort", "scale", "zoom")
    def _on_style(self, change):
        if self._ready:
            self._schedule(self._update_maps)  # the projection does not depend on these

    @t.observe("channel")
    def _on_channel(self, change):
        if self._ready:
            self._recon_worker.submit(self._update_recon)

    def _on_page_message(self, _widget, content, _buffers):
        try:
            kind = content.get("type") if isinstance(content, dict) else None
            if kind == "top_images":
                self.request_top_images()
            elif kind == "batch":
                self.request_batch_view()
            elif kind == "stop":
                self._stop_dataset.set()
        except Exception as exc:  # noqa: BLE001 - never a traceback from the page
            self.last_error = f"{type(exc).__name__}: {exc}"

    def request_top_images(self) -> None:
        """Find the dataset's top images for the selected channel in the background."""
        if self.channel < 0:
            self.status = "click a map first: top images are found for the selected channel"
            return
        self._stop_dataset.clear()
        layer, channel, k = self.layer, self.channel, self.k
        self._dataset_worker.submit(lambda: self._find_top(layer, channel, k))

    def request_batch_view(self, n: int = 12) -> None:
        """Project the strongest map of the current layer for ``n`` images from the current
        one on (in the background), for the batch view (at most ``MAX_K``)."""
        n = bounded_int(n, "n", 1, self.MAX_K, "images in the batch view")
        start = self.index
        idx = list(range(start, min(self._x.shape[0], start + n)))
        layer = self.layer
        self._dataset_worker.submit(lambda: self._make_batch(idx, layer))

    def _make_batch(self, idx: list[int], layer: str) -> None:
        self.status = f"projecting the strongest maps of {layer} for {len(idx)} images ..."
        proj, chans = self.reconstruct_batch(idx, layer)
        pairs = []
        for i, p in zip(idx, proj):
            pairs.append(self._images.display_rgb(i))
            proj = _norm_uint8(torch.from_numpy(p))
            pairs.append(np.repeat(proj, 3, axis=-1) if proj.shape[-1] == 1 else proj[..., :3])
        arr = np.stack(pairs)
        with self.hold_sync():
            self._batch = arr.tobytes()
            self._batch_meta = {"indices": idx, "channels": [int(c) for c in chans], "layer": layer,
                                "h": arr.shape[1], "w": arr.shape[2], "c": 3}
            self.status = f"strongest map of {layer} projected to pixels for images {idx[0]}..{idx[-1]}"

    # ------------------------------------------------------------------ updates
    def _update_image(self) -> None:
        """Show image ``index``: its frame (image and maps of the current layer), then its
        prediction; the projection follows in the background.

        For an image not in the cache, the frame is sent from inside the forward pass, as soon
        as the current layer has run: the rest of the pass (deeper layers, the classifier)
        still fills the cache, and the prediction follows when it is done. One pass per image.
        """
        index, layer = self.index, self.layer
        shown = False
        failed: list[BaseException] = []
        with self._cache_lock:
            cached = index in self._cache
        if cached:
            p, _ = self._forward(index)
        else:

            def frame(out: torch.Tensor) -> None:
                nonlocal shown
                if out.dim() != 4 or out.shape[0] != 1:
                    return
                try:
                    self._update_maps(out[0].float(), index, layer, image=self._images.display(index), finish=False)
                    shown = True
                except Exception as exc:  # noqa: BLE001 - raised after the pass, not inside the model
                    failed.append(exc)

            p, _ = self._forward(index, on_output={layer: frame})
            if failed:
                raise failed[0]
        img = self._images.display(index)  # kept by the image set since the frame
        pred = None if p is None else int(p.argmax())
        label = self._images.label(index)
        name = self._images.class_name
        with self.hold_sync():
            if not shown:
                self._image = img.tobytes()
            self._image_meta = {
                "index": index,
                "h": img.shape[0],
                "w": img.shape[1],
                "c": img.shape[2],
                "label": name(label),
                # None (and the reason in model_note) when the output holds no class scores
                "predicted": name(pred),
                "probability": None if p is None else float(p[pred]),
                "correct": None if label is None or pred is None else label == pred,
            }
            if not shown:
                self._update_maps(index=index, layer=layer, finish=False)
        self._finish()
        self._recon_worker.submit(self._update_recon)

    def _update_maps_and_recon(self) -> None:
        self._update_maps()
        self._recon_worker.submit(self._update_recon)

    def _update_maps(
        self,
        acts: torch.Tensor | None = None,
        index: int | None = None,
        layer: str | None = None,
        *,
        image: np.ndarray | None = None,
        finish: bool = True,
    ) -> None:
        """Send the maps of ``layer`` for image ``index`` (defaults: the current ones), from
        ``acts`` (C x H x W) when given, else from the cache; with ``image``, the displayed
        image goes in the same message."""
        index = self.index if index is None else index
        layer = self.layer if layer is None else layer
        if acts is None:
            acts = self._forward(index)[1][layer]
        if acts.dim() != 3:
            return
        codes, stats = _maps_frame(acts, self.scale)
        order = order_channels(stats, self.sort).astype(np.int32)
        c, h, w = acts.shape
        zoom = self.zoom or max(1, min(16, round(48 / max(h, w))))
        rows, cols = grid_shape(c, None)
        with self.hold_sync():
            if image is not None:
                self._image = image.tobytes()
            self._map_stats = stats.tobytes()
            self._order = order.tobytes()
            self._maps_meta = {"n": c, "h": h, "w": w, "rows": rows, "columns": cols, "zoom": zoom,
                               "layer": layer, "index": index}
            self._maps = codes.tobytes()  # last: whoever watches _maps finds the whole frame set
        if finish:
            self._finish()

    def _finish(self) -> None:
        if self.busy and not self._from_page:
            self.busy = False

    def _update_recon(self) -> None:
        if self._closed:
            return
        try:
            ch = self.channel if self.channel >= 0 else None
            proj, chans = self._reconstruct(self.index, self.layer, ch)
        except ValueError as exc:
            self.status = str(exc)
            return
        img = _norm_uint8(proj[0])
        with self.hold_sync():
            self._recon = img.tobytes()
            self._recon_meta = {"h": img.shape[0], "w": img.shape[1], "c": img.shape[2],
                                "channel": int(chans[0]), "strongest": ch is None, "layer": self.layer,
                                "index": self.index}

    def _find_top(self, layer: str, channel: int, k: int) -> None:
        total = self._x.shape[0]

        def progress(done, total_=total):
            if self._stop_dataset.is_set() or self._closed:
                raise _Stopped
            self.progress = done / max(1, total_)

        self.progress = 0.0
        self.status = f"finding the top {k} images for channel {channel} of {layer} ..."
        try:
            idx, scores = top_images(self._model, self._dataset(), layer, channel, k, progress=progress)
        except _Stopped:
            self.status = "stopped"
            self.progress = -1.0
            return
        except ValueError as exc:  # the pass failed: say why in the view
            why = str(exc)
            if self._dtype != torch.float32 and "computes in" in why:
                # core.top_images batches the images as float32 (as_batch) whatever the model's dtype
                why = (f"not available for a {self._dtype} model yet: the dataset pass feeds the model "
                       f"float32 images ({why})")
            self.last_error = self.status = f"top images: {why}"
            self.progress = -1.0
            return
        thumbs = np.stack([self.display_image(int(i)) for i in idx])
        with self.hold_sync():
            self._top = thumbs.tobytes()
            self._top_meta = {"indices": [int(i) for i in idx], "scores": [float(s) for s in scores],
                              "layer": layer, "channel": channel, "h": thumbs.shape[1], "w": thumbs.shape[2],
                              "c": thumbs.shape[3]}
            self.progress = -1.0
            self.status = f"top {len(idx)} images for channel {channel} of {layer}"

    def __repr__(self) -> str:
        if self._closed:
            return "ActivationExplorer(closed)"
        return f"ActivationExplorer(n_images={self._x.shape[0]}, layer={self.layer!r}, index={self.index})"


class _Stopped(Exception):
    pass


