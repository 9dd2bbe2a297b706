"""Evidence that an attribution map is about the model: deletion and insertion curves, and the
model-parameter randomization check.

:func:`deletion_insertion` (Petsiuk et al., 2018, RISE) removes the pixels of one image in the
order of a map, most important first, and records the target class's probability after each
step (deletion); insertion starts from the removed image and puts the pixels back in the same
order. A map that finds what the model uses makes the deletion curve fall fast (low area under
it) and the insertion curve rise fast (high area).

:func:`randomization_check` (Adebayo et al., 2018, "Sanity checks for saliency maps")
re-initializes the model's layers from the top down, cumulatively, on a private copy, and says
how alike (Spearman rank correlation) the map of the randomized model stays to the original
one: a map that hardly changes does not depend on what the model learned.

Plain torch and numpy; no widget imports. Both run on cnnwidgets' private view or copy of the
model: nothing is visible on the user's model (modes, hooks, ``requires_grad``, parameter values).

Examples
--------
>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
>>> x = torch.rand(1, 3, 8, 8)
>>> contribution = x[0] * net[1].weight[2].view(3, 8, 8)
>>> f = deletion_insertion(net, x, contribution, target=2, steps=16, baseline="zeros")
>>> f.fractions.shape, bool(f.deletion_auc < f.insertion_auc)
((17,), True)
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
import torch
from torch import nn

from ._validate import check_int
from .imageops import gaussian_blur
from .model import get_layer, unwrap_model
from .outputs import OutputSelector
from .passes import Stopped
from .runner import _build_view, _CannotView, _weight_hook, forward_errors
from .saliency._common import Target, _batch_size, _check_batch, _check_target_range, _prepared

__all__ = [
    "DELETION_BASELINES",
    "Faithfulness",
    "Randomization",
    "deletion_insertion",
    "randomization_check",
    "spearman_correlation",
]

DeletionBaseline = Literal["blur", "zeros", "mean"]
#: Named baselines of :func:`deletion_insertion` (a number or a tensor is accepted too).
DELETION_BASELINES: tuple[str, ...] = ("blur", "zeros", "mean")

#: ``stop=``: a ``threading.Event`` or a callable returning True to stop.
StopSignal = Union[threading.Event, Callable[[], bool], None]


def _stopper(stop: StopSignal) -> Callable[[], bool] | None:
    if stop is None:
        return None
    if isinstance(stop, threading.Event) or callable(getattr(stop, "is_set", None)):
        return stop.is_set
    if callable(stop):
        return stop
    raise TypeError(f"stop must be a threading.Event or a callable returning bool, got {type(stop).__name__}")


def _auc(fractions: np.ndarray, values: np.ndarray) -> float:
    """Trapezoid rule over ``fractions`` (0 .. 1)."""
    return float(np.sum((values[1:] + values[:-1]) * np.diff(fractions)) / 2)


# ---------------------------------------------------------------- deletion and insertion
@dataclass(frozen=True, eq=False, repr=False)
class Faithfulness:
    """Deletion and insertion curves of one map for one image (:func:`deletion_insertion`).

    Attributes
    ----------
    fractions : np.ndarray
        float64 (steps + 1,): the fraction of the pixels removed (deletion) or put back
        (insertion) at each point, 0 to 1.
    deletion : np.ndarray
        float64 (steps + 1,): the target's probability as the most important pixels are
        replaced by the baseline; ``deletion[0]`` is the image's own probability.
    insertion : np.ndarray
        float64 (steps + 1,): the probability as they are put back into the baseline image;
        ``insertion[0] == deletion[-1]`` (the baseline image) and ``insertion[-1] == deletion[0]``.
    deletion_auc, insertion_auc : float
        Areas under the curves over ``fractions`` (trapezoid rule), in [0, 1]: lower deletion
        and higher insertion areas mean a more faithful map.
    target : int
        The class whose probability is recorded.
    baseline : str
        What removed pixels show: ``"blur"``, ``"zeros"``, ``"mean"``, the number (e.g.
        ``"0.5"``) or ``"tensor"``.
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: float
    insertion_auc: float
    target: int
    baseline: str

    def __repr__(self) -> str:
        return (f"Faithfulness(target={self.target}, baseline={self.baseline!r}, steps={len(self.fractions) - 1}, "
                f"deletion_auc={self.deletion_auc:.4g}, insertion_auc={self.insertion_auc:.4g})")


