"""TSNEScatter: a live 2-D map of a layer's features, with image thumbnails on hover."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch
import traitlets as t
from torch import nn

from ..core.embedding import (
    EmbeddingMethod,
    FeaturePool,
    Stopped,
    _pool_features,
    check_features,
    effective_perplexity,
    mosaic,
    neighbors,
    pca_2d,
    pixel_neighbors,
    tsne,
    umap_2d,
)
from ..core.images import ImageSet
from ..core.passes import stream_pass
from ..core.layers import feature_layer
from ..core.model import check_model, get_layer, model_device, model_dtype
from ..core.outputs import OutputSelector, check_output, class_names_for
from ..core.runner import LayerTap, Scores, forward_errors, logits_only, require_tensor, using_model
from ._base import (MAX_LABEL, ArrayTrait, BaseWidget, Choice, Float, Int, bounded_float, bounded_int, check_labels,
                    checked, float_in, int_in)
from ._worker import start_thread
from .selection import Selection, SelectionMixin

__all__ = ["ColorBy", "NeighborSpace", "Phase", "TSNEScatter"]

#: What the point colours show: the true label, the model's predicted class, or whether the
#: prediction is correct.
ColorBy = Literal["label", "predicted", "correct"]
#: Where :meth:`TSNEScatter.neighbors` looks for an image's nearest neighbours.
NeighborSpace = Literal["feature", "pixel"]
#: Where the background work is: not started, the feature pass, the 2-D embedding, or its end
#: (``done``, ``stopped`` by :meth:`TSNEScatter.stop`, or ``failed``: the reason is in
#: ``view_error``).
Phase = Literal["idle", "features", "embedding", "done", "stopped", "failed"]
#: Largest thumbnail side in pixels.
THUMB_MAX = 32


#: Bytes of thumbnails a map sends to the page in all: with many images each one is smaller
#: (32 px a side up to ~16,000 RGB images, 12 px at 100,000, 8 px from ~250,000).
THUMB_BUDGET = 48 << 20
#: Smallest thumbnail side in pixels.
THUMB_MIN = 8


def thumbnail_factor(n: int, shape: tuple[int, int, int]) -> int:
    """The average-pooling factor that makes N thumbnails of images ``shape`` (C, H, W) fit
    :data:`THUMB_BUDGET` (sides between THUMB_MIN and THUMB_MAX pixels where the image allows)."""
    c, h, w = shape
    per = 1 if c == 1 else 3
    side = int(np.sqrt(THUMB_BUDGET / max(1, n * per)))
    side = max(THUMB_MIN, min(THUMB_MAX, side))
    return max(1, int(np.ceil(max(h, w) / side)))


def _thumbnails_of(x: torch.Tensor, f: int, mean: Any, std: Any) -> np.ndarray:
    """Display thumbnails (B, h, w, c) uint8 of a CPU batch, average-pooled by ``f``."""
    from ..core.inputs import to_display

    x = x.float()
    if f > 1:
        x = torch.nn.functional.avg_pool2d(x, f, ceil_mode=True)
    return to_display(x, mean=mean, std=std)


class TSNEScatter(SelectionMixin, BaseWidget):
    """A live t-SNE (or PCA / UMAP) map of a layer's features, one point per image.

    The PCA view shows at once; t-SNE then runs in a background thread and the points move
    as it iterates. Hovering a point shows its image at once (thumbnails are in the page),
    clicking selects it (and every view sharing the Selection follows), shift-drag selects a
    box of points (``selected``). The canvas fills its container's width (``aspect`` is its
    height / width); arrow keys on the focused canvas move to the nearest point in that
    direction and Enter selects it. Hiding a class in the legend (``hidden_classes``) drops its
    points from ``selected``.

    Parameters
    ----------
    model : nn.Module
    images
        The images: an N x C x H x W float tensor the model takes as is, a uint8 array
        N x H x W x C (normalized with ``mean``/``std``), a torch ``Dataset`` (items an
        image or ``(image, label)``) or ``DataLoader``, a list of PIL images or file paths, a
        folder with one subfolder per class, or an :class:`~cnnwidgets.core.images.ImageSet`.
        Images are read when needed, never all at once; labels and class names come from
        the data when it has them.
    labels, classes : optional
        True labels and class names (for a single-logit model, one name X reads as
        ``["not X", "X"]``).
    layer : str, optional
        Feature layer; default: the penultimate feature vector, the input of the classifier
        (:func:`~cnnwidgets.core.layers.feature_layer`, with its ``pool``).
    method : {"tsne", "pca", "umap"}
        :data:`~cnnwidgets.core.embedding.EmbeddingMethod`.
    selection : cnnwidgets.Selection, optional
    perplexity : float
    seed : int
    pool : {"flatten", "avg"}, optional
        How a conv layer's maps become a vector. Default: the default layer's pool, or
        ``"flatten"`` for a ``layer`` given.
    mean, std : optional
        Input normalization, for display.
    transform : callable, optional
        Applied to each item's image as it is read (e.g. resize and ``ToTensor``), for
        datasets, files and PIL images.
    output : int, str or callable, optional
        Which part of a structured model output (tuple, dict, named tuple) holds the class
        scores, for ``predicted`` (see :func:`~cnnwidgets.core.outputs.select_output`).
        Without it such a model still gets its map; the predictions are left out and the
        note above the view says to pass ``output=``.
    n_iter : int
        t-SNE iterations (early exaggeration included).

    Examples
    --------
    >>> from cnnwidgets import TSNEScatter, demo
    >>> d = demo.mnist("val")
    >>> ts = TSNEScatter(d.model, d.images[:500], d.labels[:500], d.classes)
    >>> ts.wait()
    True
    >>> ts.embedding.shape
    (500, 2)
    """

    _bundle = "tsne_scatter"
    _shared = ("index",)
    #: Exported per image by :meth:`save_html` (``images=``): the neighbours of each.
    _export_keys = ("_neighbors",)
    #: The map shows every image: an exported page names none unless images= were exported.
    _export_per_image = False
    #: Clicks (and Enter on the keyboard cursor), box selections, the colour menu, the legend
    #: and the number of neighbours shown (js/src/widgets/tsne_scatter.js).
    _page_writable = frozenset({"index", "selected", "color_by", "hidden_classes", "k"})
    #: Bounds of the settings: neighbours shown, perplexity, point size and canvas side (pixels).
    MAX_K = 64
    MAX_PERPLEXITY = 1000.0
    MAX_POINT_SIZE = 64.0
    #: Bounds of ``aspect`` (canvas height / width).
    ASPECT = (0.2, 2.0)

    # ---- the page's controls
    index = Int(-1).tag(sync=True)
    selected = t.List(Int()).tag(sync=True)
    color_by = Choice(ColorBy, "label").tag(sync=True)
    hidden_classes = t.List(Int()).tag(sync=True)
    k = Int(8).tag(sync=True)

    # ---- settings
    method = Choice(EmbeddingMethod, "tsne").tag(sync=True)
    layer = t.Unicode("").tag(sync=True)
    perplexity = Float(30.0).tag(sync=True)
    seed = Int(0).tag(sync=True)
    point_size = Float(3.0).tag(sync=True)
    #: Height / width of the canvas, which fills its container's width.
    aspect = Float(0.75).tag(sync=True)
    class_names = t.List(t.Unicode(), read_only=True).tag(sync=True)
    #: t-SNE iterations in all (early exaggeration included): the page's "iteration i of n".
    n_iter = Int(750, read_only=True).tag(sync=True)

    # ---- background work
    running = t.Bool(False).tag(sync=True)
    phase = Choice(Phase, "idle", read_only=True).tag(sync=True)
    iteration = Int(0).tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    progress = Float(-1.0).tag(sync=True)

    # ---- data for the page (ndarrays: js/src/lib/codecs.js decodeArray)
    #: float32 (N, 2) screen-independent positions; None until the feature pass is done.
    _positions = ArrayTrait()
    #: int16 (N,) true labels, -1 where there is none.
    _labels = ArrayTrait()
    #: int16 (N,) predicted classes; None without class scores (or before the feature pass).
    _predicted = ArrayTrait()
    #: uint8 (N, h, w, c) display thumbnails for hover (packed into canvas pages by the page).
    _thumbnails = ArrayTrait()
    _neighbors = t.Dict().tag(sync=True)

    #: At most this many position updates per second reach the page.
    MAX_UPDATES_PER_SECOND = 10

    def __init__(
        self,
        model: nn.Module,
        images: Any,
        labels: Sequence[int] | torch.Tensor | None = None,
        classes: Sequence[str] | None = None,
        *,
        layer: str | None = None,
        method: EmbeddingMethod = "tsne",
        selection: Any = None,
        perplexity: float = 30.0,
        seed: int = 0,
        pool: FeaturePool | None = None,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        output: OutputSelector = None,
        n_iter: int = 750,
        transform: Any = None,
    ) -> None:
        self._model = check_model(model)
        self._device = model_device(model)
        self._dtype = model_dtype(model)  # images go through the model in its dtype
        self._scores = Scores(model, check_output(output))
        #: Why the view shows no predictions (a structured output without ``output=``), or None.
        self._no_prediction: str | None = None
        self._images = ImageSet.of(images, check_labels(labels), classes, mean=mean, std=std, transform=transform)
        n = len(self._images)
        if n < 5:
            raise ValueError(f"a map needs at least 5 images, got {n}")
        TSNEScatter.method.validate(None, method)  # before the feature pass: names the choices
        if pool is not None and pool not in get_args(FeaturePool):
            raise ValueError(f"pool must be {' or '.join(map(repr, get_args(FeaturePool)))}, got {pool!r}")
        self._n_iter = bounded_int(n_iter, "n_iter", 1, 100_000, "t-SNE iterations; 750 by default")
        if selection is not None and not isinstance(selection, Selection):
            self._join(selection)  # raises the TypeError with its hint
        x1 = self._images.item(0).to(device=self._device, dtype=self._dtype)
        if layer is None:
            layer, default_pool = feature_layer(self._model, x1)  # the penultimate feature vector
            pool = pool or default_pool
        get_layer(self._model, layer)
        self._pool = pool or "flatten"
        self._read_head(x1)
        head = self._scores.head
        if head is not None:
            self._images.classes = class_names_for(head, self._images.classes)
            self._images.check_classes(head.n_classes)
        self._features: np.ndarray | None = None
        self._embedding: np.ndarray | None = None
        self._pred: np.ndarray | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_push = 0.0
        self._ready = False
        self._thumbs: np.ndarray | None = None  # all thumbnails, once the feature pass has read every image
        super().__init__()
        try:  # a failure closes the widget (its comm) and the thread, if started
            n_classes = None
            if self._images.classes is not None:
                names = list(self._images.classes)
            elif self._images.labels is not None:
                # labels are checked to be in 0..MAX_LABEL: at most that many short names
                n_classes = int(self._images.labels.max()) + 1
                names = [str(i) for i in range(n_classes)]
            else:
                names = []
            self.set_trait("class_names", names)
            self.layer = layer
            self.note("head", self._scores.note)
            if self._no_prediction is not None:
                self.note("output", f"No predicted classes are shown: {self._no_prediction}")
            self.method = method
            self.perplexity = bounded_float(perplexity, "perplexity", 0.0, self.MAX_PERPLEXITY, above=True)
            self.seed = bounded_int(seed, "seed", 0, 2**32 - 1)
            self.set_trait("n_iter", self._n_iter)
            labels_arr = self._images.labels if self._images.labels is not None else np.full(n, -1)
            self._labels = labels_arr.astype(np.int16)
            self._ready = True
            self._join(selection)
            self.start()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ public API
    @property
    def features(self) -> np.ndarray:
        """The feature vectors, float32 (N, D) (waits for the feature pass)."""
        self._wait_for(lambda: self._features is not None)
        assert self._features is not None
        return self._features

    @property
    def embedding(self) -> np.ndarray:
        """The current 2-D positions, float32 (N, 2): PCA first, then t-SNE as it goes."""
        self._wait_for(lambda: self._embedding is not None)
        assert self._embedding is not None
        return self._embedding.copy()

    @property
    def predicted(self) -> np.ndarray:
        """The model's predicted class per image, int64 (N,): the top class of
        :class:`~cnnwidgets.core.runner.Scores`' probabilities (a final softmax applied once;
        for a single logit, class 1 when its sigmoid is above 0.5; for segmentation scores, the
        class covering the most pixels).

        Raises
        ------
        ValueError
            When the model's output holds no class scores the view can read (a tuple or dict
            output without ``output=``; the message says what to pass).
        """
        if self._no_prediction is not None:
            raise ValueError(self._no_prediction)
        self._wait_for(lambda: self._pred is not None)
        assert self._pred is not None
        return self._pred

    def _wait_for(self, cond, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self._done.is_set() and not cond():
                raise RuntimeError(f"the embedding did not finish: {self.status}")
            if time.monotonic() > deadline:
                raise TimeoutError("the embedding is still running")
            time.sleep(0.01)

    def wait(self, timeout: float | None = 600.0) -> bool:
        """Block until the embedding is final; True unless it timed out."""
        return self._done.wait(timeout)

    def start(self) -> None:
        """(Re)compute features and the embedding in the background."""
        if self._closed:
            raise RuntimeError("this TSNEScatter is closed; create a new one")
        self.stop()
        self._stop.clear()
        self._done.clear()
        self.iteration = 0
        self.running = True
        self._thread = start_thread(self._run, "cnnwidgets-tsne", self._stop.set)

    # ------------------------------------------------------------------ events from the page
    # (BaseWidget._dispatch_message routes the types of messages.json to these; both answer at
    # once: the run sees the stop flag between steps)
    def _on_stop(self, _content) -> None:
        self._stop.set()

    def _on_start(self, _content) -> None:
        if self.running:
            self.last_error = "the map is still being computed: stop it first"
            return
        self.start()

    def stop(self) -> None:
        """Stop the background computation (the positions reached so far stay)."""
        if not hasattr(self, "_stop"):
            return  # a constructor that raised early
        self._stop.set()
        th = self._thread
        if th is not None and th.is_alive() and th is not threading.current_thread():
            th.join(timeout=30)

    #: Let go by close(): the model, the images, their thumbnails and features.
    _released = ("_model", "_images", "_thumbs", "_features")

    def close(self) -> None:
        """Stop the background computation, leave the Selection and close the widget; the
        model and the images are let go, so the view cannot be used after this."""
        self._closed = True
        self.stop()
        self._leave()
        super().close()
        if getattr(self, "_thumbnails", None) is not None:
            self._thumbnails = None  # the page's copy of the thumbnails goes with them
    def neighbors(self, index: int, k: int = 8, space: NeighborSpace = "feature") -> np.ndarray:
        """The ``k`` images nearest to image ``index`` in feature or pixel space
        (:data:`NeighborSpace`), int64 (k,), nearest first."""
        index = self._images.check_index(index)
        if space == "feature":
            return neighbors(self.features, index, k)
        if space == "pixel":
            mem = self._images.in_memory  # the images themselves when they are in memory, else thumbnails
            if mem is not None:
                return pixel_neighbors(mem.reshape(len(self._images), -1).numpy(), index, k)
            self._wait_for(lambda: self._thumbs is not None)
            return pixel_neighbors(self._thumbs.reshape(len(self._images), -1), index, k)
        raise ValueError(f"space must be {' or '.join(map(repr, get_args(NeighborSpace)))}, got {space!r}")

    def mosaic(self, grid: int | None = None) -> np.ndarray:
        """All images merged into one picture by their 2-D position, uint8 (G*h, G*w, C)."""
        if grid is not None:  # G x G thumbnails: bounded, or one call could allocate gigabytes
            limit = max(256, int(np.ceil(np.sqrt(len(self._images)))))
            grid = bounded_int(grid, "grid", 1, limit, "cells per side of the mosaic")
        pos = self.embedding  # waits for the feature pass, which makes the thumbnails
        assert self._thumbs is not None
        return mosaic(self._thumbs, pos, grid)

    # ------------------------------------------------------------------ validation
    @t.validate("index")
    @checked
    def _v_index(self, proposal):
        v = proposal["value"]
        return v if v == -1 else self._images.check_index(v)

    @t.validate("selected")
    @checked
    def _v_selected(self, proposal):
        n = len(self._images)
        picked = dict.fromkeys(int(i) for i in proposal["value"] if 0 <= int(i) < n)  # each once: at most n
        if self.hidden_classes:  # points of a class hidden in the legend are not selected
            hidden, group = set(self.hidden_classes), self._legend_classes()
            picked = {i: None for i in picked if int(group[i]) not in hidden}
        return list(picked)

    @t.validate("hidden_classes")
    @checked
    def _v_hidden(self, proposal):
        bad = [c for c in proposal["value"] if not 0 <= c <= MAX_LABEL]
        if bad:
            raise ValueError(f"hidden_classes must be class indices in 0..{MAX_LABEL}, got {bad[:5]}")
        return list(dict.fromkeys(proposal["value"]))

    @t.validate("perplexity")
    @checked
    def _v_perplexity(self, proposal):
        return float_in(proposal, 0.0, self.MAX_PERPLEXITY, "typical values are 5 to 50", above=True)

    @t.validate("k")
    @checked
    def _v_k(self, proposal):
        return int_in(proposal, 1, self.MAX_K, "neighbours shown for the clicked point")

    @t.validate("seed")
    @checked
    def _v_seed(self, proposal):
        return int_in(proposal, 0, 2**32 - 1)

    @t.validate("point_size")
    @checked
    def _v_point_size(self, proposal):
        return float_in(proposal, 0.0, self.MAX_POINT_SIZE, "the side of a point in screen pixels", above=True)

    @t.validate("aspect")
    @checked
    def _v_aspect(self, proposal):
        return float_in(proposal, *self.ASPECT, "the canvas height / width")

    def _legend_classes(self) -> np.ndarray:
        """The class of each point that the legend shows and hides: the predicted class when
        colouring by it, else the true label (-1: none), int (N,)."""
        if self.color_by == "predicted":
            return self._pred if self._pred is not None else np.full(len(self._images), -1)
        labels = self._images.labels
        return labels if labels is not None else np.full(len(self._images), -1)

    # ------------------------------------------------------------------ events
    @t.observe("hidden_classes", "color_by")
    def _on_hidden(self, change):
        if self._ready and self.selected:
            self.selected = list(self.selected)  # the validator drops the points now hidden

    def _cannot_show(self, name: str, value: Any) -> str:
        """An image this map does not hold, in words (SelectionMixin shows it in
        ``selection_note``)."""
        n = len(self._images)
        if name == "index" and isinstance(value, int) and not -1 <= value < n:
            return (f"The shared selection is image {value}, which is not in this map (images 0..{n - 1}); "
                    + (f"still showing image {self.index}." if self.index >= 0 else "no image selected here."))
        return ""

    @t.observe("index", "k")
    def _on_index(self, change):
        if not self._ready:
            return
        i = self.index
        if i < 0 or self._features is None:
            self._neighbors = {}
            return
        self._neighbors = {"index": i, "feature": [int(v) for v in self.neighbors(i, self.k, "feature")],
                           "pixel": [int(v) for v in self.neighbors(i, self.k, "pixel")]}

    # ------------------------------------------------------------------ background work
    def _push(self, positions: np.ndarray, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_push < 1.0 / self.MAX_UPDATES_PER_SECOND:
            return
        self._last_push = now
        self._positions = np.array(positions, dtype=np.float32)  # a copy: t-SNE goes on moving its own

    def _run(self) -> None:
        notes: list[str] = []  # said at the end of the status line
        phase = "failed"  # what the finally block reports unless the work gets further
        try:
            n = len(self._images)
            self.report_failure(None)  # a new run: an earlier failure no longer holds
            self.set_trait("phase", "features")
            self.status = f"features of {self.layer} for {n} images ..."
            self.progress = 0.0

            def progress(done, total):
                self.progress = 0.9 * done / max(1, total)

            feats, pred = self._features_and_predictions(progress)
            self._pred = pred
            self._features = check_features(feats)
            if pred is not None:
                self._predicted = pred.astype(np.int16)
            if self._no_prediction is not None:
                notes.append("no predicted classes (see the note above)")
            self.progress = -1.0
            self.set_trait("phase", "embedding")
            pos = pca_2d(self._features, seed=self.seed)
            self._embedding = pos
            self._push(pos, force=True)
            if self.index >= 0:
                self._on_index(None)
            if self.method == "pca":
                self.status = "; ".join([f"PCA of {self._features.shape[1]}-d features of {self.layer}", *notes])
                phase = "done"
                return
            if self._stop.is_set():  # before the long steps that cannot stop at once
                raise Stopped(n, n)
            if self.method == "umap":
                self.status = "UMAP ..."
                pos = umap_2d(self._features, seed=self.seed)
                self._embedding = pos
                self._push(pos, force=True)
                self.status = "; ".join([f"UMAP of {self._features.shape[1]}-d features of {self.layer}", *notes])
                phase = "done"
                return
            self.status = "t-SNE ..."

            def step(iteration, positions):
                self._embedding = positions
                self.iteration = int(iteration)
                self._push(positions)
                return self._stop.is_set()

            # lower the perplexity ourselves (tsne would warn, and warnings caught on this
            # thread would swallow the user's own)
            perplexity = effective_perplexity(len(self._features), self.perplexity)
            if perplexity < self.perplexity:
                notes.insert(0, f"perplexity lowered from {self.perplexity:g} to {perplexity:g} for "
                                f"{len(self._features)} points")
            pos = tsne(self._features, perplexity=perplexity, seed=self.seed, n_iter=self._n_iter, callback=step,
                       callback_every=10, initialization="pca")
            self._embedding = pos
            self._push(pos, force=True)
            stopped = " (stopped)" if self._stop.is_set() else ""
            phase = "stopped" if stopped else "done"
            self.status = f"t-SNE of {self._features.shape[1]}-d features of {self.layer}{stopped} {'; '.join(notes)}".strip()
        except Stopped:
            phase = "stopped"
            self.status = "stopped"
        except Exception as exc:  # noqa: BLE001 - reported in the view, never a kernel traceback
            self.status = f"error: {type(exc).__name__}: {exc}"
            self.report_failure(exc)  # the view's error line (and last_error)
        finally:
            self.progress = -1.0
            if not self._closed:
                self.set_trait("phase", phase)
            self.running = False
            self._done.set()

    def _read_head(self, x: torch.Tensor) -> None:
        """Run the model once on ``x`` to learn how its output reads as classes
        (``_scores.head``); a structured output without ``output=`` sets ``_no_prediction``."""
        with using_model(self._model) as run, logits_only(run), torch.no_grad(), forward_errors(x, run):
            out = run(x)
        try:
            self._scores.select(out)
        except ValueError as exc:  # a structured output without output=, or no score shape
            self._no_prediction = str(exc)

    #: Images per forward pass of the feature pass.
    BATCH = 256

    def _features_and_predictions(self, progress) -> tuple[np.ndarray, np.ndarray | None]:
        """The layer's pooled features (float32 N x D), the predicted classes (int64 N, or None
        without class scores) and the hover thumbnails, from one streamed pass over the images
        (:func:`~cnnwidgets.core.passes.stream_pass`: cached per model weights, layer and data,
        resumed after a Stop).

        Each batch runs under :func:`~cnnwidgets.core.runner.logits_only` (the probabilities
        apply a final softmax once); without predictions to make it stops after the layer.
        Images are cast to the model's dtype; features are pooled in float32. Thumbnails reach
        the page while the pass goes (at 1,024, 2,048, 4,096, ... images and at the end).
        """
        n = len(self._images)
        layer, pool = self.layer, self._pool
        want_pred = self._no_prediction is None
        x1 = self._images.item(0).to(device=self._device, dtype=self._dtype)
        with using_model(self._model) as run, torch.no_grad(), LayerTap(run, layer, check=require_tensor) as tap:
            d = int(_pool_features(tap.run(x1)[1][layer].float(), pool, 1, layer).shape[1])
        f = thumbnail_factor(n, self._images.shape)
        th = _thumbnails_of(self._images.item(0), f, self._images.mean, self._images.std).shape[1:]
        outputs = {"features": ((d,), np.float32), "thumbs": (tuple(th), np.uint8)}
        if want_pred:
            outputs["pred"] = ((), np.int64)
        mean, std = self._images.mean, self._images.std
        sent = [0, 1024]  # images whose thumbnails the page has; the next step

        def compute(xb: torch.Tensor, batch) -> dict[str, Any]:
            b = int(xb.shape[0])
            # the model is held (a model without a private view) for one batch at a time
            with (using_model(self._model) as run, logits_only(run), torch.no_grad(),
                  LayerTap(run, layer, need_output=want_pred, check=require_tensor) as tap):
                out, acts = tap.run(xb)
                rows = {"features": _pool_features(acts[layer].float(), pool, b, layer),
                        "thumbs": _thumbnails_of(batch.x, f, mean, std)}
                if want_pred:
                    rows["pred"] = self._scores.probabilities(out).argmax(dim=1)
            return rows

        res_box: list[Any] = []

        def on_progress(done: int, total: int) -> None:
            progress(done, total)
            if res_box and (done >= sent[1] or done >= total) and done > sent[0]:
                sent[0], sent[1] = done, max(sent[1] * 2, done + 1)
                self._thumbnails = np.array(res_box[0].arrays["thumbs"][:done])

        res = stream_pass(self._images, ("tsne", layer, pool, want_pred, f), outputs, compute, model=self._model,
                          device=self._device, dtype=self._dtype, batch_size=self.BATCH,
                          progress=on_progress, stop=self._stop, on_open=res_box.append)
        self.note("data", self._images.broken_note())
        self._thumbs = np.array(res.arrays["thumbs"])
        if sent[0] < n:
            self._thumbnails = self._thumbs
        labels = self._images.labels
        if labels is not None and (np.asarray(self._labels) < 0).all():
            self._labels = labels.astype(np.int16)  # learned from the data's items on the way
            if not self.class_names:
                self.set_trait("class_names", [str(i) for i in range(int(labels.max()) + 1)])
        pred = np.array(res.arrays["pred"]) if want_pred else None
        return np.array(res.arrays["features"]), pred

    def __repr__(self) -> str:
        if self._closed:
            return "TSNEScatter(closed)"
        return f"TSNEScatter(n_images={len(self._images)}, layer={self.layer!r}, method={self.method!r})"
