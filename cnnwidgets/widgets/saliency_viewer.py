"""SaliencyViewer: gradient attribution overlaid on the image, with the class probabilities."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import bqplot as bq
import ipywidgets as ipw
import numpy as np
import torch
import traitlets as t
from torch import nn

from ..core.faithfulness import Faithfulness, Randomization, deletion_insertion, randomization_check
from ..core.colormaps import MAX_CODE, MID_CODE, NONFINITE_CODE, heat_codes
from ..core.colormaps import lut as make_lut
from ..core.images import ImageSet
from ..core.passes import Stopped
from ..core.layers import layer_labels, not_a_cnn_notice, view_defaults
from ..core.model import check_model, model_device, model_dtype
from ..core.outputs import OutputSelector, check_output, class_names_for
from ..core.runner import Scores, forward_errors, spatial_layers, using_model
from ..core.saliency.lrp import LrpRule
from ..core.saliency.occlusion import default_window
from ..core.saliency import (METHODS, REGISTRY, Baseline, Explanation, HeatmapMode, Method, explain, logits_only,
                             softmax_notice_off, to_heatmap)
from ._base import (ArrayTrait, BaseWidget, Choice, Float, ImageView, Int, bounded_int, check_labels, checked,
                    close_widgets, error_text, float_in, frontend_safe, int_in)
from ._worker import LatestWorker
from .selection import Selection, SelectionMixin

__all__ = ["SaliencyLayout", "SaliencyViewer", "attribution_overlay"]

#: The views of :class:`SaliencyViewer` (its ``view`` trait): one map, several methods side by
#: side for one image, or one method on several images. (The core has no such list: it is a
#: choice of this widget alone.)
SaliencyLayout = Literal["single", "compare", "grid"]

#: Methods shown side by side in compare mode by default.
COMPARE_DEFAULT = ["vanilla", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "guided_gradcam"]
#: Target codes shared with :class:`cnnwidgets.Selection`.
PREDICTED, TRUE_LABEL = -1, -2
#: Grad-CAM and guided Grad-CAM: the methods that read a layer's feature maps for a class score.
_CAM_METHODS = tuple(m for m, spec in REGISTRY.items() if spec.takes_layer and spec.targeted)
_UNSET: Any = object()

#: What each method's map measures, for the colour scale's title ("attribution, |gradient × input|").
VALUE_NAMES: dict[str, str] = {
    "vanilla": "gradient", "grad_x_input": "gradient \u00d7 input", "smoothgrad": "mean gradient over noisy copies",
    "integrated_gradients": "integrated gradient", "guided_backprop": "guided gradient", "deconvnet": "deconvnet gradient",
    "gradcam": "Grad-CAM", "guided_gradcam": "guided gradient \u00d7 Grad-CAM", "layer_gradient": "layer gradient",
    "occlusion": "score drop when occluded", "lrp": "relevance (LRP)",
    "gradcam_plus_plus": "Grad-CAM++", "xgradcam": "XGrad-CAM", "hirescam": "HiResCAM", "layercam": "Layer-CAM",
    "scorecam": "Score-CAM", "eigencam": "Eigen-CAM", "ablationcam": "Ablation-CAM",
}
#: One line per method for its menu entry's tooltip: what the map is.
METHOD_TIPS: dict[str, str] = {
    "vanilla": "the gradient of the class score with respect to each input pixel",
    "grad_x_input": "the gradient times the input: how much each pixel's value adds to the score",
    "smoothgrad": "the gradient averaged over noisy copies of the image (less speckle)",
    "integrated_gradients": "gradients summed along a path from a baseline image; they add up to the score change",
    "guided_backprop": "the gradient passed back only through positive activations and positive gradients",
    "deconvnet": "the signal passed back through ReLUs as a deconvolution network would",
    "gradcam": "a chosen layer's feature maps, weighted by their mean gradient, upsampled to the image",
    "guided_gradcam": "guided backprop times Grad-CAM: fine detail inside the Grad-CAM region",
    "layer_gradient": "the gradient of a layer's (or one channel's) summed activation; no class involved",
    "occlusion": "how much the class score drops when a square patch around each pixel is covered (no gradients)",
    "lrp": "the class score handed back down layer by layer (LRP rules); the relevance adds up to the score",
    "gradcam_plus_plus": "a layer's feature maps weighted by their positive gradients, each position weighted too",
    "xgradcam": "a layer's feature maps weighted by their gradients averaged in proportion to each map's activation",
    "hirescam": "gradient times activation at each position of a layer, summed over its channels: no averaging",
    "layercam": "positive gradient times activation at each position of a layer, summed over its channels",
    "scorecam": "a layer's feature maps weighted by the class score of the image masked by each map (no gradients)",
    "eigencam": "a layer's feature maps projected on their first principal component; the same for every class",
    "ablationcam": "a layer's feature maps weighted by the relative drop in the class score when each one is zeroed",
}
#: Brightness (0..255) of the brightest pixel of the image drawn under a map: the image is drawn
#: as dimmed gray, so white ink can never look like the top of the colour scale.
BASE_LEVEL = 128


def _gray(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) -> int32 (H, W) luminance ``(77 R + 150 G + 29 B + 128) >> 8`` (a gray
    image stays as it is: 77 + 150 + 29 = 256)."""
    img = image.astype(np.int32)
    if img.shape[-1] == 1:
        return img[..., 0]
    return (77 * img[..., 0] + 150 * img[..., 1] + 29 * img[..., 2] + 128) >> 8