def _pixel_scores(attribution: Any, h: int, w: int) -> torch.Tensor:
    """float64 (H * W,): the per-pixel sum over channels of the attribution."""
    a = torch.as_tensor(np.asarray(attribution) if not isinstance(attribution, torch.Tensor) else attribution)
    shape = tuple(a.shape)
    if a.dim() == 4:
        if a.shape[0] != 1:
            raise ValueError(f"attribution must be for one image (1 x C x H x W), got shape {shape}")
        a = a[0]
    if a.dim() == 3:
        a = a.sum(dim=0, dtype=torch.float64) if a.is_floating_point() else a.double().sum(dim=0)
    if a.dim() != 2 or tuple(a.shape) != (h, w):
        raise ValueError(
            f"attribution must be C x H x W, H x W or 1 x ... with H x W = {h} x {w} (the image's), got shape {shape}. "
            "Hint: Grad-CAM maps from cnnwidgets are already upsampled to the input; upsample others "
            "(torch.nn.functional.interpolate)."
        )
    a = a.detach().to("cpu", torch.float64).reshape(-1)
    if not bool(torch.isfinite(a).all()):
        raise ValueError("attribution holds NaN or infinite values")
    return a


def _deletion_baseline(x: torch.Tensor, baseline: Any) -> tuple[torch.Tensor, str]:
    if isinstance(baseline, (torch.Tensor, np.ndarray)):
        b = torch.as_tensor(baseline).to(device=x.device, dtype=x.dtype)
        try:
            return torch.broadcast_to(b, x.shape), "tensor"
        except RuntimeError:
            raise ValueError(
                f"baseline tensor of shape {tuple(b.shape)} does not broadcast to the image's shape {tuple(x.shape)}"
            ) from None
    if isinstance(baseline, str):
        if baseline == "blur":
            from .saliency.integrated_gradients import BLUR_SIGMA_FRACTION

            return gaussian_blur(x, BLUR_SIGMA_FRACTION * max(x.shape[-2:])), "blur"
        if baseline == "zeros":
            return torch.zeros_like(x), "zeros"
        if baseline == "mean":
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x), "mean"
    elif isinstance(baseline, (int, float)) and not isinstance(baseline, bool) and math.isfinite(baseline):
        return torch.full_like(x, float(baseline)), f"{float(baseline):g}"
    names = ", ".join(repr(b) for b in DELETION_BASELINES)
    raise ValueError(f"baseline must be one of {names}, a finite number or a tensor; got {baseline!r}")


