"""Feature embeddings: hidden-layer features of a data set, 2-D maps of them, neighbours, mosaics.

The pipeline behind an embedding view: :func:`extract_features` runs the images through the
model up to one layer, :func:`embed` maps the (N, D) features to (N, 2) positions with t-SNE
(openTSNE), PCA or UMAP, :func:`neighbors` finds the points closest to one image in feature
space (compare :func:`pixel_neighbors` in pixel space) and :func:`mosaic` lays the images out
on a grid by their positions.

Everything here is plain torch/numpy (openTSNE and umap-learn are imported when used); no
widget imports.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ._validate import as_int
from .activations import _positive_int
from .images import ImageSet
from .passes import Stopped, stream_pass
from .layers import leaf_layers
from .model import get_layer, model_device, model_dtype, named_layers
from .runner import LayerTap, require_tensor, using_model

__all__ = [
    "EMBEDDING_METHODS",
    "EmbeddingMethod",
    "FeaturePool",
    "Stopped",
    "TsneGradient",
    "check_features",
    "default_feature_layer",
    "effective_perplexity",
    "embed",
    "extract_features",
    "mosaic",
    "mosaic_cells",
    "neighbors",
    "pca_2d",
    "pixel_neighbors",
    "tsne",
    "umap_2d",
]

EmbeddingMethod = Literal["tsne", "pca", "umap"]
FeaturePool = Literal["flatten", "avg"]
TsneGradient = Literal["auto", "fft", "bh"]

#: Valid ``method`` values of :func:`embed`.
EMBEDDING_METHODS: tuple[str, ...] = ("tsne", "pca", "umap")

#: Feature dimension up to which :func:`pca_2d` diagonalizes the exact D x D covariance
#: matrix; above it, a seeded randomized SVD is used.
_EXACT_PCA_DIM = 512

#: Elements per block when distances are computed blockwise (bounds the temporary memory).
_BLOCK_ELEMENTS = 1 << 22


# ---------------------------------------------------------------- features
def default_feature_layer(model: nn.Module, example: Any = None) -> str:
    """The last hidden layer before the classifier: the layer whose output feeds the last Linear.

    Rule, with an ``example`` input (preferred, it follows the real execution order): run
    ``model`` once on it, find the last call of an ``nn.Linear``; among the layers that
    finished before that call began, take the last one whose output *is* the Linear's input
    tensor, or, when none is (the input came from a functional op such as ``torch.flatten``),
    simply the last one to finish. Without ``example``: the last leaf module registered
    before the last registered ``nn.Linear`` (``model.named_modules()`` order).

    Parameters
    ----------
    model : nn.Module
    example : tensor or array, optional
        An input the model takes (anything :func:`as_batch` takes, e.g. one image
        1 x C x H x W); only used to record the execution order.

    Returns
    -------
    str
        Qualified layer name, e.g. ``"classifier.3"`` for the demo's MnistCNN (the 70-d
        Dropout output feeding ``classifier.4``; in eval mode it equals the ReLU output
        ``classifier.2``) or ``"avgpool"`` for a torchvision ResNet (its ``fc`` takes
        ``torch.flatten(avgpool(x), 1)``).

    Raises
    ------
    ValueError
        If the model has no ``nn.Linear`` (or none ran), or nothing runs before it.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    >>> default_feature_layer(net)
    '2'
    >>> default_feature_layer(net, torch.zeros(1, 1, 8, 8))
    '2'
    """
    layers = named_layers(model)
    hint = "Hint: pass the layer explicitly, e.g. extract_features(model, images, layer='...')."
    if not any(isinstance(m, nn.Linear) for m in layers.values()):
        raise ValueError(f"the model has no nn.Linear layer, so it has no default feature layer. {hint}")
    if example is None:
        leaves = list(leaf_layers(model).items())
        last = max((i for i, (_, m) in enumerate(leaves) if isinstance(m, nn.Linear)), default=-1)
        if last <= 0:
            raise ValueError(f"no layer is registered before the model's last nn.Linear. {hint}")
        return leaves[last - 1][0]

    from .layers import _record_forward

    rec = _record_forward(model, example)  # one pass, every layer's calls (core.layers)
    linears = [c for c in rec.calls if isinstance(c.module, nn.Linear)]
    if not linears:
        raise ValueError(f"no nn.Linear layer ran during the forward pass. {hint}")
    last = linears[-1]
    linear_input = last.args[0] if last.args else None
    ended = [c for c in rec.ended if c.end < last.start]
    if not ended:
        raise ValueError(f"no layer runs before the model's last nn.Linear ({last.name!r}). {hint}")
    for c in reversed(ended):
        if c.output is linear_input:
            return c.name
    return ended[-1].name


def _pool_features(out: torch.Tensor, pool: str, n: int, layer: str) -> torch.Tensor:
    """Layer output N x ... as N x D: flattened, or averaged over the trailing (spatial) dims."""
    if out.dim() == 0 or out.shape[0] != n:
        raise ValueError(
            f"layer {layer!r} output has shape {tuple(out.shape)}, expected the batch ({n}) first"
        )
    if pool == "avg" and out.dim() >= 3:
        return out.flatten(2).mean(dim=2)
    return out.reshape(n, -1)


def extract_features(
    model: nn.Module,
    images: Any,
    layer: str | None = None,
    *,
    pool: FeaturePool = "flatten",
    batch_size: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    cache: bool = True,
) -> np.ndarray:
    """The outputs of one layer for a whole data set, one row per image.

    The images are run in batches; each forward pass stops right after ``layer`` (a forward
    hook raises a private exception), so later layers cost nothing.

    Parameters
    ----------
    model : nn.Module
    images : torch.Tensor or numpy.ndarray
        Float N x C x H x W (normalized for the model) or anything :func:`as_batch` takes, e.g.
        uint8 N x H x W x C with ``mean``/``std``. 4-D inputs are converted one batch at a time.
    layer : str, optional
        Qualified layer name; its first call in the forward pass is used. Default:
        :func:`default_feature_layer` (found with the first image), the input of the last
        ``nn.Linear``.
    pool : {"flatten", "avg"}
        For outputs with spatial dims (N x K x h x w): ``"flatten"`` keeps every value
        (D = K*h*w), ``"avg"`` averages each channel over space (global average pooling,
        D = K). 2-D outputs (N x D) are taken as they are either way.
    batch_size : int
        Images per forward pass.
    progress : callable, optional
        ``progress(done, total)`` after every batch (images done so far, N).
    should_stop : callable, optional
        ``should_stop()`` is checked before every batch; when it returns True,
        :class:`Stopped` is raised.
    mean, std : optional
        Normalization for uint8 images, passed to :func:`as_batch`.

    Returns
    -------
    numpy.ndarray
        float32, (N, D).

    Raises
    ------
    ValueError
        Unknown layer, unknown ``pool``, a layer output that is not a tensor (or not batch
        first), a layer that did not run, ``batch_size`` below 1.
    Stopped
        When ``should_stop()`` returned True.

    Notes
    -----
    Runs under ``torch.no_grad()`` on a private view of the model
    (:func:`~cnnwidgets.core.runner.private_model`), on the model's device.
    ``pool="flatten"`` on an early layer is large: N*K*h*w*4 bytes.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    >>> extract_features(net, torch.randn(10, 1, 8, 8)).shape
    (10, 144)
    >>> extract_features(net, torch.randn(10, 1, 8, 8), "1", pool="avg").shape
    (10, 4)
    """
    if pool not in ("flatten", "avg"):
        raise ValueError(f"pool must be 'flatten' or 'avg', got {pool!r}")
    batch_size = _positive_int(batch_size, "batch_size") if batch_size is not None else None
    if layer is not None:
        get_layer(model, layer)  # raises with the list of valid names
    images = ImageSet.of(images, mean=mean, std=std)
    device, dtype = model_device(model), model_dtype(model)
    first = images.item(0).to(device, dtype)
    if layer is None:
        layer = default_feature_layer(model, first)
    with using_model(model) as run, torch.no_grad(), LayerTap(run, layer, check=require_tensor) as tap:
        d = int(_pool_features(tap.run(first)[1][layer], pool, 1, layer).shape[1])

    def compute(x: torch.Tensor, _b) -> dict[str, torch.Tensor]:
        # the model is held (a model without a private view) for one batch at a time
        with using_model(model) as run, torch.no_grad(), LayerTap(run, layer, check=require_tensor) as tap:
            out = tap.run(x)[1][layer]
            return {"features": _pool_features(out, pool, int(x.shape[0]), layer).float()}

    res = stream_pass(images, ("features", layer, pool), {"features": ((d,), np.float32)}, compute, model=model,
                      device=device, dtype=dtype, batch_size=batch_size, progress=progress, stop=should_stop,
                      cache=cache)
    return np.asarray(res.arrays["features"])


def check_features(features: Any) -> np.ndarray:
    """``features`` as a float32 (N, D) array with finite values.

    Parameters
    ----------
    features : array-like or torch.Tensor
        (N, D).

    Returns
    -------
    numpy.ndarray
        float32, (N, D) (the input itself when it already is one).

    Raises
    ------
    ValueError
        Not 2-D, empty, or with NaN/Inf values (the message counts the values and rows).

    Examples
    --------
    >>> check_features([[0.0, 1.0], [2.0, 3.0]]).dtype
    dtype('float32')
    """
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    x = np.asarray(features)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"features must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"features are empty, shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        bad_rows = np.flatnonzero(bad.any(axis=1))
        shown = ", ".join(str(i) for i in bad_rows[:10]) + (", ..." if len(bad_rows) > 10 else "")
        raise ValueError(
            f"features contain {int(bad.sum())} NaN/Inf values in {len(bad_rows)} of {x.shape[0]} rows "
            f"(rows {shown})"
        )
    return x


# ---------------------------------------------------------------- 2-D embeddings
def _flip_signs(components: np.ndarray) -> np.ndarray:
    """Make the largest-magnitude entry of each component (column) positive."""
    idx = np.argmax(np.abs(components), axis=0)
    signs = np.sign(components[idx, np.arange(components.shape[1])])
    signs[signs == 0] = 1
    return components * signs


def _top_components(x: np.ndarray, center: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The top ``k`` principal directions (D, k), float64, of ``x - center``."""
    n, d = x.shape
    if d <= _EXACT_PCA_DIM:
        xc = x.astype(np.float64) - center
        _, v = np.linalg.eigh(xc.T @ xc)
        return v[:, ::-1][:, :k]
    # randomized SVD (Halko et al. 2011) of the implicitly centred matrix, with power iterations
    rng = np.random.default_rng(seed)
    p = min(k + 8, d, n)
    c32 = center.astype(np.float32)

    def mult(m: np.ndarray) -> np.ndarray:  # (x - center) @ m, m (D, p)
        m = m.astype(np.float32)
        return (x @ m).astype(np.float64) - c32 @ m

    def rmult(m: np.ndarray) -> np.ndarray:  # (x - center).T @ m, m (N, p)
        m32 = m.astype(np.float32)
        return (x.T @ m32).astype(np.float64) - np.outer(center, m.sum(axis=0))

    q, _ = np.linalg.qr(mult(rng.standard_normal((d, p))))
    for _ in range(7):
        q, _ = np.linalg.qr(rmult(q))
        q, _ = np.linalg.qr(mult(q))
    b = rmult(q).T  # (p, D)
    _, _, vt = np.linalg.svd(b, full_matrices=False)
    return vt[:k].T


