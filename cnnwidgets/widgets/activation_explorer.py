"""ActivationExplorer: every feature map of a layer for an image, and what made it fire."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import traitlets as t
from torch import nn

from ..core.activations import ChannelOrder, MapScale, map_stats, maps_codes, order_channels, top_channels, top_images
from ..core.colormaps import MAX_CODE, MID_CODE
from ..core.colormaps import blend_overlay
from ..core.colormaps import lut as make_lut
from ..core.deconv import reconstruct as deconv_reconstruct
from ..core.filters import grid_shape, render_grid
from ..core.images import ImageSet
from ..core.layers import layer_labels, layers_with_output, not_a_cnn_notice, view_defaults
from ..core.model import capture_activations, check_model, model_device, model_dtype
from ..core.outputs import OutputSelector, check_output, class_names_for
from ..core.runner import Scores, logits_only, using_model
from ._base import (
    ArrayTrait, BaseWidget, Choice, Float, ImageView, Int, bounded_int, check_labels, checked, float_in, int_in,
)
from ._worker import LatestWorker
from .selection import Selection, SelectionMixin

__all__ = ["ActivationExplorer", "blend_overlay"]

log = logging.getLogger("cnnwidgets")

#: Colours of the enlarged map drawn over the input image.
OVERLAY_CMAP = "inferno"
#: Colours of the feature maps (and of a one-channel projection).
MAPS_CMAP = "gray"
#: Images in the batch view.
BATCH_SIZE = 12


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


class ActivationExplorer(ImageView, SelectionMixin, BaseWidget):
    """Every feature map of a layer for one image, with the strongest one projected back.

    Parameters
    ----------
    model : nn.Module
        A PyTorch CNN.
    images
        The images: an N x C x H x W float tensor the model takes as is, a uint8 array
        N x H x W x C (normalized with ``mean``/``std``), a torch ``Dataset`` (items an
        image or ``(image, label)``) or ``DataLoader``, a list of PIL images or file paths, a
        folder with one subfolder per class, or an :class:`~cnnwidgets.core.images.ImageSet`.
        Images are read when needed, never all at once; labels and class names come from
        the data when it has them.
    labels : sequence of int, optional
        True class of each image (length N).
    classes : sequence of str, optional
        Class names, at least as many as the model has classes (for a single-logit model,
        one name X reads as ``["not X", "X"]``).
    layer : str, optional
        Qualified name of a layer with 4-D output; default: the first one to run
        (:func:`~cnnwidgets.core.layers.view_defaults`' ``"activation"``).
    transform : callable, optional
        Applied to each item's image as it is read (e.g. resize and ``ToTensor``), for
        datasets, files and PIL images.
    output : int, str or callable, optional
        Which part of a structured model output (tuple, dict, named tuple) holds the class
        scores, for the predicted class (see :func:`~cnnwidgets.core.outputs.select_output`).
        Without it such a model still shows every layer's maps, projections and top images;
        the prediction is left out and the note above the view says to pass ``output=``.
    selection : cnnwidgets.Selection, optional
        Shares image index, layer and channel with other views. A shared value this view
        cannot show (an image it does not hold, a layer without feature maps) is not taken;
        :attr:`selection_note` says so in the view.
    mean, std : float or sequence, optional
        The model's input normalization, used to show images as they were.

    Examples
    --------
    >>> from cnnwidgets import ActivationExplorer, demo
    >>> d = demo.mnist("val")
    >>> ex = ActivationExplorer(d.model, d.images, d.labels, d.classes, mean=d.mean, std=d.std)
    >>> ex.activations(0, "features.0").shape      # 32 maps of 26 x 26
    (32, 26, 26)
    >>> ex.color_scales["maps"]["label"]            # the colorbar of the maps: exact min, max
    'activation'
    """

    _bundle = "activation_explorer"
    #: What changes with the image: exported per image by :meth:`save_html`.
    _export_keys = ("index", "_image", "_image_info", "_maps", "_map_stats", "_order", "_maps_info",
                    "_recon", "_recon_info", "color_scales")
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
    #: What the layer picker says of each layer: ``{name: "Conv2d 64x11x11"}`` (type, output shape).
    layer_labels = t.Dict(read_only=True).tag(sync=True)
    channel = Int(-1).tag(sync=True)
    sort = Choice(ChannelOrder, "index").tag(sync=True)
    scale = Choice(MapScale, "shared").tag(sync=True)
    opacity = Float(0.6).tag(sync=True)
    zoom = Int(0).tag(sync=True)  # 0 = automatic
    k = Int(9).tag(sync=True)

    # --- status for the page
    busy = t.Bool(False).tag(sync=True)
    progress = Float(-1.0).tag(sync=True)  # -1: no dataset pass running
    status = t.Unicode("").tag(sync=True)
    #: The value ranges the pictures are coloured with, exactly (the page's colorbars show them):
    #: ``{"maps": {min, max, label, note[, channel]}, "overlay": {...}, "projection": {...}}``;
    #: "overlay" only while a channel is selected, "projection" only for one-channel images.
    color_scales = t.Dict(read_only=True).tag(sync=True)

    # --- pictures sent to the page (one ndarray each: dtype and shape travel with it)
    _image = ArrayTrait()  # uint8 (H, W, C): the image as shown
    _maps = ArrayTrait()  # uint8 (C, h, w): colour codes of the feature maps (0..254)
    _map_stats = ArrayTrait()  # float32 (C, 3): mean, max, min of each map
    _order = ArrayTrait()  # int32 (C,): the channel shown in each tile
    _lut = ArrayTrait()  # uint8 (256, 3): colours of the maps
    _overlay_lut = ArrayTrait()  # uint8 (256, 3): colours of the enlarged map over the image
    _recon = ArrayTrait()  # uint8 (H, W, C): deconvnet projection, min-max scaled
    _top = ArrayTrait()  # uint8 (k, H, W, C): the top images of a channel
    _batch = ArrayTrait()  # uint8 (N, 2, H, W, 3): image and projection of N images
    # --- what each picture shows (no shapes: those come with the arrays)
    _image_info = t.Dict().tag(sync=True)  # index, label, predicted, probability, correct
    _maps_info = t.Dict().tag(sync=True)  # index, layer, scale, sort, rows, columns, zoom
    _recon_info = t.Dict().tag(sync=True)  # index, layer, channel, strongest
    _top_info = t.Dict().tag(sync=True)  # layer, channel, indices, scores; or note (why cleared)
    _batch_info = t.Dict().tag(sync=True)  # layer, indices, channels; or note (why cleared)

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
        transform: Any = None,
    ) -> None:
        self._model = check_model(model)
        self._device = model_device(model)
        self._dtype = model_dtype(model)  # images go through the model in its dtype
        self._scores = Scores(model, check_output(output))
        #: Why the view shows no prediction (a structured output without ``output=``), or None.
        self._no_prediction: str | None = None
        self._images = ImageSet.of(images, check_labels(labels), classes, mean=mean, std=std, transform=transform)
        self._cache: OrderedDict[int, tuple[torch.Tensor | None, dict[str, torch.Tensor]]] = OrderedDict()
        self._cache_lock = threading.Lock()
        #: What failed in the background, by task ("projection", "top images", ...): view_error.
        self._failures: dict[str, str] = {}
        self._recon_range: tuple[float, float] | None = None
        self._stop_reason = ""
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
        #: Type and output shape of every layer that ran (the same recorded pass as the defaults).
        self._all_labels = layer_labels(self._model, self._model_input(0))
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
            self.set_trait("layer_labels", {k: self._all_labels.get(k, "") for k in names})
            self._lut = make_lut(MAPS_CMAP)
            self._overlay_lut = make_lut(OVERLAY_CMAP)
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
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ compute (cached)
    def _model_input(self, index: int | Sequence[int]) -> torch.Tensor:
        """Image ``index`` (1 x C x H x W), or the images ``index`` lists, as the model takes
        them: on its device, in its dtype."""
        x = self._images.item(index) if isinstance(index, int) else self._images.take(list(index))
        return x.to(device=self._device, dtype=self._dtype)

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
        idx, _ = top_images(self._model, self._images, layer, channel, k, progress=progress)
        return idx

    def display_image(self, index: int | None = None) -> np.ndarray:
        """Image ``index`` as shown (normalization undone), uint8 (H, W, C)."""
        return self._images.display(self.index if index is None else self._check_index(index))

    def maps_image(self, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
        """The grid of maps as the page draws it, uint8 (H, W, 3), with ``background`` in the gaps
        between the maps (the page draws the theme's sunken background: its root's
        ``data-background``)."""
        info = self._maps_info
        return render_grid(self._maps[self._order], make_lut(MAPS_CMAP), columns=info["columns"], zoom=info["zoom"],
                           padding=1, background=background)

    def overlay_image(self, channel: int | None = None, opacity: float | None = None) -> np.ndarray:
        """Map ``channel`` over the input image, as the enlarged view draws it, uint8 (H, W, 3)."""
        channel = self.channel if channel is None else channel
        img = self._images.display_rgb(self.index)
        return blend_overlay(img, self._maps[channel], make_lut(OVERLAY_CMAP), self.opacity if opacity is None else opacity)

    #: Let go by close(): the model, the images and the cached activations.
    _released = ("_model", "_images", "_cache")
    #: Page requests, projections and dataset passes (ImageView.wait / close).
    _workers = ("_worker", "_recon_worker", "_dataset_worker")
    _stops = ("_stop_dataset",)

    # ------------------------------------------------------------------ trait validation
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
            self._schedule(self._job("image", self._update_image))

    @t.observe("layer")
    def _on_layer(self, change):
        if self._ready:
            if self.channel >= 0:
                n = self._n_channels[change["new"]]
                if self.channel >= n:
                    self.channel = -1
            self._drop_dataset_panels(change["old"], change["new"])
            self._schedule(self._job("maps", self._update_maps_and_recon))

    @t.observe("sort", "scale", "zoom")
    def _on_style(self, change):
        if self._ready:
            self._schedule(self._job("maps", self._update_maps))  # the projection does not depend on these

    @t.observe("channel")
    def _on_channel(self, change):
        if self._ready:
            self._set_scales()
            self._recon_worker.submit(self._job("projection", self._update_recon))

    # messages from the page (cnnwidgets/widgets/messages.json), routed by BaseWidget._dispatch_message
    def _on_top_images(self, _content) -> None:
        self.request_top_images()

    def _on_batch(self, _content) -> None:
        self.request_batch_view()

    def _on_stop(self, _content) -> None:
        self._stop_reason = ""
        self._stop_dataset.set()

    def request_top_images(self) -> None:
        """Find the dataset's top images for the selected channel in the background."""
        if self._closed:
            return
        if self.channel < 0:
            self.status = "click a map first: top images are found for the selected channel"
            return
        self._stop_reason = ""
        self._stop_dataset.clear()
        layer, channel, k = self.layer, self.channel, self.k
        self._dataset_worker.submit(self._job("top images", lambda: self._find_top(layer, channel, k)))

    def request_batch_view(self, n: int = BATCH_SIZE) -> None:
        """Project the strongest map of the current layer for ``n`` images from the current
        one on (in the background), for the batch view (at most ``MAX_K``)."""
        if self._closed:
            return
        n = bounded_int(n, "n", 1, self.MAX_K, "images in the batch view")
        start = self.index
        idx = list(range(start, min(len(self._images), start + n)))
        layer = self.layer
        self._dataset_worker.submit(self._job("batch view", lambda: self._make_batch(idx, layer)))

    def _drop_dataset_panels(self, old: str, new: str) -> None:
        """The layer changed from ``old`` to ``new``: the top images and the batch view of
        ``old`` are cleared (each says why), and a pass over the data for ``old`` is stopped."""
        if self._dataset_worker.busy:
            self._stop_reason = f"the layer changed to {new!r}"
            self._stop_dataset.set()
        with self.hold_sync():
            top = self._top_info
            if top.get("layer") not in (None, new):
                self._top = None
                self._top_info = {"note": f"Cleared: the top images were those of channel {top['channel']} of "
                                          f"{top['layer']!r}, and the layer is now {new!r}. Select a map and "
                                          "press \u201ctop images\u201d again."}
            batch = self._batch_info
            if batch.get("layer") not in (None, new):
                self._batch = None
                self._batch_info = {"note": f"Cleared: the projections were those of {batch['layer']!r}, and the "
                                            f"layer is now {new!r}. Press \u201cbatch view\u201d again."}

    def _make_batch(self, idx: list[int], layer: str) -> None:
        self.status = f"projecting the strongest maps of {layer} for {len(idx)} images ..."
        proj, chans = self.reconstruct_batch(idx, layer)
        if layer != self.layer:  # the layer changed meanwhile: _drop_dataset_panels said so
            self.status = f"batch view of {layer!r} dropped: the layer is now {self.layer!r}"
            return
        pairs = []
        for i, p in zip(idx, proj):
            shown = _norm_uint8(torch.from_numpy(p))
            shown = np.repeat(shown, 3, axis=-1) if shown.shape[-1] == 1 else shown[..., :3]
            pairs.append(np.stack([self._images.display_rgb(i), shown]))
        with self.hold_sync():
            self._batch = np.stack(pairs)
            self._batch_info = {"indices": idx, "channels": [int(c) for c in chans], "layer": layer}
            self.status = ""  # done: the batch view's own heading says what it shows

    # ------------------------------------------------------------------ failures and the Selection
    def _job(self, task: str, fn):
        """``fn`` as a background job of ``task`` ("image", "maps", "projection", "top images",
        "batch view"): if it raises, the view says so (view_error) until ``task`` next succeeds;
        the exception still goes on to the caller (a script) or the worker (its log)."""

        def run() -> None:
            try:
                fn()
            except Exception as exc:
                if not self._closed:
                    self._failed(task, exc)
                    if task in ("image", "maps"):
                        self._finish()
                try:
                    exc._cnnw_task = task  # already shown: report_failure leaves it
                except AttributeError:  # an exception type without a __dict__
                    pass
                raise
            self._succeeded(task)

        return run

    def _failed(self, task: str, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self._failures[task] = f"{task} failed: {text}"
        super().report_failure(" | ".join(self._failures.values()))

    def _succeeded(self, task: str) -> None:
        if self._failures.pop(task, None) is not None or self._failures.pop("update", None) is not None:
            super().report_failure(" | ".join(self._failures.values()) or None)

    def report_failure(self, exc: BaseException | str | None) -> None:
        """Show why background work failed (:attr:`view_error`), next to the failures of the
        view's other tasks; None clears them all."""
        if exc is None:
            self._failures.clear()
            super().report_failure(None)
        elif getattr(exc, "_cnnw_task", None) is None:
            self._failed("update", exc)

    def _cannot_show(self, name: str, value: Any) -> str:
        """Why this view cannot show the Selection's ``name`` = ``value`` ("" if it can)."""
        if name == "index":
            try:
                self._check_index(value)
            except ValueError:
                return (f"The shared selection is on image {value}, which this view does not hold (its images are "
                        f"0..{len(self._images) - 1}): it still shows image {self.index}.")
        elif name == "layer" and value and value not in self._layer_names:
            what = self._all_labels.get(value)
            what = f" ({what})" if what else ""
            return (f"The shared selection is on layer {value!r}{what}, which has no feature maps this view can "
                    f"show: it still shows {self.layer!r}.")
        elif name == "channel" and self.layer and value >= self._n_channels[self.layer]:
            return (f"The shared selection is on channel {value}, which {self.layer!r} does not have (it has "
                    f"{self._n_channels[self.layer]}): no channel is selected here.")
        return ""

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
                self._image = img
            self._image_info = {
                "index": index,
                "label": name(label),
                # None (and the reason in model_note) when the output holds no class scores
                "predicted": name(pred),
                "probability": None if p is None else float(p[pred]),
                "correct": None if label is None or pred is None else label == pred,
            }
            if not shown:
                self._update_maps(index=index, layer=layer, finish=False)
        self._finish()
        self._recon_worker.submit(self._job("projection", self._update_recon))

    def _update_maps_and_recon(self) -> None:
        self._update_maps()
        self._recon_worker.submit(self._job("projection", self._update_recon))

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
        scale, sort = self.scale, self.sort
        codes, stats = _maps_frame(acts, scale)
        order = order_channels(stats, sort).astype(np.int32)
        c, h, w = acts.shape
        zoom = self.zoom or max(1, min(16, round(48 / max(h, w))))
        rows, cols = grid_shape(c, None)
        with self.hold_sync():
            if image is not None:
                self._image = image
            self._map_stats = stats
            if self._order is None or not np.array_equal(self._order, order):
                self._order = order  # unchanged (sort="index"): not sent again
            self._maps_info = {"index": index, "layer": layer, "scale": scale, "sort": sort, "rows": rows,
                               "columns": cols, "zoom": zoom}
            self._set_scales()
            self._maps = codes  # last: whoever watches _maps finds the whole frame set
        if finish:
            self._finish()

    def _set_scales(self) -> None:
        """:attr:`color_scales` of what is shown: the range of the maps' colours (all maps under
        scale="shared"; under "per_map" the selected map's, else the first tile's), of the
        selected map over the image, and of a one-channel projection."""
        scales: dict[str, dict[str, Any]] = {}
        stats, info = self._map_stats, self._maps_info
        if stats is not None and len(stats) and self._order is not None and len(self._order) == len(stats):
            lo, hi = stats[:, 2], stats[:, 1]
            per_map = info.get("scale") == "per_map"
            c = self.channel if 0 <= self.channel < len(stats) else -1
            if per_map:
                shown = c if c >= 0 else int(self._order[0])
                scales["maps"] = {"min": float(lo[shown]), "max": float(hi[shown]), "label": "activation",
                                  "channel": shown, "note": f"per map: each map its own range; channel {shown}"}
            else:
                scales["maps"] = {"min": float(lo.min()), "max": float(hi.max()), "label": "activation",
                                  "note": "one range for all maps"}
            if c >= 0:
                a, b = (lo[c], hi[c]) if per_map else (lo.min(), hi.max())
                scales["overlay"] = {"min": float(a), "max": float(b), "label": f"activation of channel {c}",
                                     "channel": c, "note": "its own range" if per_map else "the maps' shared range"}
        recon = self._recon
        rng = self._recon_range
        if recon is not None and recon.shape[-1] == 1 and rng is not None:
            scales["projection"] = {"min": rng[0], "max": rng[1], "label": "deconvnet projection",
                                    "note": "pixel space, min\u2013max scaled"}
        self.set_trait("color_scales", scales)

    def _finish(self) -> None:
        if self.busy and not self._from_page:
            self.busy = False

    def _update_recon(self) -> None:
        if self._closed:
            return
        index, layer, channel = self.index, self.layer, self.channel
        ch = channel if channel >= 0 else None
        proj, chans = self._reconstruct(index, layer, ch)
        img = _norm_uint8(proj[0])
        with self.hold_sync():
            self._recon_range = (float(proj[0].min()), float(proj[0].max()))
            self._recon = img
            self._recon_info = {"channel": int(chans[0]), "strongest": ch is None, "layer": layer, "index": index}
            self._set_scales()

    def _find_top(self, layer: str, channel: int, k: int) -> None:
        total = len(self._images)

        def progress(done, total_=total):
            if self._stop_dataset.is_set() or self._closed:
                raise _Stopped
            self.progress = done / max(1, total_)

        self.progress = 0.0
        self.status = f"finding the top {k} images for channel {channel} of {layer} ..."
        try:
            idx, scores = top_images(self._model, self._images, layer, channel, k, progress=progress)
        except _Stopped:
            why = self._stop_reason
            self.status = f"stopped: {why}" if why else "stopped"
            return
        except ValueError as exc:  # the pass failed: the view says why (view_error)
            why = str(exc)
            if self._dtype != torch.float32 and "computes in" in why:
                # core.top_images batches the images as float32 (as_batch) whatever the model's dtype
                why = (f"not available for a {self._dtype} model yet: the dataset pass feeds the model "
                       f"float32 images ({why})")
            self.status = "top images failed"
            raise ValueError(why) from exc
        finally:
            self.progress = -1.0
            self.note("data", self._images.broken_note())
        if layer != self.layer:  # the layer changed meanwhile: _drop_dataset_panels said so
            self.status = f"top images of {layer!r} dropped: the layer is now {self.layer!r}"
            return
        thumbs = np.stack([self.display_image(int(i)) for i in idx])
        with self.hold_sync():
            self._top = thumbs
            self._top_info = {"indices": [int(i) for i in idx], "scores": [float(s) for s in scores],
                              "layer": layer, "channel": channel}
            self.status = ""  # done: the top images' own heading says what they are

    def __repr__(self) -> str:
        if self._closed:
            return "ActivationExplorer(closed)"
        return f"ActivationExplorer(n_images={len(self._images)}, layer={self.layer!r}, index={self.index})"


class _Stopped(Exception):
    pass