def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    attribution: torch.Tensor | np.ndarray,
    target: int | None = None,
    *,
    steps: int = 100,
    baseline: DeletionBaseline | float | torch.Tensor = "zeros",
    batch_size: int | None = None,
    output: OutputSelector = None,
    region: Any = None,
    progress: Callable[[int, int], Any] | None = None,
    stop: StopSignal = None,
) -> Faithfulness:
    """Deletion and insertion curves (Petsiuk et al., 2018) of ``attribution`` for one image.

    The pixels are ranked by the per-pixel sum over channels of the attribution, most
    important (largest) first; ties keep raster order (row by row), so the ranking is
    deterministic. Point ``i`` of ``steps + 1`` has the first ``k_i = floor(i * H * W / steps)``
    pixels (all channels) replaced by the baseline (deletion), or taken from the image with
    every other pixel from the baseline (insertion), and records the target class's
    probability: the softmax over the classes of the logits, the sigmoid of a single logit
    (:meth:`~cnnwidgets.core.runner.Scores.probabilities`; for segmentation outputs the share of
    pixels whose top class is the target).

    Parameters
    ----------
    model : nn.Module
        As in :func:`~cnnwidgets.core.saliency.vanilla_gradient`; a final softmax/sigmoid is
        bypassed (with a ``UserWarning``) and applied once to read the probability.
    x : torch.Tensor
        One image, float 1 x C x H x W, normalized the way the model expects.
    attribution : torch.Tensor or np.ndarray
        C x H x W, H x W, or either with a leading 1 (as the methods return it for one image).
        Signed maps rank positive evidence first; pass ``attribution.abs()`` to rank by
        magnitude.
    target : int, optional
        The class; None: the model's predicted class for ``x``.
    steps : int
        Points after the start, 1 .. H * W (100: 1% of the pixels per step).
    baseline : {"blur", "zeros", "mean"}, float or tensor
        What a removed pixel shows, for both curves (deletion ends, and insertion starts, at the
        baseline image). ``"zeros"`` (default): 0.0 in the model's input space (black for [0, 1]
        pixels, the data set's mean colour for normalized ones), RISE's deletion and Quantus's
        usual choice. ``"blur"``: the image blurred by a Gaussian with sigma
        ``BLUR_SIGMA_FRACTION * max(H, W)`` (as Integrated Gradients' ``"blur"`` baseline), the
        substrate of RISE's insertion; it adds no sharp edges, but where the blurred image is
        still recognized (a blurred MNIST digit is) both curves stay near the full probability
        and tell the methods apart no better than a random ranking: on the demo digit 0, random
        pixel orders score deletion 0.98 with "blur" against 0.41 with "zeros", the methods 0.55-0.96
        against 0.07-0.25. ``"mean"``: each channel's mean over the image. A number or a tensor
        broadcastable to 1 x C x H x W is used as is.
    batch_size : int, optional
        Images per forward pass; None: as many as make about
        :data:`~cnnwidgets.core.saliency._common.FORWARD_BATCH_VALUES` input values (10 at
        3 x 224 x 224).
    output, region
        As in :func:`~cnnwidgets.core.saliency.vanilla_gradient` (``region`` picks the
        pixels a segmentation class is predicted from when ``target`` is None).
    progress : callable, optional
        ``progress(done, total)`` after each batch: images scored so far, of ``2 * steps``.
    stop : threading.Event or callable, optional
        Checked before each batch; when set, raises :class:`~cnnwidgets.core.passes.Stopped`.

    Returns
    -------
    Faithfulness
        The curves, their areas, the target and the baseline's name.

    Notes
    -----
    ``2 * steps`` images go through the model (the two curves share their end points: the
    image and the baseline image), in batches, under ``torch.no_grad()``.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 2, 2))
    >>> x = torch.rand(1, 1, 2, 2)
    >>> f = deletion_insertion(net, x, torch.rand(2, 2), target=0, steps=4, baseline=0.0)
    >>> f.fractions.tolist(), round(float(f.deletion[0] + f.insertion[0]) - float(f.insertion[-1] + f.deletion[-1]), 6)
    ([0.0, 0.25, 0.5, 0.75, 1.0], 0.0)
    """
    steps = check_int(steps, "steps", 1)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1)
    stopped = _stopper(stop)
    x = _check_batch(x)
    if x.shape[0] != 1:
        raise ValueError(f"deletion_insertion takes one image (1 x C x H x W), got {x.shape[0]}; use x[i:i + 1]")
    h, w = x.shape[-2:]
    pixels = h * w
    if steps > pixels:
        raise ValueError(f"steps must be at most the number of pixels ({h} x {w} = {pixels}), got {steps}")
    scores_a = _pixel_scores(attribution, h, w)
    order = torch.sort(scores_a, descending=True, stable=True).indices
    rank = torch.empty(pixels, dtype=torch.long)
    rank[order] = torch.arange(pixels)
    counts = (torch.arange(steps + 1, dtype=torch.long) * pixels) // steps
    # jobs: deletion at every point, insertion at the inner points (its ends are deletion's)
    keep = torch.cat([counts, counts[1:-1]])
    inserting = torch.cat([torch.zeros(steps + 1, dtype=torch.bool), torch.ones(steps - 1, dtype=torch.bool)])
    total = len(keep)
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        base, name = _deletion_baseline(xd, baseline)
        rank = rank.to(xd.device).view(1, 1, h, w)
        keep, inserting = keep.to(xd.device), inserting.to(xd.device)
        bs = _batch_size(batch_size, xd, forward_only=True)
        cls = t[:1]
        probs = torch.empty(total, dtype=torch.float64)
        with torch.no_grad():
            for start in range(0, total, bs):
                if stopped is not None and stopped():
                    raise Stopped(start, total)
                end = min(start + bs, total)
                removed = rank < keep[start:end].view(-1, 1, 1, 1)  # B x 1 x H x W: the first k pixels
                from_base = removed != inserting[start:end].view(-1, 1, 1, 1)
                images = torch.where(from_base, base, xd)
                with forward_errors(images, run):
                    p = scores.probabilities(run(images))
                if start == 0:
                    _check_target_range(cls, p.shape[1])
                probs[start:end] = p[:, int(cls[0])].double().cpu()
                if progress is not None:
                    progress(end, total)
    deletion = probs[: steps + 1].numpy()
    insertion = np.concatenate([deletion[-1:], probs[steps + 1:].numpy(), deletion[:1]])
    fractions = counts.double().numpy() / pixels
    return Faithfulness(fractions, deletion, insertion, _auc(fractions, deletion), _auc(fractions, insertion),
                        int(cls[0]), name)