def attribution_overlay(image: np.ndarray, codes: np.ndarray, table: np.ndarray, opacity: float,
                        signed: bool = False) -> np.ndarray:
    """An attribution map over its image, exactly as the page draws it (integer arithmetic;
    js/src/widgets/saliency_viewer.js: ``attributionOverlay``).

    The image is drawn as dimmed gray (its brightest pixel at :data:`BASE_LEVEL`), and each
    pixel of the map covers it in proportion to its value: zero attribution leaves the image,
    the largest covers it at ``opacity``. So bright strokes of the image and high attribution
    never look alike (captum's ``blended_heat_map`` also draws the image in gray).

    Parameters
    ----------
    image : numpy.ndarray
        uint8 (H, W, C), C = 1 or 3.
    codes : numpy.ndarray
        uint8 (h, w) codes of :func:`~cnnwidgets.core.colormaps.heat_codes`, upsampled to H x W
        by nearest neighbour (source row ``y * h // H``).
    table : numpy.ndarray
        uint8 (256, 3) colours of the codes.
    opacity : float
        Cover of the largest value: 0 shows the dimmed image only.
    signed : bool
        Codes of a signed map (zero at code 127): the cover follows ``|value|``.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 3): ``(base * (255 - c) + colour * c + 127) // 255`` with
        ``base = (gray * BASE_LEVEL + 127) // 255``, ``a = floor(opacity * 255 + 0.5)`` and the
        cover ``c = (a * code + 127) // 254`` (abs), ``(a * |code - 127| + 63) // 127`` (signed),
        ``a`` for non-finite values (code 255).

    Examples
    --------
    >>> img = np.full((1, 2, 1), 255, np.uint8)  # white ink
    >>> attribution_overlay(img, np.array([[0, 254]], np.uint8), make_lut("gray"), 1.0)[0, :, 0].tolist()
    [128, 255]
    """
    H, W = image.shape[:2]
    h, w = codes.shape
    ys = (np.arange(H) * h) // H
    xs = (np.arange(W) * w) // W
    up = codes[ys][:, xs].astype(np.int32)
    colour = table[up].astype(np.int32)
    a = int(np.floor(float(opacity) * 255 + 0.5))
    cover = (a * np.abs(up - MID_CODE) + MID_CODE // 2) // MID_CODE if signed else (a * up + MAX_CODE // 2) // MAX_CODE
    cover = np.where(up == NONFINITE_CODE, a, cover)[..., None]
    base = ((_gray(image) * BASE_LEVEL + 127) // 255)[..., None]
    out = (base * (255 - cover) + colour * cover + 127) // 255
    return out.astype(np.uint8)


class SaliencyViewer(ImageView, SelectionMixin, BaseWidget):
    """Where the model looks: an attribution map over the input image.

    Every map is computed by :func:`cnnwidgets.core.saliency.explain`; what it reports is shown
    with the map (in the status line for the single map, under each panel in the compare and
    grid views): the activations guided backprop and deconvnet changed (or that there were
    none, so the map is the plain gradient), Integrated Gradients' convergence delta, the layer
    Grad-CAM read. A method that fails shows its error in its own panel; the others are drawn.

    Each map is drawn over its image as dimmed gray (:func:`attribution_overlay`), with a colour
    scale whose ends are the attribution they stand for (:meth:`heat_range`). The class chart
    explains the class of any column clicked, however low its bar.

    Beside the map, the evidence that it is faithful (:attr:`evidence`): its deletion and
    insertion curves, computed in the background after the map (:meth:`faithfulness`); in the
    compare view a table of their areas per method; and on request the model-randomization
    check (:meth:`randomization`, the page's "randomization check" button).

    Parameters
    ----------
    model : nn.Module
        A PyTorch classifier: N x K logits, a single logit N x 1 (two classes, class 0 scoring
        the negated logit), or segmentation scores N x K x H x W (a class scores its mean over
        the pixels, or over ``region``); see :mod:`cnnwidgets.core.outputs`. A final softmax or
        sigmoid module is bypassed for the gradients and applied once for the probabilities
        shown (the banner says so). float16/bfloat16 models work: the images are cast to the
        model's dtype, maps and probabilities are float32.
    images
        The images: an N x C x H x W float tensor the model takes as is, a uint8 array
        N x H x W x C (normalized with ``mean``/``std``), a torch ``Dataset`` (items an
        image or ``(image, label)``) or ``DataLoader``, a list of PIL images or file paths, a
        folder with one subfolder per class, or an :class:`~cnnwidgets.core.images.ImageSet`.
        Images are read when needed, never all at once; labels and class names come from
        the data when it has them.
    labels, classes : optional
        True labels (N) and class names (at least as many as the model's classes; for a
        single-logit model one name X gives the classes ``["not X", "X"]``).
    method : str
        One of :attr:`methods` (the core's ``Method`` alias, in the order of
        :data:`~cnnwidgets.core.saliency.REGISTRY`): ``"vanilla"``, ``"grad_x_input"``,
        ``"smoothgrad"``, ``"integrated_gradients"``, ``"guided_backprop"``, ``"deconvnet"``, the
        CAM family (``"gradcam"``, ``"guided_gradcam"``, ``"gradcam_plus_plus"``, ``"xgradcam"``,
        ``"hirescam"``, ``"layercam"``, ``"scorecam"``, ``"eigencam"``, ``"ablationcam"``),
        ``"occlusion"`` (:attr:`window`, :attr:`stride`), ``"lrp"`` (:attr:`lrp_rule`) and
        ``"layer_gradient"``.
    target : "predicted", "true", int or class name
        The class whose score is explained.
    layer : str, optional
        Layer for Grad-CAM and layer gradients (default: Grad-CAM's default layer,
        ``view_defaults(model, x)["cam"]``: the last layer that ran with a feature map larger
        than 1 x 1; layers that never run, such as auxiliary heads, are skipped). :attr:`layers`
        lists the valid ones.
    transform : callable, optional
        Applied to each item's image as it is read (e.g. resize and ``ToTensor``), for
        datasets, files and PIL images.
    output : int, str or callable, optional
        Which part of a structured model output holds the scores (a tuple index, a dict key or
        named-tuple field, or a function of the output); see
        :func:`cnnwidgets.core.outputs.select_output`. None for a model returning one tensor.
    region : box or mask, optional
        Segmentation outputs only: the pixels a class score averages over, a box
        ``(x0, y0, x1, y1)`` in fractions of the image or a mask (H x W, or N x H x W with one
        mask per image); see :func:`cnnwidgets.core.outputs.region_mask`. Default: all pixels.
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
    >>> sv.attribution(0, "vanilla", steps=8).shape  # options a method does not take are ignored
    (1, 28, 28)
    """
    _bundle = "saliency_viewer"
    _export_keys = ("index", "_image", "_image_meta", "_probs", "_heat", "_heat_meta", "_evidence", "_evidence_meta")
    _shared = ("index", "layer", "channel", "target")
    #: The toolbar's controls and clicks on panels (js/src/widgets/saliency_viewer.js), and
    #: the grid view's size.
    _page_writable = frozenset({"index", "method", "target", "layer", "mode", "opacity", "view", "steps",
                                "samples", "noise", "baseline", "grid_size", "evidence", "window", "stride",
                                "lrp_rule"})
    #: Largest Integrated Gradients ``steps`` and SmoothGrad ``samples`` (passes per map), and
    #: largest number of images in the grid view.
    MAX_PASSES = 1000
    MAX_GRID = 100

    # --- choices
    index = Int(0).tag(sync=True)
    n_images = Int(0, read_only=True).tag(sync=True)
    method = Choice(Method, "vanilla").tag(sync=True)
    methods = t.List(t.Unicode(), read_only=True).tag(sync=True)
    #: Per method, from the core's one registry: its menu label, its reference, a one-line
    #: tooltip and the options it takes (``layer``, ``steps``, ``samples``), so the page keeps
    #: no method list of its own.
    method_info = t.Dict(read_only=True).tag(sync=True)
    target = Int(PREDICTED).tag(sync=True)
    class_names = t.List(t.Unicode(), read_only=True).tag(sync=True)
    layer = t.Unicode("").tag(sync=True)
    layers = t.List(t.Unicode(), read_only=True).tag(sync=True)
    #: What the layer menu shows beside each name: type and output shape ("Conv2d 16x14x14").
    layer_labels = t.Dict(read_only=True).tag(sync=True)
    channel = Int(-1).tag(sync=True)
    #: ``"abs"``: ``|attribution|`` (max over channels) on a sequential colour map;
    #: ``"signed"``: the sum over channels on the diverging map, zero in the middle.
    mode = Choice(HeatmapMode, "abs").tag(sync=True)
    cmap = t.Unicode("inferno").tag(sync=True)
    #: How much the largest attribution covers the image (smaller values cover it less).
    opacity = Float(0.8).tag(sync=True)
    view = Choice(SaliencyLayout, "single").tag(sync=True)
    compare_methods = t.List(t.Unicode(), default_value=list(COMPARE_DEFAULT)).tag(sync=True)
    grid_size = Int(12).tag(sync=True)
    steps = Int(50).tag(sync=True)
    samples = Int(25).tag(sync=True)
    noise = Float(0.15).tag(sync=True)
    baseline = Choice(Baseline, "black").tag(sync=True)
    #: Occlusion: the side of the covered square in pixels (0: about a seventh of the image's
    #: shorter side), and how far it moves between positions (0: half the window).
    window = Int(0).tag(sync=True)
    stride = Int(0).tag(sync=True)
    #: LRP: the rule of the convolution and linear layers.
    lrp_rule = Choice(LrpRule, "epsilon").tag(sync=True)

    # --- evidence: is the map faithful?
    #: Compute the deletion and insertion curves of every map shown (in the background, after
    #: the map), and in the compare view one row of their areas per method.
    evidence = t.Bool(True).tag(sync=True)
    #: Points of the deletion and insertion curves: pixels removed (or added) in
    #: :data:`EVIDENCE_STEPS` equal steps.
    evidence_steps = Int(100).tag(sync=True)

    # --- status
    busy = t.Bool(False).tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    #: Whether the status line reports a failure (then the page shows it in the error colour).
    status_error = t.Bool(False, read_only=True).tag(sync=True)
    progress = Float(-1.0).tag(sync=True)

    # --- data (arrays go as one binary buffer each, with dtype and shape)
    #: uint8 (H, W, C) the image shown.
    _image = ArrayTrait()
    #: index, label, predicted, probability, correct (None without a label), probs_label (what
    #: the bars show), title (the chart's) and ``error`` when the model could not read the image.
    _image_meta = t.Dict().tag(sync=True)
    #: float32 (K,) class probabilities of the shown image; drawn by the page itself where no
    #: widget manager renders ``chart`` (a standalone HTML export).
    _probs = ArrayTrait()
    #: uint8 (h, w) codes of the map (:func:`~cnnwidgets.core.colormaps.heat_codes`).
    _heat = ArrayTrait()
    #: index, method, target, target_name, mode; ``vmin``/``vmax``: the attribution at the two
    #: ends of the colour scale, ``value``: what the value is (the colour scale's title);
    #: ``note``: what the method reported (the status line shows it too); ``error``: why the map
    #: could not be computed (then ``_heat`` is all zeros and the page draws the image alone).
    _heat_meta = t.Dict().tag(sync=True)
    #: uint8 (256, 3) the colours of the codes (the same for the panels).
    _heat_lut = ArrayTrait()
    #: uint8 (K, h, w) codes of the compare/grid panels, and uint8 (K, H, W, C) their images.
    _panels = ArrayTrait()
    _panel_images = ArrayTrait()
    #: kind ("compare" | "grid"), mode, failed (how many panels failed) and ``items``, one per
    #: panel: index, method, target, target_name, vmin, vmax, value, ``note`` (the caption under
    #: the panel: the rule report, the convergence delta, the layer) and ``error`` for a panel
    #: whose method failed (its codes are zeros and the page draws the image alone, with the error).
    _panels_meta = t.Dict().tag(sync=True)
    #: float32 (3, S + 1): the fraction of pixels removed/added, the class probability along
    #: the deletion curve and along the insertion curve, for the map shown
    #: (:func:`~cnnwidgets.core.faithfulness.deletion_insertion`).
    _evidence = ArrayTrait()
    #: index, method, target, target_name, steps, ``state`` ("computing", "done", "failed",
    #: "off": not asked for, "none": no map or no class), deletion_auc, insertion_auc, baseline,
    #: ``error`` (why it failed), ``note`` (what the page says instead of the chart).
    _evidence_meta = t.Dict().tag(sync=True)
    #: float32 (L,): the randomization check of the map shown, the rank correlation of the map
    #: with the original after randomizing the top 1, 2, ..., L layers
    #: (:func:`~cnnwidgets.core.faithfulness.randomization_check`).
    _sanity = ArrayTrait()
    #: index, method, target, target_name, layers (names, in the order randomized), ``state``
    #: ("computing", "done", "failed", "stopped"), done/total (layers so far), error.
    _sanity_meta = t.Dict().tag(sync=True)

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
        output: OutputSelector = None,
        region: Any = None,
        selection: Any = None,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        transform: Any = None,
    ) -> None:
        self._model = check_model(model)
        self._device = model_device(model)
        self._images = ImageSet.of(images, check_labels(labels), classes, mean=mean, std=std, transform=transform)
        self._output = check_output(output)
        self._region = self._check_region_shape(region)
        if selection is not None and not isinstance(selection, Selection):
            self._join(selection)  # raises the TypeError with its hint
        scores, _, _ = self._read(0)  # the head: how the output reads as classes
        head = scores.head
        self._n_classes = int(head.n_classes)
        self._images.classes = class_names_for(head, self._images.classes)
        self._images.check_classes(self._n_classes)
        names = self._images.classes[: self._n_classes] if self._images.classes else [str(i) for i in range(self._n_classes)]
        x0 = self._batch(0)
        spatial = spatial_layers(self._model, x0)
        defaults = view_defaults(self._model, x0)
        self._patch = defaults["patch_embedding"]
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}; got {method!r}")
        self._ready = False
        self._from_page = False
        self._closed = False
        self._stop = threading.Event()
        self._sanity_stop = threading.Event()
        self._status_lock = threading.Lock()
        self._status_parts = {"image": "", "heat": "", "panels": ""}
        self._status_failed: set[str] = set()
        #: what the bars show: class probabilities, or for segmentation the share of pixels per class
        self._probs_label = "share of pixels" if head.kind == "segmentation" else "probability"
        chart = self._make_chart(names, head.kind == "segmentation")
        try:  # a failure closes what was started: threads, the chart's widgets, the comm
            super().__init__(chart=chart)
            self._worker = LatestWorker("cnnwidgets-saliency", owner=self)
            self._panel_worker = LatestWorker("cnnwidgets-saliency-panels", owner=self, stop=self._stop)
            self._evidence_worker = LatestWorker("cnnwidgets-saliency-evidence", owner=self)
            self._sanity_worker = LatestWorker("cnnwidgets-saliency-sanity", owner=self, stop=self._sanity_stop)
            self.note("head", scores.note)
            if self._patch is not None:
                self.note("cnn", not_a_cnn_notice(self._patch))
            self.set_trait("n_images", len(self._images))
            self.set_trait("methods", list(METHODS))
            self.set_trait("method_info", {m: {"label": spec.label, "reference": spec.reference,
                                               "tip": METHOD_TIPS.get(m, spec.label), "layer": spec.takes_layer,
                                               "steps": spec.takes_steps, "samples": spec.takes_samples,
                                               "window": spec.takes_window, "rule": spec.takes_rule}
                                           for m, spec in REGISTRY.items()})
            self.set_trait("class_names", names)
            self.set_trait("layers", spatial)
            self.set_trait("layer_labels", layer_labels(self._model, x0, names=spatial))
            self.method = method
            self.target = self._parse_target(target)
            if layer is not None:
                self.layer = layer
            elif spatial:
                self.layer = defaults["cam"] if defaults["cam"] in spatial else (self._patch or spatial[-1])
            self._ready = True
            self._join(selection, explicit=("layer",) if layer is not None else ())
            self._update_image()
            self._update_heat()
        except BaseException:
            self.close()
            close_widgets(chart)  # if the constructor failed before the chart was held
            raise

    # ------------------------------------------------------------------ setup helpers
    def _check_region_shape(self, region: Any) -> Any:
        """``region`` as given; a per-image mask (N x H x W) must have one mask per image. Its
        values, and whether the model's output has pixels at all, are checked by the first pass."""
        if region is None:
            return None
        if isinstance(region, (tuple, list)):
            if len(region) == 4 and all(isinstance(v, (int, float)) for v in region):
                return tuple(region)  # a box
            region = torch.as_tensor(np.asarray(region))  # a mask given as nested lists
        shape = tuple(getattr(region, "shape", ()))
        if len(shape) == 3 and shape[0] not in (1, len(self._images)):
            raise ValueError(
                f"a region mask is H x W, or N x H x W with one mask per image (N = {len(self._images)}); "
                f"got shape {shape}"
            )
        return region

    def _region_for(self, index: int, region: Any = _UNSET) -> Any:
        """The region of image ``index``: a per-image mask's own mask, else the region itself."""
        region = self._region if region is _UNSET else region
        shape = tuple(getattr(region, "shape", ()))
        if len(shape) == 3 and shape[0] == len(self._images) and shape[0] > 1:
            return region[index]
        return region

    def _batch(self, index: int) -> torch.Tensor:
        """Image ``index`` as the model takes it: 1 x C x H x W on its device, in its dtype."""
        x = self._images.item(index)
        return x.to(device=self._device, dtype=model_dtype(self._model))

    def _read(self, index: int, output: Any = _UNSET, region: Any = _UNSET) -> tuple[Scores, torch.Tensor, torch.Tensor]:
        """One pass on image ``index``: the :class:`Scores` reading the output, and the image's
        class scores and probabilities, float32 (K,) each."""
        output = self._output if output is _UNSET else output
        region = self._region_for(index, region)
        x = self._batch(index)
        with using_model(self._model) as run, logits_only(run), torch.no_grad():
            scores = Scores(run, output, region)
            try:
                with forward_errors(x, run):
                    out = run(x.clone())  # clone: a model may change its input in place
            except (RuntimeError, ValueError) as exc:
                raise ValueError(f"the model rejects images of shape {self._images.shape} (C, H, W): {exc}") from None
            selected = scores.select(out)
            if region is not None and selected.dim() != 4:
                raise ValueError(
                    f"region= applies to segmentation outputs (N x K x H x W); this model's scores have shape "
                    f"{tuple(selected.shape)}. Leave region=None for a classifier."
                )
            s = scores(out)[0].detach().float().cpu()
            p = scores.probabilities(out)[0].float().cpu()
        return scores, s, p

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

    #: Bar colours: a class, the explained class (selected), a wrong prediction (the error
    #: colour of both themes), and the invisible full-height column behind each bar.
    BAR_COLOR, TARGET_COLOR, WRONG_COLOR = "#4c78a8", "#f58518", "#d62728"

    def _make_chart(self, names: list[str], shares: bool) -> bq.Figure:
        """The class bars: one bar per class over an invisible full-height column, so that a
        click anywhere in a class's column (a bar near 0 % has no height to click) explains it.
        The figure fills its container's width."""
        xs = bq.OrdinalScale()
        ys = bq.LinearScale(min=0.0, max=1.0)
        # behind the bars: clickable, drawn at opacity 0, never styled by its selection
        self._columns = bq.Bars(
            x=names, y=np.ones(len(names)), scales={"x": xs, "y": ys}, colors=[self.BAR_COLOR], opacities=[0.0],
            interactions={"click": "select"}, selected_style={}, unselected_style={}, padding=0.0,
        )
        self._bars = bq.Bars(
            x=names, y=np.zeros(len(names)), scales={"x": xs, "y": ys}, colors=[self.BAR_COLOR] * len(names),
            color_mode="element", interactions={"click": "select"}, selected_style={"fill": self.TARGET_COLOR},
            unselected_style={"opacity": 0.8},
        )
        self._columns.observe(self._on_bar_select, "selected")
        self._bars.observe(self._on_bar_select, "selected")
        ax = bq.Axis(scale=xs, label="class")
        ay = bq.Axis(scale=ys, orientation="vertical", tick_format=".0%", label="share of pixels" if shares else "probability",
                     label_offset="42px", tick_values=np.linspace(0.0, 1.0, 5))
        return bq.Figure(
            marks=[self._columns, self._bars], axes=[ax, ay], title=self._chart_title(0, None),
            layout=ipw.Layout(width="100%", height="260px", min_width="0", margin="0"),
            fig_margin={"top": 40, "bottom": 45, "left": 62, "right": 10},
        )

    def _chart_what(self) -> str:
        return "share of pixels per class" if self._probs_label == "share of pixels" else "class probabilities"

    def _chart_title(self, index: int, error: str | None) -> str:
        """What the chart shows, as its title says it: the image's class probabilities (or
        share of pixels), and that a click on a class explains it."""
        # short: the chart may be 300 px wide; the y axis says probability or share of pixels
        if error:
            return f"image {index}: no scores (see the status)"
        return f"image {index} \u00b7 click a class to explain it"

    # ------------------------------------------------------------------ public API
    @property
    def model(self) -> nn.Module:
        return self._model

    def probabilities(self, index: int | None = None) -> np.ndarray:
        """What the bar chart shows for image ``index``, float32 (K,): softmax of the logits;
        for a single logit ``[1 - sigmoid, sigmoid]``; for segmentation the share of the pixels
        whose top class is k. A final softmax or sigmoid of the model is applied once."""
        index = self.index if index is None else self._images.check_index(index)
        return self._read(index)[2].numpy()

    def resolve_target(self, index: int | None = None, target: int | str | None = None) -> int:
        """The class index explained for image ``index`` under ``target`` (default: the widget's).

        "predicted" is the class with the highest score (for segmentation: the highest mean
        score over the pixels, or over ``region``)."""
        index = self.index if index is None else self._images.check_index(index)
        code = self.target if target is None else self._parse_target(target)
        return self._resolve(index, code)

    def _resolve(self, index: int, code: int, output: Any = _UNSET, region: Any = _UNSET) -> int:
        if code == TRUE_LABEL:
            label = self._images.label(index)
            if label is not None:
                return label
            code = PREDICTED
        if code == PREDICTED:
            return int(self._read(index, output, region)[1].argmax())
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
            Any of :data:`cnnwidgets.core.saliency.COMMON_PARAMS`, for every method (a method
            ignores those it does not take, as :func:`~cnnwidgets.core.saliency.attribute`
            does): ``steps=``, ``baseline=``, ``integration=`` (Integrated Gradients),
            ``samples=``, ``noise=`` (SmoothGrad), ``layer=`` (Grad-CAM, layer gradients),
            ``channel=`` (layer gradients), ``seed=``, ``batch_size=``, ``output=``, ``region=``.
            Default: the widget's settings.

        Returns
        -------
        numpy.ndarray
            float32 (C, H, W) like the input; (H, W) at input size for ``"gradcam"``.

        Warns
        -----
        UserWarning
            When the model ends in a softmax or sigmoid (bypassed for the call), and when guided
            backprop or deconvnet found no rectifying activation (the map is then the plain
            gradient).
        """
        a, e = self._attribute(index, method, target, params, notice=True)
        if e.rule is not None and e.rule.total == 0 and e.method != "lrp":
            warnings.warn(f"{REGISTRY[e.method].label}: {e.rule.describe()}.", UserWarning, stacklevel=2)
        return a

    def explanation(self, index: int | None = None, method: str | None = None, target: int | str | None = None,
                    **params: Any) -> Explanation:
        """:meth:`attribution` with what the method reported, as
        :func:`~cnnwidgets.core.saliency.explain` returns it (attribution 1 x ..., the rule
        report, the convergence delta, the layer, the head and notes)."""
        return self._attribute(index, method, target, params, notice=True)[1]

    def faithfulness(self, index: int | None = None, method: str | None = None, target: int | str | None = None,
                     *, steps: int | None = None, **params: Any) -> Faithfulness:
        """The deletion and insertion curves of the map of ``method`` for image ``index`` and
        class ``target`` (defaults: the widget's), as the evidence chart beside the map shows
        them: :func:`~cnnwidgets.core.faithfulness.deletion_insertion` with ``steps`` (default
        :attr:`evidence_steps`, at most one per pixel) and the widget's ``output``/``region``,
        the pixels ranked as the map shows them (``|attribution|`` for ``mode="abs"``, the
        signed attribution for ``"signed"``). ``params`` as in :meth:`attribution`.

        Examples
        --------
        >>> from cnnwidgets import SaliencyViewer, demo
        >>> d = demo.mnist("val")
        >>> sv = SaliencyViewer(d.model, d.images[:4], d.labels[:4], d.classes, method="gradcam")
        >>> f = sv.faithfulness(0, steps=20)
        >>> f.deletion.shape, 0.0 <= f.deletion_auc <= 1.0
        ((21,), True)
        >>> sv.close()
        """
        index = self.index if index is None else self._images.check_index(index)
        method = self.method if method is None else method
        a, e = self._attribute(index, method, target, params, notice=False)
        if e.targets is None:
            raise ValueError(f"{REGISTRY[method].label} explains no class, so it has no deletion or insertion curve")
        return self._curves(index, int(e.targets[0]), a, self.evidence_steps if steps is None else steps)

    def randomization(self, index: int | None = None, method: str | None = None, target: int | str | None = None,
                      *, layers: Any = None, seed: int = 0, **params: Any) -> Randomization:
        """The model-randomization check (Adebayo et al., 2018) of the map of ``method`` for image
        ``index`` and class ``target``: :func:`~cnnwidgets.core.faithfulness.randomization_check`
        with the widget's settings. A map that stays alike while the layers are randomized
        from the top does not depend on what the model learned. Runs here, in this thread; the
        view's "randomization check" button runs it in the background."""
        index = self.index if index is None else self._images.check_index(index)
        method = self.method if method is None else method
        code = self.target if target is None else self._parse_target(target)
        kw = self._settings(params)
        cls = self._resolve(index, code, kw["output"], kw["region"]) if REGISTRY[method].targeted else None
        return self._randomize(index, method, cls, kw, layers=layers, seed=seed)

    def _curves(self, index: int, cls: int, a: np.ndarray, steps: int, stop: Any = None) -> Faithfulness:
        """Deletion and insertion in the order of the map as shown: by magnitude for
        ``mode="abs"``, positive evidence first for ``"signed"``; at most one step per pixel."""
        _, h, w = self._images.shape
        a = np.abs(a) if self.mode == "abs" else a
        with softmax_notice_off():  # the banner says it once; the probabilities are the model's own
            return deletion_insertion(self._model, self._batch(index), torch.from_numpy(np.ascontiguousarray(a)), cls,
                                      steps=min(steps, h * w), output=self._output, region=self._region_for(index),
                                      stop=stop)

    def _randomize(self, index: int, method: str, cls: int | None, kw: dict[str, Any], *, layers: Any = None,
                   seed: int = 0, progress: Any = None, stop: Any = None) -> Randomization:
        kw = dict(kw, region=self._region_for(index, kw.get("region")))
        kw.pop("seed", None)  # the randomization's own seed seeds the method too
        with softmax_notice_off():
            return randomization_check(self._model, self._batch(index), method, cls, layers=layers, seed=seed,
                                       progress=progress, stop=stop, **kw)

    def _settings(self, params: dict[str, Any]) -> dict[str, Any]:
        """The common options (COMMON_PARAMS) from the widget's traits, overridden by ``params``;
        the core keeps, for each method, those it takes."""
        kw: dict[str, Any] = {
            "layer": self.layer or None, "channel": self.channel if self.channel >= 0 else None,
            "steps": self.steps, "baseline": self.baseline, "samples": self.samples, "noise": self.noise, "seed": 0,
            "window": self.occlusion_window()[0], "stride": self.occlusion_window()[1], "rule": self.lrp_rule,
            "output": self._output, "region": self._region,
        }
        kw.update(params)
        return kw

    def occlusion_window(self) -> tuple[int, int]:
        """The occlusion window and stride in pixels, as used: :attr:`window` and :attr:`stride`,
        0 standing for the core's defaults (:func:`~cnnwidgets.core.saliency.occlusion.default_window`:
        a seventh of the shorter side; half the window)."""
        _, h, w = self._images.shape
        window = self.window or default_window(h, w)[0]
        return window, self.stride or max(1, window // 2)

    def _attribute(self, index, method, target, params, *, notice: bool) -> tuple[np.ndarray, Explanation]:
        index = self.index if index is None else self._images.check_index(index)
        method = self.method if method is None else method
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}; got {method!r}")
        code = self.target if target is None else self._parse_target(target)
        kw = self._settings(params)
        cls = self._resolve(index, code, kw["output"], kw["region"]) if REGISTRY[method].targeted else None
        return self._explain(index, method, cls, kw, explicit_layer="layer" in params, notice=notice)

    def _explain(self, index: int, method: str, cls: int | None, kw: dict[str, Any], *, explicit_layer: bool = False,
                 notice: bool = False) -> tuple[np.ndarray, Explanation]:
        """The map of ``method`` for image ``index`` and class ``cls`` with the options ``kw``
        (:meth:`_settings`): float32 numpy (C, H, W) or (H, W), and the explanation."""
        if method in _CAM_METHODS and self._patch is not None and not explicit_layer:
            raise ValueError(
                f"{REGISTRY[method].label} needs feature maps, and this model looks like a vision transformer: its "
                f"only layer with feature maps is the patch embedding {self._patch!r}. The gradient methods work; "
                "pass layer=... to run Grad-CAM on a layer of your choice."
            )
        kw = dict(kw, region=self._region_for(index, kw.get("region")))
        if not REGISTRY[method].takes_steps:
            kw.pop("baseline", None)  # the menu's baseline is Integrated Gradients' (occlusion covers with 0)
        quiet = contextlib.nullcontext() if notice else softmax_notice_off()
        with quiet:
            e = explain(self._model, self._batch(index), method, cls, **kw)
        return e.attribution[0].detach().float().cpu().numpy(), e

    def heatmap(self, index: int | None = None, method: str | None = None, target: int | str | None = None,
                **params: Any) -> np.ndarray:
        """The displayed map in [0, 1] (``mode="abs"``) or [-1, 1] (signed), float32 (H, W)."""
        a, _ = self._attribute(index, method, target, params, notice=False)
        return self._heat_of(a)

    def _heat_of(self, a: np.ndarray) -> np.ndarray:
        return to_heatmap(a[None] if a.ndim == 2 else a, self.mode)

    def _value_range(self, a: np.ndarray) -> tuple[float, float]:
        """The attribution at the two ends of the colour scale of the map of ``a`` (C, H, W) or
        (H, W): ``(0, S)`` for ``mode="abs"``, ``(-S, S)`` for signed, with ``S`` the largest
        value that :func:`~cnnwidgets.core.saliency.to_heatmap` divides by (max over pixels of
        the max over channels of ``|a|``, or of ``|sum over channels|``)."""
        a3 = np.asarray(a[None] if a.ndim == 2 else a, np.float64)
        maps = np.abs(a3).max(axis=0) if self.mode == "abs" else a3.sum(axis=0)
        top = float(np.abs(maps).max()) if maps.size else 0.0
        return (0.0, top) if self.mode == "abs" else (-top, top)

    def _value_name(self, method: str) -> str:
        """What the colour of a map of ``method`` measures: "attribution, |gradient × input|"
        (channels reduced by their max), or "signed attribution, gradient × input" (summed)."""
        name = VALUE_NAMES.get(method, REGISTRY[method].label)
        several = self._images.shape[0] > 1 and REGISTRY[method].input_shaped
        if self.mode == "abs":
            cam = not REGISTRY[method].input_shaped  # a class activation map is >= 0 already
            return f"attribution, {name if cam else f'|{name}|'}" + (", max over channels" if several else "")
        return f"signed attribution, {name}" + (", sum over channels" if several else "")

    def heat_range(self) -> tuple[float, float]:
        """The attribution at the two ends of the colour scale of the map shown (its colorbar's
        min and max): ``(0, S)`` for ``mode="abs"``, ``(-S, S)`` for signed; ``(nan, nan)`` when
        the map could not be computed."""
        meta = self._heat_meta
        if meta.get("error") or meta.get("vmin") is None:
            return (float("nan"), float("nan"))
        return (float(meta["vmin"]), float(meta["vmax"]))

    def overlay_image(self) -> np.ndarray:
        """The current map over the image as the page draws it (:func:`attribution_overlay`),
        uint8 (H, W, 3); the image alone when the map could not be computed
        (``_heat_meta["error"]``)."""
        meta = self._heat_meta
        img = self._images.display_rgb(meta["index"])
        if meta.get("error"):
            return img
        return attribution_overlay(img, self._heat, self._table(), self.opacity, self.mode == "signed")

    #: Let go by close(): the model and the images.
    _released = ("_model", "_images")
    #: The single map and the compare/grid panels (ImageView.wait / close; close() also closes
    #: the chart with its figure, bars, scales and axes, which the view holds).
    _workers = ("_worker", "_panel_worker", "_evidence_worker", "_sanity_worker")
    _stops = ("_stop", "_sanity_stop")
    _wait_timeout = 120.0

    # ------------------------------------------------------------------ validation
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

    @t.validate("evidence_steps")
    @checked
    def _v_evidence_steps(self, proposal):
        return int_in(proposal, 2, self.MAX_PASSES, "steps of the deletion and insertion curves")

    @t.validate("window", "stride")
    @checked
    def _v_window(self, proposal):
        _, h, w = self._images.shape
        return int_in(proposal, 0, min(h, w), "occlusion: pixels, at most the image's shorter side; 0 for the default")

    @t.validate("grid_size")
    @checked
    def _v_grid_size(self, proposal):
        return int_in(proposal, 1, self.MAX_GRID, "images in the grid view")

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
            self._schedule(lambda: self._job(self._update_image, self._update_heat, self._refresh_panels))

    @t.observe("method", "target", "layer", "channel", "steps", "samples", "noise", "baseline", "mode", "cmap",
               "window", "stride", "lrp_rule")
    def _on_params(self, change):
        if self._ready:
            # a pending index change may be superseded by this job: bring the image along
            self._schedule(lambda: self._job(self._sync_image, self._update_heat, self._refresh_panels))

    @t.observe("evidence", "evidence_steps")
    def _on_evidence(self, change):
        if self._ready:
            self._submit_evidence()
            self._refresh_panels()

    def _job(self, *steps) -> None:
        """Run the update ``steps`` in order; the view is not busy afterwards, however they end
        (an exception goes on to the worker, which shows it in the view: ``view_error``), and a
        run that ends well clears an earlier failure of the view."""
        try:
            for step in steps:
                step()
        finally:
            self.busy = False
        if self.view_error:
            self.report_failure(None)

    def _sync_image(self) -> None:
        if self._image_meta.get("index") != self.index:
            self._update_image()

    @t.observe("view", "compare_methods", "grid_size")
    def _on_view(self, change):
        if self._ready:
            self._refresh_panels()

    @frontend_safe
    def _on_bar_select(self, change):
        """A click on a class bar, or anywhere in its column (the bqplot chart's page state):
        explain that class."""
        sel, owner = change["new"], change["owner"]
        if not self._ready or sel is None or len(sel) != 1:
            return
        value = np.asarray(sel).reshape(-1)[0].item()  # "x", NaN, 2.5 ... arrive here too
        try:
            c = bounded_int(value, "the selected bar", 0, self._n_classes - 1, "one class index")
        except (TypeError, ValueError):
            self._show_target_bar()  # the chart shows the explained class again
            raise
        finally:
            if owner is self._columns:
                owner.selected = None  # the column is clickable again, and never drawn selected
        if c != self.resolve_target():
            self.target = c
        elif owner is self._columns:
            self._show_target_bar()

    def _show_target_bar(self) -> None:
        try:
            cls = self.resolve_target()
        except Exception:  # noqa: BLE001 - the image has no scores: no bar to show
            return
        if list(self._bars.selected or []) != [cls]:
            self._bars.selected = [cls]

    def _cannot_show(self, name: str, value: Any) -> str:
        """An image beyond this view's images, or a layer without feature maps for Grad-CAM, in
        words (SelectionMixin shows them in ``selection_note``)."""
        if name == "index" and isinstance(value, int) and not 0 <= value < len(self._images):
            return (f"The shared selection is on image {value}, which this view does not have "
                    f"(images 0..{len(self._images) - 1}): it shows image {self.index}.")
        if name == "layer" and value and value not in self.layers:
            return (f"The shared selection's layer {value!r} has no feature maps for Grad-CAM: this "
                    f"view stays on {self.layer!r}.")
        return ""

    def _on_stop(self, content) -> None:
        """The page's Stop button: end the compare/grid run after its current panel, and the
        randomization check after its current layer."""
        self._stop.set()
        self._sanity_stop.set()

    def _on_sanity_check(self, content) -> None:
        """The page's "randomization check" button: the check of the map shown, in the
        background (its progress and result in ``_sanity_meta``)."""
        meta = self._heat_meta
        if meta.get("error") or meta.get("index") is None:
            self._sanity_meta = {"state": "failed", "error": "there is no map to check: the map itself failed"}
            return
        index, method, cls = meta["index"], meta["method"], meta.get("target")
        key = {"index": index, "method": method, "target": cls, "target_name": self._images.class_name(cls)}
        kw = self._settings({})
        self._sanity_stop.clear()
        self._sanity_meta = dict(key, state="computing", done=0, total=0, layers=[])
        self._sanity_worker.submit(lambda: self._run_sanity(key, kw))

    def _run_sanity(self, key: dict[str, Any], kw: dict[str, Any]) -> None:
        worker = self._sanity_worker

        def progress(done: int, total: int) -> None:
            self._sanity_meta = dict(self._sanity_meta, done=int(done), total=int(total))

        try:
            r = self._randomize(key["index"], key["method"], key["target"], kw, progress=progress,
                                stop=lambda: self._closed or self._sanity_stop.is_set() or worker.pending)
        except Stopped:
            if not self._closed:
                self._sanity_meta = dict(self._sanity_meta, state="stopped")
            return
        except Exception as exc:  # noqa: BLE001 - shown in the view, beside the button
            if not self._closed:
                self._sanity_meta = dict(key, state="failed", error=error_text(exc))
            return
        with self.hold_sync():
            self._sanity = np.asarray(r.spearman, np.float32)
            self._sanity_meta = dict(key, state="done", layers=list(r.layers), done=len(r.layers),
                                     total=len(r.layers))

    # ------------------------------------------------------------------ updates
    def _table(self) -> np.ndarray:
        return make_lut("diverging" if self.mode == "signed" else self.cmap)

    def _set_status(self, part: str, text: str, *, failed: bool = False) -> None:
        """The status line: why the image has no probabilities (if so), what the single map
        reported (or why it failed), then what the compare/grid run did (how many panels
        failed, stopped). ``failed``: this part reports a failure (the line is then shown in
        the error colour, ``status_error``)."""
        with self._status_lock:
            self._status_parts[part] = text
            (self._status_failed.add if failed and text else self._status_failed.discard)(part)
            with self.hold_sync():
                self.status = " ".join(v for v in self._status_parts.values() if v)
                self.set_trait("status_error", bool(self._status_failed))

    def _update_image(self) -> None:
        index = self.index
        img = self._images.display(index)
        error = None
        try:
            _, s, p = self._read(index)
        except Exception as exc:  # noqa: BLE001 - the image is still shown, the status says why there are no bars
            error = error_text(exc)
            self._set_status("image", f"image {index}: {error}", failed=True)
            pred, p = None, np.zeros(self._n_classes, np.float32)
        else:
            self._set_status("image", "")
            pred, p = int(s.argmax()), p.numpy().astype(np.float32)
        label = self._images.label(index)
        correct = None if label is None or pred is None else label == pred
        meta = {"index": index, "label": self._images.class_name(label), "predicted": self._images.class_name(pred),
                "probability": None if pred is None else float(p[pred]), "correct": correct,
                "probs_label": self._probs_label, "title": self._chart_what()}
        if error:
            meta["error"] = error
        with self.hold_sync():
            self._image = img
            self._image_meta = meta
            self._probs = p
        colors = [self.BAR_COLOR] * self._n_classes
        if correct is False:
            colors[pred] = self.WRONG_COLOR  # a wrong prediction, in the error colour
        with self._bars.hold_sync():
            self._bars.y = p.astype(np.float64)
            self._bars.colors = colors
        self.chart.title = self._chart_title(index, error)

    def _map_notes(self, e: Explanation) -> list[str]:
        """What the method reported, for the status line (the head's note is in the banner)."""
        head_note = e.head.note if e.head is not None else None
        return [n for n in e.notes if n != head_note]

    def _panel_note(self, e: Explanation, kw: dict[str, Any]) -> str:
        """A short caption for a panel: what makes this map what it is, and whether it
        coincides with another method's."""
        parts = []
        if e.rule is not None:
            if e.rule.total == 0 and e.method != "lrp":  # LRP's report says what its map is then
                parts.append("no rectifying activation: same as the plain gradient" if e.method != "guided_gradcam"
                             else "no rectifying activation: the plain gradient times Grad-CAM")
            else:
                parts.append(e.rule.describe())
        if e.delta is not None:
            parts.append(f"delta {float(e.delta.reshape(-1)[0]):.3g}")
        if e.method == "smoothgrad" and kw.get("noise") == 0:
            parts.append("noise 0: same as the plain gradient")
        if e.layer is not None:
            parts.append(f"layer {e.layer}")
        elif e.method == "layer_gradient":
            channel = kw.get("channel")
            parts.append(f"layer {kw.get('layer')}" + ("" if channel is None else f", channel {channel}"))
        return "; ".join(parts)

    def _update_heat(self) -> None:
        index, method, code = self.index, self.method, self.target
        cls = None
        try:
            cls = self.resolve_target(index)
            kw = self._settings({})
            a, e = self._explain(index, method, cls if REGISTRY[method].targeted else None, kw)
        except Exception as exc:  # noqa: BLE001 - shown in the view: the status line and the caption
            msg = error_text(exc)
            _, h, w = self._images.shape
            with self.hold_sync():
                self._heat_lut = self._table()
                self._heat = np.zeros((h, w), np.uint8)
                self._heat_meta = {"index": index, "method": method, "target": cls,
                                   "target_name": self._images.class_name(cls), "mode": self.mode,
                                   "value": self._value_name(method), "vmin": None, "vmax": None,
                                   "note": "", "error": msg}
                self.last_error = msg
                self._set_status("heat", f"{REGISTRY[method].label} failed: {msg}", failed=True)
                self.busy = False
            self._evidence_for = None
            self._submit_evidence()
            return
        codes = heat_codes(self._heat_of(a), self.mode == "signed")
        vmin, vmax = self._value_range(a)
        notes = self._map_notes(e)
        with self.hold_sync():
            self._heat_lut = self._table()
            self._heat = codes
            self._heat_meta = {"index": index, "method": method, "target": cls,
                               "target_name": self._images.class_name(cls), "mode": self.mode,
                               "value": self._value_name(method), "vmin": vmin, "vmax": vmax,
                               "note": " ".join(notes)}
            self._set_status("heat", " ".join(notes))
            self.busy = False
        self._evidence_for = (index, method, cls if REGISTRY[method].targeted else None, a)
        self._submit_evidence()
        # a click on another bar meanwhile is not undone by this (older) update: the newer one follows
        if self.target == code and list(self._bars.selected or []) != [cls]:
            self._bars.selected = [cls]

    #: The map the evidence is computed for: (index, method, class, attribution), None when
    #: the map failed.
    _evidence_for: tuple[int, str, int | None, np.ndarray] | None = None
    #: Counts the maps whose evidence was asked for: a run for an older one stops.
    _evidence_gen = 0

    def _submit_evidence(self) -> None:
        """Deletion and insertion curves of the map shown, on the evidence worker (the map is
        drawn first; a newer map's curves replace a run that has not finished)."""
        if self._closed:
            return
        self._evidence_gen += 1  # a run for an earlier map stops, and shows nothing
        found = self._evidence_for
        if found is None:
            self._evidence_meta = {"state": "none", "note": "no map, so no evidence"}
            return
        index, method, cls, a = found
        _, h, w = self._images.shape
        key = {"index": index, "method": method, "target": cls, "target_name": self._images.class_name(cls),
               "steps": min(self.evidence_steps, h * w), "mode": self.mode}
        if not self.evidence:
            self._evidence_meta = dict(key, state="off", note="evidence is off")
            return
        if cls is None:
            self._evidence_meta = dict(key, state="none",
                                       note=f"{REGISTRY[method].label} explains no class: no deletion or insertion curve")
            return
        self._evidence_meta = dict(key, state="computing")
        gen = self._evidence_gen
        self._evidence_worker.submit(lambda: self._compute_evidence(key, a, gen))

    def _compute_evidence(self, key: dict[str, Any], a: np.ndarray, gen: int) -> None:
        def stale() -> bool:
            return self._closed or gen != self._evidence_gen

        try:
            f = self._curves(key["index"], key["target"], a, key["steps"], stop=stale)
        except Stopped:
            return  # a newer map's curves follow
        except Exception as exc:  # noqa: BLE001 - shown in the view, where the chart would be
            if not stale():
                self._evidence_meta = dict(key, state="failed", error=error_text(exc))
            return
        if stale():
            return
        with self.hold_sync():
            self._evidence = np.stack([f.fractions, f.deletion, f.insertion]).astype(np.float32)
            self._evidence_meta = dict(key, state="done", deletion_auc=float(f.deletion_auc),
                                       insertion_auc=float(f.insertion_auc), baseline=str(f.baseline))

    def _refresh_panels(self) -> None:
        if self._closed:
            return
        if self.view == "single":
            self._set_status("panels", "")
            return
        self._stop.clear()
        view, index = self.view, self.index
        self._panel_worker.submit(lambda: self._make_panels(view, index))

    def _make_panels(self, view: str, index: int) -> None:
        """Compute the compare/grid panels; a method that fails on a panel shows its error there
        and the other panels are drawn. The progress indicator ends however the run ends."""
        try:
            self._fill_panels(view, index)
        except Exception as exc:  # noqa: BLE001 - not one method's failure (those stay in their panels)
            if not self._closed:
                self.last_error = error_text(exc)
                self._set_status("panels", f"the {view} view failed: {self.last_error}", failed=True)
        finally:
            self.progress = -1.0

    def _fill_panels(self, view: str, index: int) -> None:
        if view == "compare":
            jobs = [(index, m) for m in self.compare_methods]
        else:
            jobs = [(i, self.method) for i in range(index, min(len(self._images), index + self.grid_size))]
        _, h, w = self._images.shape
        kw = self._settings({})
        signed = self.mode == "signed"
        heats, items, imgs, maps = [], [], [], []
        failed = 0
        self.progress = 0.0
        for k, (i, m) in enumerate(jobs):
            if self._stop.is_set() or self._closed:
                self._set_status("panels", "stopped")
                return
            item: dict[str, Any] = {"index": i, "method": m, "target": None, "target_name": None, "note": "",
                                    "value": self._value_name(m), "vmin": None, "vmax": None}
            try:
                cls = self.resolve_target(i)
                item.update(target=cls, target_name=self._images.class_name(cls))
                a, e = self._explain(i, m, cls if REGISTRY[m].targeted else None, kw)
                codes = heat_codes(self._heat_of(a), signed)
                item["vmin"], item["vmax"] = self._value_range(a)
                item["note"] = self._panel_note(e, kw)
                maps.append((k, i, cls if REGISTRY[m].targeted else None, a))
            except Exception as exc:  # noqa: BLE001 - one failing method must not empty the other panels
                if self._closed:
                    return
                codes = np.zeros((h, w), np.uint8)
                item["error"] = error_text(exc)
                failed += 1
            heats.append(codes)
            items.append(item)
            imgs.append(self._images.display(i))
            self.progress = (k + 1) / len(jobs)
        what = "panels" if view == "compare" else "images"
        with self.hold_sync():
            self._panel_images = np.stack(imgs) if imgs else None
            self._panels = np.stack(heats) if heats else None
            self._panels_meta = {"kind": view, "mode": self.mode, "items": items, "failed": failed}
            self._set_status("panels", f"{failed} of {len(jobs)} {what} failed (each says why under its picture)."
                             if failed else "", failed=bool(failed))
        if view == "compare" and self.evidence:
            self._panel_evidence(items, maps, failed)

    def _panel_evidence(self, items: list[dict[str, Any]], maps: list[tuple], failed: int) -> None:
        """The compare view's row of numbers per method: the areas under its deletion and
        insertion curves for this image, added to the panels' items one method at a time."""
        steps = self.evidence_steps
        for n, (k, i, cls, a) in enumerate(maps):
            if self._stop.is_set() or self._closed:
                self._set_status("panels", "stopped")
                return
            item = dict(items[k])
            shown = self._evidence_meta  # the main map's curves, when they are this panel's: no second run
            if cls is None:
                item["evidence"] = "explains no class"
            elif shown.get("state") == "done" and all(
                    shown.get(name) == value for name, value in
                    (("index", i), ("method", items[k]["method"]), ("target", cls), ("mode", self.mode))) \
                    and shown.get("steps") == min(steps, self._images.shape[1] * self._images.shape[2]):
                item.update(deletion_auc=shown["deletion_auc"], insertion_auc=shown["insertion_auc"])
            else:
                try:
                    f = self._curves(i, cls, a, steps, stop=lambda: self._closed or self._stop.is_set())
                except Stopped:
                    self._set_status("panels", "stopped")
                    return
                except Exception as exc:  # noqa: BLE001 - this method's row says why
                    item["evidence"] = f"failed: {error_text(exc)}"
                else:
                    item.update(deletion_auc=float(f.deletion_auc), insertion_auc=float(f.insertion_auc))
            items[k] = item
            self.progress = (n + 1) / len(maps)
            self._panels_meta = {"kind": "compare", "mode": self.mode, "items": list(items), "failed": failed,
                                 "evidence_steps": steps}

    def panel_overlay(self, k: int) -> np.ndarray:
        """Panel ``k`` of the compare/grid view as the page draws it (:func:`attribution_overlay`),
        uint8 (H, W, 3); the image alone for a panel whose method failed."""
        meta = self._panels_meta
        codes = self._panels[k]
        img = self._panel_images[k]
        img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]
        if meta["items"][k].get("error"):
            return np.ascontiguousarray(img)
        return attribution_overlay(img, codes, self._table(), self.opacity, meta.get("mode") == "signed")

    def __repr__(self) -> str:
        if self._closed:
            return "SaliencyViewer(closed)"
        return f"SaliencyViewer(n_images={len(self._images)}, method={self.method!r}, index={self.index})"