def pca_2d(features: Any, seed: int = 0) -> np.ndarray:
    """Project features onto their first two principal components.

    Parameters
    ----------
    features : array-like
        (N, D).
    seed : int
        Seed of the randomized SVD used when D > 512 (below, the exact D x D covariance is
        diagonalized and ``seed`` has no effect).

    Returns
    -------
    numpy.ndarray
        float32, (N, 2): the centred features times the two leading principal directions.
        Each direction's largest-magnitude entry is positive (a fixed sign). With D = 1 the
        second column is 0.

    Examples
    --------
    >>> pca_2d([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [6.0, 1.0]]).round(2)
    array([[-3.01,  0.1 ],
           [-2.02, -0.02],
           [ 1.96, -0.48],
           [ 3.07,  0.4 ]], dtype=float32)
    """
    x = check_features(features)
    n, d = x.shape
    center = x.mean(axis=0, dtype=np.float64)
    comps = _flip_signs(_top_components(x, center, min(2, d), int(seed)))
    out = np.zeros((n, 2), dtype=np.float32)
    out[:, : comps.shape[1]] = (x @ comps.astype(np.float32)) - (center @ comps).astype(np.float32)
    return out


def effective_perplexity(n_points: int, perplexity: float) -> float:
    """The perplexity :func:`tsne` uses for ``n_points`` points: at most ``(N - 1) / 3``.

    openTSNE needs ``3 * perplexity <= N - 1`` (each point's 3 * perplexity nearest
    neighbours). A caller that wants to report the change without catching the
    ``UserWarning`` of :func:`tsne` (``warnings.catch_warnings`` is not thread-safe) can pass
    the value this returns, for which :func:`tsne` does not warn.

    Examples
    --------
    >>> effective_perplexity(1000, 30.0), effective_perplexity(31, 30.0)
    (30.0, 10.0)
    """
    perplexity = float(perplexity)
    return (n_points - 1) / 3 if 3 * perplexity > n_points - 1 else perplexity