# ---------------------------------------------------------------- rank correlation
def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given the mean of their ranks (as ``scipy.stats.rankdata``)."""
    order = np.argsort(a, kind="stable")
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(s)]
    ranks = np.empty(len(a), np.float64)
    ranks[order] = ((starts + ends - 1) / 2 + 1)[group]
    return ranks


def spearman_correlation(a: Any, b: Any) -> float:
    """Spearman's rank correlation of two maps (flattened): the Pearson correlation of their
    ranks, ties ranked by their mean rank (``scipy.stats.spearmanr``). NaN when either map is
    constant or holds a NaN.

    Examples
    --------
    >>> spearman_correlation([1, 2, 3, 4], [10, 20, 30, 45]), spearman_correlation([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    """
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, np.float64).ravel()
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"the maps have {a.size} and {b.size} values; they must have as many")
    if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / den if den > 0 else float("nan")


# ---------------------------------------------------------------- model randomization
@dataclass(frozen=True, eq=False, repr=False)
class Randomization:
    """The cascading model-parameter randomization check of one map (:func:`randomization_check`).

    Attributes
    ----------
    method : str
    target : int or None
        The class explained (that of the original model), None for ``"layer_gradient"``.
    layers : tuple of str
        The layers randomized, in the order randomized (top first by default).
    spearman : np.ndarray
        float64 (L,): ``spearman[i]`` is the rank correlation of the original map with the map
        after randomizing ``layers[:i + 1]`` (cumulative); NaN where a map is constant (e.g. a
        Grad-CAM that the ReLU zeroed).
    original : torch.Tensor
        float64 H x W: the original map as correlated (absolute values summed over channels).
    maps : tuple of torch.Tensor
        The randomized models' maps, one per layer, reduced the same way.
    seed : int
    """

    method: str
    target: int | None
    layers: tuple[str, ...]
    spearman: np.ndarray
    original: torch.Tensor
    maps: tuple[torch.Tensor, ...]
    seed: int

    def __repr__(self) -> str:
        last = f"{self.spearman[-1]:.3g}" if len(self.spearman) else "-"
        return (f"Randomization(method={self.method!r}, target={self.target}, layers={len(self.layers)} "
                f"({self.layers[0] if self.layers else '-'} .. {self.layers[-1] if self.layers else '-'}), "
                f"spearman after all={last})")


def _reduced(a: torch.Tensor) -> torch.Tensor:
    """H x W float64: |attribution| summed over channels (an N x H x W map: its absolute value)."""
    a = a.detach().to("cpu", torch.float64)[0]
    return a.abs().sum(dim=0) if a.dim() == 3 else a.abs()


def _private_copy(model: nn.Module) -> nn.Module:
    """A copy of the model's module tree whose parameter entries are its own (they alias the
    user's tensors until :func:`_randomize_layer` replaces them with new ones; nothing is ever
    written into a tensor), in eval mode, without the user's hooks."""
    model = unwrap_model(model)[0]
    try:
        return _build_view(model)
    except _CannotView:
        pass
    try:
        dup = copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001 - say why
        raise ValueError(f"the randomization check needs a copy of the model, and copying it failed ({exc})") from None
    for m in dup.modules():  # the user's hooks stay on the user's model
        for name in ("_forward_hooks", "_backward_hooks", "_backward_pre_hooks"):
            getattr(m, name, {}).clear()
        pre = getattr(m, "_forward_pre_hooks", None)
        if pre:
            for k in [k for k, h in pre.items() if not _weight_hook(h)]:
                del pre[k]
    dup.eval()  # its flags are its own (cnnwidgets runs it under preserved_state, as any model it cannot view)
    return dup


def _randomize_layer(module: nn.Module, generator: torch.Generator) -> None:
    """Replace every parameter of ``module`` (and its sub-modules) by a new tensor drawn from a
    Gaussian with the mean and standard deviation of the one it replaces (a constant tensor,
    such as a zero bias, stays as it is). The old tensors are left untouched."""
    for owner in module.modules():
        for key, p in list(owner._parameters.items()):
            if p is None:
                continue
            old = p.detach()
            mean = old.double().mean() if old.numel() else torch.zeros((), dtype=torch.float64)
            std = old.double().std(unbiased=False) if old.numel() > 1 else torch.zeros((), dtype=torch.float64)
            z = torch.randn(old.shape, generator=generator, dtype=torch.float64)
            new = (mean.cpu() + std.cpu() * z).to(device=old.device, dtype=old.dtype)
            owner._parameters[key] = nn.Parameter(new, requires_grad=False)


def _execution_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the modules with parameters of their own, in the order they first run on ``x``
    (hooks on the private copy only); registration order for a TorchScript copy, which takes
    no hooks."""
    named = {id(m): n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}
    if isinstance(model, torch.jit.ScriptModule):
        return list(named.values())
    order: list[str] = []
    seen: set[int] = set()

    def pre_hook(module: nn.Module, _args: Any) -> None:
        if id(module) not in seen:
            seen.add(id(module))
            order.append(named[id(module)])

    handles = [m.register_forward_pre_hook(pre_hook) for m in model.modules() if id(m) in named]
    try:
        with torch.no_grad(), forward_errors(x, model):
            model(x.clone())
    finally:
        for hd in handles:
            hd.remove()
    return order


#: The layers :func:`randomization_check` randomizes by default: convolutions and linear layers.
RANDOMIZED_KINDS: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)


_KIND_NAMES = frozenset({"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
                         "Linear", "NonDynamicallyQuantizableLinear"})


def _randomized_kind(m: nn.Module) -> bool:
    if isinstance(m, torch.jit.ScriptModule):  # a scripted layer keeps its class's name only
        return getattr(m, "original_name", "") in _KIND_NAMES
    return isinstance(m, RANDOMIZED_KINDS)


def randomization_check(
    model: nn.Module,
    x: torch.Tensor,
    method: str = "gradcam",
    target: Target = None,
    *,
    layers: int | Sequence[str] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], Any] | None = None,
    stop: StopSignal = None,
    **method_params: Any,
) -> Randomization:
    """Cascading model-parameter randomization (Adebayo et al., 2018) of ``method``'s map of one
    image.

    From the top layer down, each layer's parameters are re-initialized, keeping the earlier
    layers randomized (cumulative); after each, the map of ``method`` for the same image and
    the class the original model was explained for is computed and compared with the original
    map by Spearman's rank correlation (:func:`spearman_correlation`) of the absolute values
    summed over channels. A faithful method's correlation falls as layers are randomized.

    The randomization happens on a private copy of the model's module tree whose randomized
    parameters are new tensors: the user's parameters (which cnnwidgets' views alias) are never
    written, and no mode, hook or flag of the user's model changes.

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor
        One image, float 1 x C x H x W.
    method : str
        One of :data:`~cnnwidgets.core.saliency.METHODS`.
    target : int, optional
        The class; None: the original model's predicted class (kept for every randomized model).
    layers : int, sequence of str, or None
        None: every convolution and linear layer (:data:`RANDOMIZED_KINDS`) that runs on ``x``,
        from the last to run to the first. An int ``k``: the top ``k`` of those. A sequence of
        qualified names: those modules (all their parameters, sub-modules' included), in the
        order given.
    seed : int
        Seeds the generator of the new parameters (a ``torch.Generator`` of its own, in the
        order of ``layers``: torch's global generator is untouched), and is passed as ``seed``
        to methods that take one (SmoothGrad), so every map sees the same noise.
    progress : callable, optional
        ``progress(done, total)`` after each layer (layers randomized so far, of L).
    stop : threading.Event or callable, optional
        Checked before each layer; when set, raises :class:`~cnnwidgets.core.passes.Stopped`.
    **method_params
        Options of the method (as for :func:`~cnnwidgets.core.saliency.attribute`); Grad-CAM's
        layer, when not given, is the one it picks on the original model, kept for all maps.

    Returns
    -------
    Randomization

    Notes
    -----
    Each parameter tensor of a randomized layer is replaced by a draw from a Gaussian with that
    tensor's own mean and standard deviation (so the scale of the activations stays about the
    same, and the learned structure is gone); a constant tensor (a zero bias) stays as it is.
    Buffers (BatchNorm running statistics) are not randomized. This differs from Quantus'
    ``MPRT``, which calls each module's ``reset_parameters()`` (torch's default initialization,
    BatchNorm layers included) in reverse registration order.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    >>> r = randomization_check(net, torch.rand(1, 3, 8, 8), "grad_x_input", target=0)
    >>> r.layers, r.spearman.shape
    (('6', '2', '0'), (3,))
    """
    from .saliency.registry import REGISTRY, explain

    if method not in REGISTRY:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in REGISTRY)}; got {method!r}")
    spec = REGISTRY[method]
    seed = check_int(seed, "seed")
    stopped = _stopper(stop)
    x = _check_batch(x)
    if x.shape[0] != 1:
        raise ValueError(f"randomization_check takes one image (1 x C x H x W), got {x.shape[0]}; use x[i:i + 1]")
    params = dict(method_params, seed=seed)
    cls: int | None = None
    if spec.targeted:
        if target is None:
            with _prepared(model, x, None, output=params.get("output"), region=params.get("region")) as (_, _, t, _):
                cls = int(t[0])
        else:
            from .saliency._common import _given_targets

            cls = int(_given_targets(target, 1)[0])
    e = explain(model, x, method, cls, **params)
    if spec.takes_layer and params.get("layer") is None and e.layer is not None:
        params["layer"] = e.layer  # the same layer for every map
    original = _reduced(e.attribution)

    dup = _private_copy(model)
    names = _chosen_layers(dup, x, layers)
    generator = torch.Generator().manual_seed(seed)
    rho: list[float] = []
    maps: list[torch.Tensor] = []
    for i, name in enumerate(names):
        if stopped is not None and stopped():
            raise Stopped(i, len(names))
        _randomize_layer(get_layer(dup, name), generator)
        m = _reduced(explain(dup, x, method, cls, **params).attribution)
        maps.append(m)
        rho.append(spearman_correlation(original, m))
        if progress is not None:
            progress(i + 1, len(names))
    return Randomization(method, cls, tuple(names), np.asarray(rho, np.float64), original, tuple(maps), seed)


def _chosen_layers(dup: nn.Module, x: torch.Tensor, layers: Any) -> list[str]:
    """The names of the layers to randomize, in order (see ``layers=`` of :func:`randomization_check`)."""
    if isinstance(layers, str):
        layers = [layers]
    if layers is None or isinstance(layers, bool) or hasattr(layers, "__index__"):
        from .model import model_device, model_dtype

        k = None if layers is None else check_int(layers, "layers", 1)
        xd = x.detach().to(device=model_device(dup), dtype=model_dtype(dup))
        modules = dict(dup.named_modules())
        top_down = [n for n in reversed(_execution_order(dup, xd)) if _randomized_kind(modules[n])]
        if not top_down:
            raise ValueError("the model has no convolution or linear layer that runs on x; name the layers to "
                             "randomize with layers=[...]")
        return top_down if k is None else top_down[:k]
    names = list(layers)
    for n in names:
        if not any(True for _ in get_layer(dup, n).parameters()):
            raise ValueError(f"layer {n!r} has no parameters to randomize")
    return names