def tsne(
    features: Any,
    *,
    perplexity: float = 30.0,
    seed: int = 0,
    n_iter: int = 750,
    callback: Callable[[int, np.ndarray], Any] | None = None,
    callback_every: int = 25,
    initialization: Literal["pca", "spectral", "random"] | np.ndarray = "pca",
    n_jobs: int = 1,
    negative_gradient_method: TsneGradient = "auto",
) -> np.ndarray:
    """t-SNE map of the features with openTSNE (FFT-accelerated gradients for large N).

    Parameters
    ----------
    features : array-like
        (N, D), N >= 5.
    perplexity : float
        Effective number of neighbours. openTSNE needs ``3 * perplexity <= N - 1``; a larger
        value is lowered to ``(N - 1) / 3`` with a ``UserWarning``.
    seed : int
        Random state (nearest-neighbour index, initialization). Same seed, same data and
        ``n_jobs=1`` give the same result.
    n_iter : int
        Total gradient-descent iterations, the early-exaggeration phase (exaggeration 12,
        ``min(250, n_iter // 3)`` iterations) included, as in scikit-learn; 750 = 250 + 500.
    callback : callable, optional
        ``callback(iteration, positions)`` every ``callback_every`` iterations of each phase,
        with the iteration number counted from the start (1-based, increasing) and a float32
        (N, 2) copy of the current positions, so a view can animate. Return True to stop
        early: ``tsne`` then returns the positions reached so far. An exception raised by
        the callback propagates (e.g. to abort without a result).
    callback_every : int
        Iterations between callback calls.
    initialization : {"pca", "spectral", "random"} or numpy.ndarray
        openTSNE initialization, or initial positions (N, 2) (with small std, ~1e-4).
    n_jobs : int
        Threads for openTSNE (-1: all cores).
    negative_gradient_method : {"auto", "fft", "bh"}
        Repulsive-force approximation: ``"fft"`` (FFT-accelerated interpolation, linear in N),
        ``"bh"`` (Barnes-Hut, N log N, faster for small N: ~1 s against ~15 s for 300 points
        in three far-apart clusters, whose wide map makes the FFT grid large). ``"auto"``
        follows openTSNE: Barnes-Hut below 10,000 points, FFT from 10,000.

    Returns
    -------
    numpy.ndarray
        float32, (N, 2), centred on 0.

    Raises
    ------
    ValueError
        Fewer than 5 points, NaN/Inf features, perplexity not positive.
    ImportError
        If openTSNE is not installed.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0, 1, (50, 10)), rng.normal(20, 1, (50, 10))])
    >>> tsne(x, perplexity=10, n_iter=300).shape
    (100, 2)
    """
    x = check_features(features)
    n = x.shape[0]
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {n}")
    perplexity = float(perplexity)
    if not math.isfinite(perplexity) or perplexity <= 0:
        raise ValueError(f"perplexity must be a positive number, got {perplexity!r}")
    n_iter = _positive_int(n_iter, "n_iter")
    if negative_gradient_method not in ("auto", "fft", "bh"):
        raise ValueError(
            f"negative_gradient_method must be 'auto', 'fft' or 'bh', got {negative_gradient_method!r}"
        )
    callback_every = _positive_int(callback_every, "callback_every")
    lowered = effective_perplexity(n, perplexity)
    if lowered != perplexity:
        warnings.warn(
            f"perplexity {perplexity:g} is too large for {n} points (t-SNE needs 3 * perplexity <= N - 1); "
            f"using {lowered:.4g}",
            UserWarning,
            stacklevel=2,
        )
        perplexity = lowered
    if isinstance(initialization, str):
        if initialization not in ("pca", "spectral", "random"):
            raise ValueError(
                f"initialization must be 'pca', 'spectral', 'random' or an (N, 2) array, got {initialization!r}"
            )
        init: str | np.ndarray = initialization
    else:
        init = np.array(initialization, dtype=np.float64)
        if init.shape != (n, 2):
            raise ValueError(f"initialization array must be (N, 2) = ({n}, 2), got shape {init.shape}")
    try:
        from openTSNE import TSNE
        from openTSNE.tsne import OptimizationInterrupt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("tsne needs the openTSNE package: pip install openTSNE") from e

    early = min(250, n_iter // 3)
    offset = 0

    def on_step(iteration: int, _error: float, embedding: np.ndarray) -> bool:
        assert callback is not None
        return bool(callback(offset + iteration, np.array(embedding, dtype=np.float32)))

    t = TSNE(
        n_components=2,
        perplexity=perplexity,
        early_exaggeration_iter=early,
        n_iter=n_iter - early,
        initialization=init,
        negative_gradient_method=("bh" if n < 10_000 else "fft") if negative_gradient_method == "auto"
        else negative_gradient_method,
        n_jobs=n_jobs,
        random_state=int(seed),
        callbacks=on_step if callback is not None else None,
        callbacks_every_iters=callback_every,
        verbose=False,
    )
    # the two phases of TSNE.fit, run here so the callback sees one iteration count
    emb = t.prepare_initial(x)
    try:
        if early:
            emb.optimize(n_iter=early, exaggeration=t.early_exaggeration, momentum=t.initial_momentum,
                         inplace=True, propagate_exception=True)
        offset = early
        emb.optimize(n_iter=n_iter - early, exaggeration=t.exaggeration, momentum=t.final_momentum,
                     inplace=True, propagate_exception=True)
    except OptimizationInterrupt as stop:
        emb = stop.final_embedding
    return np.array(emb, dtype=np.float32)


def umap_2d(features: Any, seed: int = 0, **kw: Any) -> np.ndarray:
    """UMAP map of the features (needs the optional ``umap-learn`` package).

    Parameters
    ----------
    features : array-like
        (N, D).
    seed : int
        ``random_state`` of ``umap.UMAP``.
    **kw
        Further ``umap.UMAP`` arguments, e.g. ``n_neighbors``, ``min_dist``.

    Returns
    -------
    numpy.ndarray
        float32, (N, 2).

    Raises
    ------
    ImportError
        If umap-learn is not installed (with the pip command).
    """
    try:
        import umap
    except ImportError as e:
        raise ImportError("umap_2d needs the umap-learn package: pip install umap-learn") from e
    x = check_features(features)
    reducer = umap.UMAP(n_components=2, random_state=int(seed), **kw)
    return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def embed(features: Any, method: EmbeddingMethod = "tsne", **kw: Any) -> np.ndarray:
    """2-D map of the features by ``method``.

    Parameters
    ----------
    features : array-like
        (N, D).
    method : {"tsne", "pca", "umap"}
        :func:`tsne`, :func:`pca_2d` or :func:`umap_2d`.
    **kw
        Passed to that function (e.g. ``perplexity``, ``seed``, ``callback``).

    Returns
    -------
    numpy.ndarray
        float32, (N, 2).

    Examples
    --------
    >>> embed(np.eye(3), "pca").shape
    (3, 2)
    """
    functions: dict[str, Callable[..., np.ndarray]] = {"tsne": tsne, "pca": pca_2d, "umap": umap_2d}
    if method not in functions:
        raise ValueError(
            f"method must be one of {', '.join(repr(m) for m in EMBEDDING_METHODS)}, got {method!r}"
        )
    return functions[method](features, **kw)


# ---------------------------------------------------------------- neighbours
def neighbors(features: Any, index: int, k: int = 8) -> np.ndarray:
    """The ``k`` points nearest to point ``index`` (euclidean), itself excluded.

    Parameters
    ----------
    features : array-like
        (N, D).
    index : int
        0 <= index < N.
    k : int
        How many (at least 1; more than N - 1 gives all N - 1 others).

    Returns
    -------
    numpy.ndarray
        int64, (min(k, N - 1),): nearest first, equal distances in index order.

    Examples
    --------
    >>> neighbors([[0.0], [3.0], [1.0], [-1.0]], 0, k=2)
    array([2, 3])
    """
    x = check_features(features)
    n = x.shape[0]
    index = as_int(index, "index")
    if not 0 <= index < n:
        raise ValueError(f"index must be in 0..{n - 1}, got {index}")
    k = _positive_int(k, "k")
    query = x[index].astype(np.float64)
    d2 = np.empty(n, dtype=np.float64)
    step = max(1, _BLOCK_ELEMENTS // x.shape[1])
    for s in range(0, n, step):
        diff = x[s : s + step].astype(np.float64) - query
        d2[s : s + step] = np.einsum("ij,ij->i", diff, diff)
    d2[index] = np.inf
    order = np.argsort(d2, kind="stable")
    return order[: min(k, n - 1)].astype(np.int64)


def pixel_neighbors(images: Any, index: int, k: int = 8) -> np.ndarray:
    """The ``k`` images nearest to image ``index`` in pixel space, itself excluded.

    Parameters
    ----------
    images : array-like or torch.Tensor
        (N, ...) any image layout (uint8 N x H x W x C or float N x C x H x W); each image is
        flattened to float values, so uint8 differences do not wrap around.
    index, k
        As in :func:`neighbors`.

    Returns
    -------
    numpy.ndarray
        int64, (min(k, N - 1),): nearest first, equal distances in index order.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    arr = np.asarray(images)
    if arr.ndim < 2:
        raise ValueError(f"images must be (N, ...) with one image per row, got shape {arr.shape}")
    return neighbors(arr.reshape(arr.shape[0], -1), index, k)


# ---------------------------------------------------------------- mosaic
def _nearest_free(free: np.ndarray, point: np.ndarray, r0: int, c0: int) -> tuple[int, int]:
    """The free cell whose centre is nearest ``point`` (row, col in cell units; ties: lowest row,
    then column), searched in growing windows around the point's own cell ``(r0, c0)``.

    A cell outside the window ``r0 +- R, c0 +- R`` is at least ``R + 0.5`` away from a point in
    cell ``(r0, c0)``, so a free cell found nearer than that is the nearest of all.
    """
    g = free.shape[0]
    radius = 1
    while True:
        r1, r2 = max(0, r0 - radius), min(g, r0 + radius + 1)
        c1, c2 = max(0, c0 - radius), min(g, c0 + radius + 1)
        window = free[r1:r2, c1:c2]
        if window.any():
            dr = (np.arange(r1, r2) + 0.5 - point[0]) ** 2
            dc = (np.arange(c1, c2) + 0.5 - point[1]) ** 2
            d2 = np.where(window, dr[:, None] + dc[None, :], np.inf)
            k = int(np.argmin(d2))  # first minimum in row-major order
            whole = r1 == 0 and c1 == 0 and r2 == g and c2 == g
            if whole or d2.flat[k] < (radius + 0.5) ** 2:
                return r1 + k // (c2 - c1), c1 + k % (c2 - c1)
        radius *= 2


def mosaic_cells(positions: Any, grid: int | None = None) -> np.ndarray:
    """Assign points to the cells of a G x G grid by their 2-D positions.

    Rule: each axis of ``positions`` is scaled to [0, 1] on its own (a constant axis maps to
    0.5); x runs left to right, y bottom to top (row 0 is the top, as in a scatter plot).
    Cell (r, c) has its centre at ``((c + 0.5) / G, 1 - (r + 0.5) / G)``. Points are taken
    in order of their distance to the centre of their nearest cell (closest first, ties in
    index order) and each takes the free cell whose centre is nearest to it (ties: lowest
    row, then lowest column). When G*G < N the points left over get no cell.

    Parameters
    ----------
    positions : array-like
        (N, 2), finite.
    grid : int, optional
        G; default ``ceil(sqrt(N))``.

    Returns
    -------
    numpy.ndarray
        int64, (G, G): the point index in each cell, -1 for an empty cell.

    Examples
    --------
    >>> mosaic_cells([[0, 0], [1, 0], [0, 1], [1, 1]])
    array([[2, 3],
           [0, 1]])
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must be (N, 2), got shape {pos.shape}")
    n = pos.shape[0]
    if n == 0:
        raise ValueError("positions is empty (N = 0)")
    if not np.isfinite(pos).all():
        raise ValueError(f"positions contain {int((~np.isfinite(pos)).sum())} NaN/Inf values")
    g = math.ceil(math.sqrt(n)) if grid is None else _positive_int(grid, "grid")
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    span = hi - lo
    unit = np.where(span > 0, (pos - lo) / np.where(span > 0, span, 1), 0.5)
    # (down, right) coordinates in cell units: row axis grows downwards
    rc = np.stack([(1.0 - unit[:, 1]) * g, unit[:, 0] * g], axis=1)
    # nearest cell per axis, a point on a border going to the lower index
    own = np.clip(np.ceil(rc) - 1, 0, g - 1).astype(np.int64)
    own_d2 = ((rc - (own + 0.5)) ** 2).sum(axis=1)
    order = np.argsort(own_d2, kind="stable")
    cells = np.full((g, g), -1, dtype=np.int64)
    free = np.ones((g, g), dtype=bool)
    for i in order[: g * g]:  # each point takes one cell: the rest find the grid full
        r, c = int(own[i, 0]), int(own[i, 1])
        if not free[r, c]:
            r, c = _nearest_free(free, rc[i], r, c)
        free[r, c] = False
        cells[r, c] = i
    return cells


def mosaic(
    images: Any,
    positions: Any,
    grid: int | None = None,
    *,
    background: int | Sequence[int] = 255,
) -> np.ndarray:
    """The images of an embedding merged into one picture, laid out on a grid by position.

    The classic t-SNE grid: a G x G grid of cells, each image placed on the free cell nearest
    its position by the greedy rule of :func:`mosaic_cells` (row 0 at the top = largest y).

    Parameters
    ----------
    images : numpy.ndarray
        uint8, (N, H, W, C) (or (N, H, W), taken as C = 1).
    positions : array-like
        (N, 2), e.g. from :func:`embed`.
    grid : int, optional
        G; default ``ceil(sqrt(N))``. With G*G < N some images are left out.
    background : int or sequence of int
        Fill of the empty cells, 0..255 (one value or one per channel).

    Returns
    -------
    numpy.ndarray
        uint8, (G*H, G*W, C); cell (r, c) is ``out[r*H:(r+1)*H, c*W:(c+1)*W]``.

    Examples
    --------
    >>> imgs = np.zeros((4, 2, 2, 1), np.uint8)
    >>> mosaic(imgs, [[0, 0], [1, 0], [0, 1], [1, 1]]).shape
    (4, 4, 1)
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    imgs = np.asarray(images)
    if imgs.dtype != np.uint8:
        raise TypeError(
            f"images must be uint8 (N, H, W, C), got dtype {imgs.dtype}. Hint: cnnwidgets.core.to_display"
        )
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    if imgs.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {imgs.shape}")
    n, h, w, c = imgs.shape
    pos = np.asarray(positions)
    if pos.ndim != 2 or pos.shape[0] != n:
        raise ValueError(f"positions must be (N, 2) with N = {n} (one per image), got shape {pos.shape}")
    bg = np.asarray(background, dtype=np.int64).reshape(-1)
    if bg.size not in (1, c) or (bg < 0).any() or (bg > 255).any():
        raise ValueError(f"background must be one value or {c} values in 0..255, got {background!r}")
    cells = mosaic_cells(pos, grid)
    g = cells.shape[0]
    out = np.empty((g * h, g * w, c), dtype=np.uint8)
    out[...] = bg.astype(np.uint8)
    for r, col in zip(*np.nonzero(cells >= 0)):
        out[r * h : (r + 1) * h, col * w : (col + 1) * w] = imgs[cells[r, col]]
    return out
