"""Optimal input patterns (OIP): images that a chosen channel, neuron or class responds to.

Starting from noise (or any image), gradient ascent changes the input so that an
:class:`Objective` -- the mean activation of a feature map, one neuron, a class logit, or a
weighted sum of those -- grows. This is "activation maximization" / "feature visualization"
(Erhan et al. 2009; Simonyan et al. 2014; Olah et al. 2017). Plain torch; no widget imports.

The pieces are small and composable, in the style of lucent:

==================  ===================================================================
piece               what it is
==================  ===================================================================
objective           :class:`Objective` ``obj(acts, logits) -> (B,)``; ``+ - *`` combine
                    them: :func:`channel`, :func:`neuron`, :func:`class_logit`
parameterization    :func:`pixel_param`, :func:`fourier_param`: ``(params, image_fn)``
starting image      :func:`gray_noise`, :func:`multiscale`, or a tensor (dataset image)
transform           :func:`jitter`, :func:`scale`, :func:`rotate`, :func:`compose`:
                    ``fn(img) -> img``, random each step (robustness)
penalty             :func:`l2`, :func:`lp`, :func:`total_variation`: ``img -> (B,)``,
                    subtracted from the objective
image operation     :func:`blur_every`, :func:`clip_weak_pixels`: applied to the pixels
                    between steps (pixel parameterization only)
==================  ===================================================================

Conventions
-----------
* Images live in display space: float B x C x H x W in [0, 1]; 0.5 is neutral gray. The model
  receives ``(img - mean) / std`` when ``mean``/``std`` are given, else ``img`` as it is.
* Objectives are maximized. A negated objective (``-obj``) is minimized.
* Penalties and the "weak pixel" clipping measure an image by its deviation from gray,
  ``img - 0.5``: a uniformly gray image has zero L2/Lp norm and no strong pixels.

Examples
--------
>>> from cnnwidgets.demo import mnist
>>> demo = mnist("val")
>>> res = optimize(demo.model, channel("features.6", 120), (1, 28, 28), steps=20,
...                mean=demo.mean, std=demo.std)
>>> res.images.shape, len(res.history)
(torch.Size([1, 1, 28, 28]), 20)
"""

from __future__ import annotations

import contextlib
import math
import numbers
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_int as _check_int
from .model import (
    caller_stacklevel,
    check_model,
    final_softmax,
    get_layer,
    has_own_forward,
    model_device,
    named_layers,
    passthrough,
    preserved_state,
    replaced_forward,
)

__all__ = [
    "INITS",
    "PARAMS",
    "STEP_RULES",
    "DeadTargetError",
    "ImageOp",
    "InitName",
    "OIPResult",
    "Objective",
    "ParamName",
    "Penalty",
    "StepRule",
    "Transform",
    "blur_every",
    "channel",
    "class_logit",
    "class_probabilities",
    "clip_weak_pixels",
    "compose",
    "fourier_param",
    "gaussian_blur",
    "gray_noise",
    "jitter",
    "l2",
    "log_steps",
    "lp",
    "multiscale",
    "neuron",
    "optimize",
    "pixel_param",
    "precursor_scan",
    "rotate",
    "scale",
    "total_variation",
]

# ---------------------------------------------------------------- choices (one place)
StepRule = Literal["rms", "adam"]
#: Valid values of ``step_rule`` for :func:`optimize`.
STEP_RULES: tuple[str, ...] = ("rms", "adam")

ParamName = Literal["pixel", "fourier"]
#: Valid values of ``param`` for :func:`optimize`.
PARAMS: tuple[str, ...] = ("pixel", "fourier")

InitName = Literal["gray", "multiscale"]
#: Named starting images for :func:`optimize` and :func:`precursor_scan`.
INITS: tuple[str, ...] = ("gray", "multiscale")

#: An index: one int for every image, or a list with one int per image (batch mode).
Index = Union[int, Sequence[int]]
Shape = Sequence[int]

#: Neutral gray in display space; penalties and pixel clipping measure deviations from it.
GRAY: float = 0.5

#: Pixel values are kept this far inside (0, 1) when an image is turned into the logits of
#: the Fourier parameterization (a sigmoid never reaches 0 or 1).
_FOURIER_EPS: float = 1e-3



class DeadTargetError(ValueError):
    """The objective is exactly zero for every starting image tried: a dead feature map."""


# ---------------------------------------------------------------- small validators
def _check_float(value: Any, name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonneg and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def _check_shape(shape: Any) -> tuple[int, int, int]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be (C, H, W), got {shape!r}") from None
    if len(dims) != 3:
        raise ValueError(f"shape must be (C, H, W) with three ints, got {shape!r}")
    c, h, w = (_check_int(d, "shape entry", 1) for d in dims)
    return c, h, w


def _check_index(value: Any, name: str) -> int | list[int]:
    """An int >= 0 or a non-empty list of them."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{name} must be an int or a non-empty list of ints, got an empty list")
        return [_check_int(v, name, 0) for v in value]
    return _check_int(value, name, 0)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(_check_int(seed, "seed"))


# ---------------------------------------------------------------- objectives
ObjectiveFn = Callable[[dict[str, torch.Tensor], Union[torch.Tensor, None]], torch.Tensor]


def _paren(name: str) -> str:
    """``name`` in parentheses when it is a sum or difference."""
    return f"({name})" if " + " in name or " - " in name else name


def _common_batch(a: int | None, b: int | None) -> int | None:
    if a is not None and b is not None and a != b:
        raise ValueError(f"cannot combine objectives for {a} and {b} images (batch mode lists differ in length)")
    return a if a is not None else b


class Objective:
    """A per-image quantity to maximize: ``obj(acts, logits) -> (B,)``.

    Parameters
    ----------
    fn : callable
        ``fn(acts, logits)``; ``acts`` maps a layer name to its output (B x K x h x w or B x K),
        ``logits`` is the model's output (B x n_classes) or None. Returns a (B,) tensor.
    layers : iterable of str
        The layers whose outputs ``fn`` reads.
    needs_logits : bool
        Whether ``fn`` reads ``logits`` (then the whole forward pass runs; otherwise it stops
        after the last needed layer).
    name : str
        Label for display.
    batch_size : int, optional
        For batch-mode objectives (one target per image), the number of images they address.
    channels : dict of str to set of int, optional
        For each layer in ``layers``, the output channels ``fn`` reads. None (or a layer
        missing from it, or mapped to None): unknown, any of them. With it, :func:`optimize`
        computes only those channels of a target ``nn.Conv2d`` (the pass stops there anyway):
        :func:`channel` and :func:`neuron` set it.

    Examples
    --------
    >>> obj = channel("features.6", 3) - 0.5 * channel("features.6", 4)
    >>> sorted(obj.layers), obj.needs_logits
    (['features.6'], False)
    >>> obj.name
    'features.6:3 - 0.5 * features.6:4'
    """

    def __init__(
        self,
        fn: ObjectiveFn,
        layers: Sequence[str] | set[str] = (),
        needs_logits: bool = False,
        name: str = "objective",
        batch_size: int | None = None,
        channels: dict[str, set[int]] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.layers: set[str] = set(layers)
        self.needs_logits: bool = bool(needs_logits)
        self.name: str = str(name)
        self.batch_size: int | None = batch_size
        known = channels is not None and all(v is not None for v in channels.values()) and set(layers) <= set(channels)
        # a layer without a channel list (or with None) may be read anywhere: then nothing is pruned
        self.channels: dict[str, frozenset[int]] | None = (
            {k: frozenset(int(c) for c in v) for k, v in channels.items()} if known else None  # type: ignore[union-attr]
        )

    def __call__(self, acts: dict[str, torch.Tensor], logits: torch.Tensor | None = None) -> torch.Tensor:
        """The (B,) value of every image."""
        out = self.fn(acts, logits)
        if not isinstance(out, torch.Tensor) or out.dim() != 1:
            desc = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"objective {self.name!r} must return a (B,) tensor, got {desc}")
        return out

    def __repr__(self) -> str:
        return f"Objective({self.name!r})"

    # -- arithmetic --------------------------------------------------------------------
    def _combine(
        self, other: Objective, op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], name: str
    ) -> Objective:
        a, b = self, other
        channels = None
        if a.channels is not None and b.channels is not None:
            channels = {k: a.channels.get(k, frozenset()) | b.channels.get(k, frozenset())
                        for k in a.channels.keys() | b.channels.keys()}
        return Objective(
            lambda acts, logits: op(a(acts, logits), b(acts, logits)),
            a.layers | b.layers,
            a.needs_logits or b.needs_logits,
            name,
            _common_batch(a.batch_size, b.batch_size),
            channels,
        )

    def __add__(self, other: Any) -> Objective:
        if isinstance(other, Objective):
            return self._combine(other, torch.add, f"{self.name} + {other.name}")
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            if other == 0:  # sum([...]) starts from 0
                return self
            k = float(other)
            a = self
            return Objective(lambda acts, logits: a(acts, logits) + k, a.layers, a.needs_logits,
                             f"{a.name} + {k:g}", a.batch_size, a.channels)
        return NotImplemented

    __radd__ = __add__

    def __neg__(self) -> Objective:
        return self.__mul__(-1.0)

    def __sub__(self, other: Any) -> Objective:
        if isinstance(other, Objective):
            return self._combine(other, torch.sub, f"{self.name} - {_paren(other.name)}")
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            return self + (-float(other))
        return NotImplemented

    def __rsub__(self, other: Any) -> Objective:
        return (-self) + other

    def __mul__(self, other: Any) -> Objective:
        if isinstance(other, Objective):
            return self._combine(other, torch.mul, f"{_paren(self.name)} * {_paren(other.name)}")
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            k = float(other)
            a = self
            inner = _paren(a.name)
            name = f"-{inner}" if k == -1 else f"{k:g} * {inner}"
            return Objective(lambda acts, logits: a(acts, logits) * k, a.layers, a.needs_logits, name, a.batch_size,
                             a.channels)
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Objective:
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            if other == 0:
                raise ZeroDivisionError("cannot divide an objective by 0")
            return self * (1.0 / float(other))
        return NotImplemented


def _layer_output(acts: dict[str, torch.Tensor], layer: str) -> torch.Tensor:
    try:
        return acts[layer]
    except KeyError:
        raise ValueError(f"layer {layer!r} was not captured (known: {sorted(acts)})") from None


def _check_range(idx: int | list[int], n: int, what: str, limit: int, limit_desc: str) -> None:
    """ValueError unless ``idx`` (an int, or a list of n ints) is within 0..limit-1."""
    if isinstance(idx, list):
        if len(idx) != n:
            raise ValueError(f"{what} lists {len(idx)} targets (one per image) but the batch has {n} images")
        bad = [i for i in idx if i >= limit]
        if bad:
            raise ValueError(f"{what} must be in 0..{limit - 1} ({limit_desc}), got {bad}")
    elif idx >= limit:
        raise ValueError(f"{what} must be in 0..{limit - 1} ({limit_desc}), got {idx}")


def _index_tensor(
    idx: int | list[int], n: int, what: str, limit: int, limit_desc: str, device: torch.device
) -> torch.Tensor:
    """``idx`` as a LongTensor (n,), checked against 0..limit-1."""
    _check_range(idx, n, what, limit, limit_desc)
    if isinstance(idx, list):
        return torch.tensor(idx, dtype=torch.long, device=device)
    return torch.full((n,), idx, dtype=torch.long, device=device)


def _list_len(*indices: int | list[int]) -> int | None:
    n = None
    for i in indices:
        if isinstance(i, list):
            if n is not None and len(i) != n:
                raise ValueError(f"batch-mode lists must have the same length, got {n} and {len(i)}")
            n = len(i)
    return n


def _as_set(idx: int | list[int]) -> set[int]:
    return set(idx) if isinstance(idx, list) else {idx}


def _label(idx: int | list[int]) -> str:
    if isinstance(idx, list):
        return f"[{idx[0]}..]" if len(idx) > 3 else str(idx)
    return str(idx)


def channel(layer: str, c: Index) -> Objective:
    """Mean activation of feature map ``c`` of ``layer``.

    Parameters
    ----------
    layer : str
        Qualified layer name with a 4-D output (B x K x h x w), e.g. ``"features.6"``.
    c : int or list of int
        The channel, 0 <= c < K, the same for every image; or a list of B channels: image b
        maximizes channel ``c[b]`` (batch mode: B feature maps at once).

    Returns
    -------
    Objective
        Value (B,): ``acts[layer][b, c_b].mean()``.

    Raises
    ------
    ValueError
        At evaluation, when the layer has no spatial output (B x K; use :func:`neuron`) or
        ``c`` is out of range (the message names 0..K-1).

    Examples
    --------
    >>> acts = {"conv": torch.arange(8.0).view(1, 2, 2, 2)}
    >>> channel("conv", 1)(acts, None)
    tensor([5.5000])
    """
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a qualified module name (str), got {type(layer).__name__}")
    idx = _check_index(c, "channel")

    def fn(acts: dict[str, torch.Tensor], logits: torch.Tensor | None) -> torch.Tensor:
        a = _layer_output(acts, layer)
        if a.dim() == 2:
            raise ValueError(
                f"layer {layer!r} has no spatial output (shape {tuple(a.shape)}, B x K): "
                f"use neuron({layer!r}, unit) instead of channel()"
            )
        if a.dim() != 4:
            raise ValueError(f"channel() needs a 4-D layer output B x K x h x w; {layer!r} gives {tuple(a.shape)}")
        n, k = a.shape[:2]
        if isinstance(idx, int):  # one map for every image: a view, cheaper to differentiate
            _check_range(idx, n, "channel", k, f"layer {layer!r} has {k} channels")
            return a[:, idx].mean(dim=(1, 2))
        ch = _index_tensor(idx, n, "channel", k, f"layer {layer!r} has {k} channels", a.device)
        rows = torch.arange(n, device=a.device)
        return a[rows, ch].mean(dim=(1, 2))

    return Objective(fn, {layer}, False, f"{layer}:{_label(idx)}", _list_len(idx), {layer: _as_set(idx)})


def neuron(layer: str, c: Index, y: Index | None = None, x: Index | None = None) -> Objective:
    """Activation of one neuron: channel ``c`` at position (``y``, ``x``) of ``layer``.

    Parameters
    ----------
    layer : str
        Qualified layer name. For a 4-D output (B x K x h x w) the neuron is ``[c, y, x]``;
        for a 2-D output (B x K, e.g. a Linear layer) it is unit ``c`` (``y``/``x`` must be None).
    c : int or list of int
        Channel (or unit); a list of B ints gives each image its own target (batch mode).
    y, x : int or list of int, optional
        Position in the feature map; the centre ``(h // 2, w // 2)`` by default.

    Returns
    -------
    Objective
        Value (B,).

    Examples
    --------
    >>> acts = {"conv": torch.arange(18.0).view(1, 2, 3, 3), "fc": torch.tensor([[1.0, 7.0]])}
    >>> neuron("conv", 1)(acts, None), neuron("fc", 1)(acts, None)
    (tensor([13.]), tensor([7.]))
    """
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a qualified module name (str), got {type(layer).__name__}")
    ci = _check_index(c, "channel")
    yi = None if y is None else _check_index(y, "y")
    xi = None if x is None else _check_index(x, "x")
    n_list = _list_len(*(i for i in (ci, yi, xi) if i is not None))

    def fn(acts: dict[str, torch.Tensor], logits: torch.Tensor | None) -> torch.Tensor:
        a = _layer_output(acts, layer)
        n, k = a.shape[:2]
        rows = torch.arange(n, device=a.device)
        if a.dim() == 2:
            if yi is not None or xi is not None:
                raise ValueError(f"layer {layer!r} has no spatial output (shape {tuple(a.shape)}): leave y and x None")
            return a[rows, _index_tensor(ci, n, "unit", k, f"layer {layer!r} has {k} units", a.device)]
        if a.dim() != 4:
            raise ValueError(f"neuron() needs a 2-D or 4-D layer output; {layer!r} gives {tuple(a.shape)}")
        h, w = a.shape[2:]
        ch = _index_tensor(ci, n, "channel", k, f"layer {layer!r} has {k} channels", a.device)
        ys = _index_tensor(h // 2 if yi is None else yi, n, "y", h, f"the maps of {layer!r} are {h} x {w}", a.device)
        xs = _index_tensor(w // 2 if xi is None else xi, n, "x", w, f"the maps of {layer!r} are {h} x {w}", a.device)
        return a[rows, ch, ys, xs]

    pos = ""
    if yi is not None or xi is not None:
        pos = f"@{'c' if yi is None else _label(yi)},{'c' if xi is None else _label(xi)}"
    return Objective(fn, {layer}, False, f"{layer}:{_label(ci)}{pos}", n_list, {layer: _as_set(ci)})


def class_logit(k: Index) -> Objective:
    """Logit of class ``k`` -- the model's output before any softmax.

    Parameters
    ----------
    k : int or list of int
        Class index, 0 <= k < n_classes, or one per image (batch mode).

    Notes
    -----
    A model that ends in ``nn.Softmax`` / ``nn.LogSoftmax`` has that module bypassed during
    :func:`optimize` (with a ``UserWarning``): probabilities can be raised by lowering the
    other classes, and they saturate.

    Examples
    --------
    >>> class_logit(2)({}, torch.tensor([[0.0, 1.0, 5.0]]))
    tensor([5.])
    """
    idx = _check_index(k, "class")

    def fn(acts: dict[str, torch.Tensor], logits: torch.Tensor | None) -> torch.Tensor:
        if logits is None:
            raise ValueError("class_logit needs the model's logits")
        if logits.dim() != 2:
            raise ValueError(f"class_logit needs model outputs of shape B x n_classes, got {tuple(logits.shape)}")
        n, kk = logits.shape
        cls = _index_tensor(idx, n, "class", kk, f"the model has {kk} classes", logits.device)
        return logits[torch.arange(n, device=logits.device), cls]

    return Objective(fn, set(), True, f"class:{_label(idx)}", _list_len(idx))


# ---------------------------------------------------------------- starting images
def gray_noise(shape: Shape, batch: int = 1, seed: int = 0, amplitude: float = 20 / 255) -> torch.Tensor:
    """Gray image with uniform noise: ``0.5 + (rand - 0.5) * amplitude``.

    With the default amplitude this is the classic ``(rand - 0.5) * 20 + 128`` on 0..255.

    Parameters
    ----------
    shape : (C, H, W)
    batch : int
    seed : int
    amplitude : float
        Peak-to-peak size of the noise in display units (at most 1).

    Returns
    -------
    torch.Tensor
        batch x C x H x W in [0, 1], CPU float32.

    Examples
    --------
    >>> img = gray_noise((1, 28, 28), batch=2, seed=0)
    >>> img.shape, bool((img - 0.5).abs().max() <= 10 / 255)
    (torch.Size([2, 1, 28, 28]), True)
    """
    c, h, w = _check_shape(shape)
    batch = _check_int(batch, "batch", 1)
    amplitude = _check_float(amplitude, "amplitude", nonneg=True)
    if amplitude > 1:
        raise ValueError(f"amplitude must be in [0, 1] (display units), got {amplitude}")
    r = torch.rand(batch, c, h, w, generator=_generator(seed))
    return (GRAY + (r - 0.5) * amplitude).clamp_(0, 1)


def multiscale(
    shape: Shape,
    batch: int = 1,
    seed: int = 0,
    scales: Sequence[tuple[int, int]] = ((3, 3), (7, 7), (14, 14), (28, 28)),
    amplitudes: Sequence[float] = (0.2, 0.2, 0.0, 0.0),
    mode: Literal["bicubic", "bilinear"] = "bicubic",
) -> torch.Tensor:
    """Gray image plus random fluctuations at several length scales.

    For every scale ``(h_i, w_i)`` a random pattern ``U_i`` (uniform in [0, 1), h_i x w_i) is
    drawn and upsampled to H x W; the image is ``0.5 + sum_i amplitudes[i] * (U_i - 0.5)``,
    clamped to [0, 1]. Coarse scales give large blobs, the H x W scale pixel noise. A pattern
    is drawn for every scale, also one with amplitude 0, so changing one amplitude does not
    change the other patterns.

    Parameters
    ----------
    shape : (C, H, W)
    batch : int
    seed : int
    scales : sequence of (h, w)
        Resolutions of the random patterns.
    amplitudes : sequence of float
        Peak-to-peak size of each pattern in display units (same length as ``scales``).
    mode : {"bicubic", "bilinear"}
        Upsampling (``align_corners=False``).

    Returns
    -------
    torch.Tensor
        batch x C x H x W in [0, 1], CPU float32.

    Examples
    --------
    >>> multiscale((1, 28, 28), batch=3, seed=1).shape
    torch.Size([3, 1, 28, 28])
    """
    c, h, w = _check_shape(shape)
    batch = _check_int(batch, "batch", 1)
    scales = [tuple(s) for s in scales]
    amplitudes = [_check_float(a, "amplitude", nonneg=True) for a in amplitudes]
    if len(scales) != len(amplitudes):
        raise ValueError(f"scales and amplitudes must have the same length, got {len(scales)} and {len(amplitudes)}")
    if mode not in ("bicubic", "bilinear"):
        raise ValueError(f"mode must be 'bicubic' or 'bilinear', got {mode!r}")
    g = _generator(seed)
    img = torch.full((batch, c, h, w), GRAY)
    for (sh, sw), amp in zip(scales, amplitudes):
        sh, sw = _check_int(sh, "scale height", 1), _check_int(sw, "scale width", 1)
        u = torch.rand(batch, c, sh, sw, generator=g) - 0.5
        if (sh, sw) != (h, w):
            u = F.interpolate(u, size=(h, w), mode=mode, align_corners=False)
        img += amp * u
    return img.clamp_(0, 1)


def _check_init(init: torch.Tensor, shape: tuple[int, int, int] | None) -> torch.Tensor:
    if not isinstance(init, torch.Tensor) or not init.is_floating_point():
        desc = f"{init.dtype} tensor" if isinstance(init, torch.Tensor) else type(init).__name__
        raise ValueError(f"init must be a float tensor B x C x H x W in [0, 1], got {desc}")
    if init.dim() == 3:
        init = init.unsqueeze(0)
    if init.dim() != 4:
        raise ValueError(f"init must be B x C x H x W, got shape {tuple(init.shape)}")
    if shape is not None and tuple(init.shape[1:]) != tuple(shape):
        raise ValueError(f"init has image shape {tuple(init.shape[1:])}, but shape is {tuple(shape)}")
    lo, hi = float(init.min()), float(init.max())
    if lo < -1e-4 or hi > 1 + 1e-4 or not math.isfinite(lo + hi):
        raise ValueError(
            f"init must be in display space [0, 1], its values span {lo:.3g}..{hi:.3g}. "
            "Hint: undo the normalization first: img * std + mean."
        )
    return init.detach().float().clamp(0, 1)


# ---------------------------------------------------------------- parameterizations
ImageFn = Callable[[], torch.Tensor]


def pixel_param(
    shape: Shape,
    batch: int = 1,
    init: torch.Tensor | None = None,
    seed: int = 0,
    *,
    device: torch.device | str | None = None,
) -> tuple[list[torch.Tensor], ImageFn]:
    """Optimize the pixels themselves.

    Parameters
    ----------
    shape : (C, H, W)
    batch : int
    init : torch.Tensor, optional
        Starting image(s) B x C x H x W (or 1 x C x H x W, repeated) in [0, 1]; gray noise
        (:func:`gray_noise` with ``seed``) when None.
    seed : int
    device : torch.device or str, optional
        Where the parameters live (CPU by default).

    Returns
    -------
    params : list of torch.Tensor
        One leaf tensor B x C x H x W (``requires_grad``), the pixels in display space.
    image_fn : callable
        ``image_fn()`` returns ``params[0]`` itself: the pixels start in [0, 1] and
        :func:`optimize` projects them back into [0, 1] after every step (a loop of your own
        should do the same), so no clamp sits in the graph and a pixel at the border can move
        back.

    Examples
    --------
    >>> params, image_fn = pixel_param((1, 4, 4), batch=2)
    >>> params[0].shape, image_fn().shape
    (torch.Size([2, 1, 4, 4]), torch.Size([2, 1, 4, 4]))
    """
    c, h, w = _check_shape(shape)
    batch = _check_int(batch, "batch", 1)
    if init is None:
        x = gray_noise((c, h, w), batch, seed)
    else:
        x = _check_init(init, (c, h, w))
        if x.shape[0] == 1 and batch > 1:
            x = x.expand(batch, -1, -1, -1)
        elif x.shape[0] != batch:
            raise ValueError(f"init has {x.shape[0]} images, batch is {batch}")
    x = x.to(device).clone().requires_grad_(True)

    def image_fn() -> torch.Tensor:
        return x

    return [x], image_fn


#: Colour correlation of natural images (square root, from an SVD of ImageNet pixel
#: covariances, the values used by lucid/lucent); columns normalized to norm <= 1.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR_SQRT = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


def _spectrum_scale(h: int, w: int) -> torch.Tensor:
    """1/f scaling of the rfft2 coefficients (H x W//2+1), so all frequencies learn alike."""
    fy = torch.fft.fftfreq(h).view(-1, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    freqs = torch.sqrt(fx * fx + fy * fy)
    return (1.0 / freqs.clamp(min=1.0 / max(h, w))) * math.sqrt(h * w) / 4.0


def fourier_param(
    shape: Shape,
    batch: int = 1,
    seed: int = 0,
    decorrelate: bool = True,
    init: torch.Tensor | None = None,
    sd: float = 0.01,
    *,
    device: torch.device | str | None = None,
) -> tuple[list[torch.Tensor], ImageFn]:
    """Optimize the image's Fourier coefficients (scaled by 1/frequency), as in lucid/lucent.

    The image is ``sigmoid(M @ irfft2(spectrum * s))`` with ``s`` ~ 1/frequency, which
    favours smooth, low-frequency patterns; ``M`` is a fixed colour-decorrelation matrix
    (ImageNet statistics) when ``decorrelate`` and C == 3, else the identity (plain Fourier:
    for C != 3 ``decorrelate`` is ignored).

    Parameters
    ----------
    shape : (C, H, W)
    batch : int
    seed : int
    decorrelate : bool
    init : torch.Tensor, optional
        Starting image(s) B x C x H x W (or 1 x C x H x W) in [0, 1]: the spectrum is set so
        that ``image_fn()`` reproduces them (pixel values clamped to [0.001, 0.999] first, as
        the sigmoid never reaches 0 or 1). When None, the spectrum is N(0, sd^2) noise: an
        image close to 0.5 gray.
    sd : float
        Standard deviation of the random spectrum.
    device : torch.device or str, optional
        Where the parameters live (CPU by default).

    Returns
    -------
    params : list of torch.Tensor
        One leaf tensor B x C x H x (W//2+1) x 2 (real and imaginary parts).
    image_fn : callable
        ``image_fn()`` returns the B x C x H x W image in (0, 1).

    Examples
    --------
    >>> params, image_fn = fourier_param((3, 8, 8), batch=2)
    >>> params[0].shape, image_fn().shape
    (torch.Size([2, 3, 8, 5, 2]), torch.Size([2, 3, 8, 8]))
    """
    c, h, w = _check_shape(shape)
    batch = _check_int(batch, "batch", 1)
    sd = _check_float(sd, "sd", nonneg=True)
    s = _spectrum_scale(h, w)
    mix = _COLOR_SQRT if decorrelate and c == 3 else None
    if init is None:
        spec = torch.randn(batch, c, h, w // 2 + 1, 2, generator=_generator(seed)) * sd
    else:
        img = _check_init(init, (c, h, w))
        if img.shape[0] == 1 and batch > 1:
            img = img.expand(batch, -1, -1, -1)
        elif img.shape[0] != batch:
            raise ValueError(f"init has {img.shape[0]} images, batch is {batch}")
        z = torch.logit(img.clamp(_FOURIER_EPS, 1 - _FOURIER_EPS).double())
        if mix is not None:
            z = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(mix.double()), z)
        spec = torch.view_as_real(torch.fft.rfft2(z, norm="ortho") / s.double()).float()
    spec = spec.to(device).contiguous().requires_grad_(True)
    s = s.to(spec.device)
    if mix is not None:
        mix = mix.to(spec.device)

    def image_fn() -> torch.Tensor:
        z = torch.fft.irfft2(torch.view_as_complex(spec) * s, s=(h, w), norm="ortho")
        if mix is not None:
            z = torch.einsum("ij,bjhw->bihw", mix, z)
        return torch.sigmoid(z)

    return [spec], image_fn


# ---------------------------------------------------------------- transforms
Transform = Callable[..., torch.Tensor]


def _transform(fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor], seed: int) -> Transform:
    """Wrap ``fn(img, generator)`` as ``inner(img, generator=None)`` with its own seeded generator."""
    own = _generator(seed)

    def inner(img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return fn(img, own if generator is None else generator)

    inner.takes_generator = True  # type: ignore[attr-defined]
    return inner


def _apply(t: Callable[..., torch.Tensor], img: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if getattr(t, "takes_generator", False):
        return t(img, generator=generator)
    return t(img)


def _randint(n: int, g: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=g))


def jitter(d: int, *, seed: int = 0) -> Transform:
    """Random translation by up to ``d`` pixels in each direction; the shape is kept.

    The image is padded by ``d`` on every side (reflection, or replication when ``d`` is not
    smaller than H and W) and an H x W window at a random offset in 0..2d is cut out; the
    whole batch moves alike. ``d == 0`` is the identity.

    Returns
    -------
    callable
        ``fn(img, generator=None) -> img`` (B x C x H x W); random draws come from
        ``generator`` when given (:func:`optimize` passes its own), else from one seeded
        with ``seed``.

    Examples
    --------
    >>> jitter(2)(torch.rand(1, 3, 8, 8)).shape
    torch.Size([1, 3, 8, 8])
    """
    d = _check_int(d, "d", 0)

    def fn(img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if d == 0:
            return img
        h, w = img.shape[-2:]
        oy, ox = _randint(2 * d + 1, g), _randint(2 * d + 1, g)
        mode = "reflect" if d < h and d < w else "replicate"
        padded = F.pad(img, (d, d, d, d), mode=mode)
        return padded[..., oy : oy + h, ox : ox + w]

    return _transform(fn, seed)


def _affine(img: torch.Tensor, degrees: float, factor: float) -> torch.Tensor:
    """Rotate by ``degrees`` (counter-clockwise on screen) and zoom by ``factor`` about the
    centre, keeping H x W (bilinear, reflection at the borders)."""
    if degrees == 0 and factor == 1:
        return img
    n, _, h, w = img.shape
    a = math.radians(degrees)
    cos, sin = math.cos(a) / factor, math.sin(a) / factor
    # output pixel -> input position: rotate back by ``degrees`` (y points down on screen)
    theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=img.dtype, device=img.device)
    grid = F.affine_grid(theta.expand(n, 2, 3), list(img.shape), align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def scale(factors: Sequence[float], *, seed: int = 0) -> Transform:
    """Random zoom about the centre by a factor drawn from ``factors``; the shape is kept.

    A factor > 1 enlarges the content (the borders are cut off), < 1 shrinks it (the border is
    filled by reflection). A factor of 1 returns the image unchanged.

    Examples
    --------
    >>> img = torch.rand(2, 1, 8, 8)
    >>> torch.equal(scale([1.0])(img), img), scale([0.9, 1.1])(img).shape
    (True, torch.Size([2, 1, 8, 8]))
    """
    fs = [_check_float(f, "scale factor", positive=True) for f in factors]
    if not fs:
        raise ValueError("factors must not be empty")

    def fn(img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return _affine(img, 0.0, fs[_randint(len(fs), g)])

    return _transform(fn, seed)


def rotate(degrees: float | Sequence[float], *, seed: int = 0) -> Transform:
    """Random rotation about the centre; the shape is kept.

    Parameters
    ----------
    degrees : float or sequence of float
        A number ``d``: an angle uniform in [-d, d]; a sequence: one of its angles. Positive
        angles turn counter-clockwise on screen (90 is ``torch.rot90(img, 1, (-2, -1))``);
        an angle of 0 returns the image unchanged. Bilinear sampling, reflection at the
        borders.

    Examples
    --------
    >>> img = torch.rand(1, 1, 8, 8)
    >>> torch.equal(rotate([0])(img), img), rotate(10)(img).shape
    (True, torch.Size([1, 1, 8, 8]))
    """
    if isinstance(degrees, numbers.Real):
        span = _check_float(degrees, "degrees", nonneg=True)

        def draw(g: torch.Generator) -> float:
            return 0.0 if span == 0 else float(torch.rand(1, generator=g)) * 2 * span - span
    else:
        angles = [_check_float(a, "angle") for a in degrees]
        if not angles:
            raise ValueError("degrees must not be empty")

        def draw(g: torch.Generator) -> float:
            return angles[_randint(len(angles), g)]

    def fn(img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return _affine(img, draw(g), 1.0)

    return _transform(fn, seed)


def compose(transforms: Sequence[Callable[..., torch.Tensor]]) -> Transform:
    """Apply ``transforms`` in order; the generator is handed to each (those that take one).

    Examples
    --------
    >>> t = compose([jitter(1), scale([1.0, 1.05]), rotate(5)])
    >>> t(torch.rand(1, 1, 8, 8)).shape
    torch.Size([1, 1, 8, 8])
    """
    ts = list(transforms)
    for t in ts:
        if not callable(t):
            raise TypeError(f"every transform must be callable, got {type(t).__name__}")

    def inner(img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for t in ts:
            img = _apply(t, img, generator)
        return img

    inner.takes_generator = True  # type: ignore[attr-defined]
    return inner


# ---------------------------------------------------------------- penalties
class Penalty:
    """A per-image cost ``pen(img) -> (B,)`` that :func:`optimize` subtracts from the objective.

    Penalties add with ``+`` and scale with ``*``.

    Examples
    --------
    >>> pen = l2(1.0) + 0.5 * total_variation(1.0)
    >>> pen(torch.full((2, 1, 4, 4), 0.5))
    tensor([0., 0.])
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str = "penalty") -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = str(name)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.fn(img)

    def __repr__(self) -> str:
        return f"Penalty({self.name!r})"

    def __add__(self, other: Any) -> Penalty:
        if isinstance(other, Penalty):
            a, b = self, other
            return Penalty(lambda img: a(img) + b(img), f"{a.name} + {b.name}")
        if isinstance(other, numbers.Real) and other == 0:
            return self
        return NotImplemented

    __radd__ = __add__

    def __mul__(self, other: Any) -> Penalty:
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            k, a = float(other), self
            return Penalty(lambda img: a(img) * k, f"{k:g} * {a.name}")
        return NotImplemented

    __rmul__ = __mul__


def lp(p: float, weight: float = 1.0) -> Penalty:
    """``weight * mean(|img - 0.5| ** p)`` over C, H, W of each image.

    Zero for a uniformly gray image; measures how far the pixels stray from gray.

    Examples
    --------
    >>> lp(1, 2.0)(torch.ones(1, 1, 2, 2))  # |1 - 0.5| = 0.5, times 2
    tensor([1.])
    """
    p = _check_float(p, "p", positive=True)
    weight = _check_float(weight, "weight", nonneg=True)
    return Penalty(lambda img: weight * (img - GRAY).abs().pow(p).flatten(1).mean(1), f"L{p:g}({weight:g})")


def l2(weight: float = 1.0) -> Penalty:
    """``weight * mean((img - 0.5) ** 2)`` over C, H, W of each image (0 for gray).

    Examples
    --------
    >>> l2(1.0)(torch.zeros(1, 3, 2, 2))
    tensor([0.2500])
    """
    weight = _check_float(weight, "weight", nonneg=True)
    return Penalty(lambda img: weight * (img - GRAY).pow(2).flatten(1).mean(1), f"L2({weight:g})")


def total_variation(weight: float = 1.0) -> Penalty:
    """Anisotropic total variation: ``weight * (mean |dI/dx| + mean |dI/dy|)`` per image.

    The means run over all horizontal (resp. vertical) neighbour pairs of all channels: a
    constant image gives 0, a 0/1 checkerboard gives 2.

    Examples
    --------
    >>> board = (torch.arange(4).view(-1, 1) + torch.arange(4)).remainder(2).float().view(1, 1, 4, 4)
    >>> total_variation(1.0)(board)
    tensor([2.])
    """
    weight = _check_float(weight, "weight", nonneg=True)

    def fn(img: torch.Tensor) -> torch.Tensor:
        dx = (img[..., :, 1:] - img[..., :, :-1]).abs().flatten(1)
        dy = (img[..., 1:, :] - img[..., :-1, :]).abs().flatten(1)
        zero = img.new_zeros(img.shape[0])
        tx = dx.mean(1) if dx.shape[1] else zero
        ty = dy.mean(1) if dy.shape[1] else zero
        return weight * (tx + ty)

    return Penalty(fn, f"TV({weight:g})")


# ---------------------------------------------------------------- image operations
ImageOp = Callable[..., torch.Tensor]


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of each channel (B x C x H x W), kernel radius ``ceil(3 sigma)``.

    The kernel is normalized to sum 1 and the borders are replicated, so a constant image is
    unchanged. ``sigma == 0`` returns ``img``.

    Examples
    --------
    >>> delta = torch.zeros(1, 1, 9, 9); delta[0, 0, 4, 4] = 1.0
    >>> out = gaussian_blur(delta, 1.0)
    >>> round(float(out.sum()), 4), bool(out.max() < 0.2)
    (1.0, True)
    """
    sigma = _check_float(sigma, "sigma", nonneg=True)
    if sigma == 0:
        return img
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(device=img.device, dtype=img.dtype)
    c = img.shape[1]
    out = F.pad(img, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _image_op(fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], every: int, needs_grad: bool) -> ImageOp:
    def op(img: torch.Tensor, step: int = 0, grad: torch.Tensor | None = None) -> torch.Tensor:
        if (step + 1) % every:
            return img
        return fn(img, grad)

    op.every = every  # type: ignore[attr-defined]
    op.needs_grad = needs_grad  # type: ignore[attr-defined]
    return op


def blur_every(n: int, sigma: float) -> ImageOp:
    """Gaussian-blur the image after every ``n``-th step (a smoothness prior, Yosinski et al.).

    Returns
    -------
    callable
        ``op(img, step=0, grad=None) -> img``: for ``(step + 1) % n == 0`` (``step`` is the
        0-based index of the step just done) the blurred image (:func:`gaussian_blur`), else
        ``img`` itself. A constant image is unchanged; a single bright pixel spreads out.

    Examples
    --------
    >>> op = blur_every(2, 1.0)
    >>> img = torch.rand(1, 1, 8, 8)
    >>> op(img, step=0) is img, op(img, step=1).shape
    (True, torch.Size([1, 1, 8, 8]))
    """
    n = _check_int(n, "n", 1)
    sigma = _check_float(sigma, "sigma", nonneg=True)
    return _image_op(lambda img, grad: gaussian_blur(img, sigma), n, False)


def clip_weak_pixels(
    percentile: float, by: Literal["norm", "contribution"] = "norm", every: int = 1
) -> ImageOp:
    """Set the weakest pixels of each image back to gray (Yosinski et al. 2015).

    A pixel's strength is, over its channels, ``by="norm"``: the Euclidean norm of its
    deviation from gray, ``||img[:, y, x] - 0.5||``; ``by="contribution"``: its estimated
    contribution to the objective, ``sum_c |(img - 0.5) * grad|`` (``grad`` = gradient of the
    objective with respect to the image). The pixels of an image whose strength is strictly
    below the ``percentile``-th percentile of that image's strengths (linear interpolation,
    ``torch.quantile``) get their deviation from gray set to zero: they become 0.5.

    Parameters
    ----------
    percentile : float
        0..100; 0 clips nothing.
    by : {"norm", "contribution"}
    every : int
        Apply after every ``every``-th step.

    Returns
    -------
    callable
        ``op(img, step=0, grad=None) -> img``. ``by="contribution"`` needs ``grad`` (same shape
        as ``img``; :func:`optimize` passes it).

    Examples
    --------
    >>> img = 0.5 + torch.arange(4.0).view(1, 1, 2, 2) / 10
    >>> clip_weak_pixels(50)(img)  # strengths 0, .1, .2, .3; median .15
    tensor([[[[0.5000, 0.5000],
              [0.7000, 0.8000]]]])
    """
    percentile = _check_float(percentile, "percentile", nonneg=True)
    if percentile > 100:
        raise ValueError(f"percentile must be in 0..100, got {percentile}")
    if by not in ("norm", "contribution"):
        raise ValueError(f"by must be 'norm' or 'contribution', got {by!r}")
    every = _check_int(every, "every", 1)

    def fn(img: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        dev = img - GRAY
        if by == "norm":
            strength = dev.pow(2).sum(1).sqrt()
        else:
            if grad is None or grad.shape != img.shape:
                raise ValueError(
                    "clip_weak_pixels(by='contribution') needs grad, the gradient of the objective, shaped like img"
                )
            strength = (dev * grad).abs().sum(1)
        flat = strength.flatten(1)
        thr = torch.quantile(flat.double(), percentile / 100.0, dim=1).to(flat.dtype)
        keep = (strength >= thr.view(-1, 1, 1)).unsqueeze(1)
        return GRAY + dev * keep

    return _image_op(fn, every, by == "contribution")


# ---------------------------------------------------------------- forward machinery
class _StopForward(Exception):
    """Raised from a forward hook to end the pass once every needed layer has run."""


@contextlib.contextmanager
def _logits_only(model: nn.Module, warn: bool) -> Iterator[None]:
    """Within the block a final Softmax/LogSoftmax passes its input through."""
    last = final_softmax(model)
    if last is None:
        yield
        return
    if warn:
        warnings.warn(
            f"the model ends in {type(last).__name__}; class_logit uses the logits before the softmax "
            "(the module is bypassed during the optimization)",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )
    with replaced_forward(last, passthrough):
        yield


def _as_stats(v: Any, c: int, name: str, device: torch.device) -> torch.Tensor | None:
    if v is None:
        return None
    t = torch.as_tensor(v, dtype=torch.float32).flatten()
    if t.numel() not in (1, c):
        raise ValueError(f"{name} must have 1 or C = {c} values, got {t.numel()}")
    if name == "std" and bool((t <= 0).any()):
        raise ValueError(f"std must be > 0, got {t.tolist()}")
    return t.view(1, -1, 1, 1).to(device)


def _pruned_conv_forward(module: nn.Conv2d, channels: frozenset[int]) -> Callable[..., torch.Tensor] | None:
    """A ``forward`` for ``module`` that computes only ``channels`` (the rest stay 0).

    Used when the forward pass ends at this convolution and the objective reads only a few of
    its output channels: the kept filters are convolved, then placed into a zero tensor of the
    full B x K x h x w shape, so objectives index it as usual and their gradients are those of
    the full layer. Installed with :func:`~cnnwidgets.core.model.replaced_forward`, so other
    threads get the normal forward. None when the layer does not allow it or it is not worth it
    (grouped convolution, a subclass, more than half the channels, a channel out of range --
    the objective then reports that itself).
    """
    k = int(module.weight.shape[0])  # what the layer computes, whatever out_channels says
    if (
        type(module) is not nn.Conv2d
        or module.groups != 1
        or not hasattr(module, "_conv_forward")
        or not channels
        or len(channels) * 2 > k
        or min(channels) < 0
        or max(channels) >= k
        or module.weight.requires_grad
    ):
        return None
    sel = torch.tensor(sorted(channels), dtype=torch.long, device=module.weight.device)
    weight = module.weight.detach().index_select(0, sel).contiguous()
    bias = None if module.bias is None else module.bias.detach().index_select(0, sel)
    ordered = sorted(channels)
    lo_hi = (ordered[0], ordered[-1]) if ordered[-1] - ordered[0] + 1 == len(ordered) else None

    def forward(input: torch.Tensor) -> torch.Tensor:  # noqa: A002
        part = module._conv_forward(input, weight, bias)
        if lo_hi is not None:  # one channel, or a run of neighbours: zero padding on both sides
            return F.pad(part, (0, 0, 0, 0, lo_hi[0], k - 1 - lo_hi[1]))
        out = part.new_zeros(part.shape[0], k, *part.shape[2:])
        return out.index_copy(1, sel, part)

    return forward


#: On the CPU, images of at least this many pixels (H * W) go through the model in the
#: channels-last memory layout: on this project's 2-core machine 1.33x faster for a batch of 8
#: 3 x 128 x 128 images through VGG16's first seven convolutions (tests/bench/run.py, row
#: "channels-last vs NCHW layout"); for 28 x 28 inputs it was slightly slower, hence the threshold.
CHANNELS_LAST_MIN_PIXELS = 64 * 64

#: Models that raised a layout error on channels-last input (e.g. a ``.view`` of a
#: convolution's output): later runs go straight to NCHW.
_NEEDS_NCHW: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class _Runner:
    """Runs the model on display-space images and hands the objective what it needs.

    Forward hooks on the objective's layers (registered once, removed by :meth:`close` and
    by the surrounding :func:`preserved_state`) keep each layer's first output; without
    logits the pass stops right after the last needed layer. When that layer is a plain
    ``nn.Conv2d`` (the only layer the objective reads) and the objective names its channels,
    only those channels are computed (:func:`_pruned_conv_forward`). Large images use the
    channels-last layout on the CPU (:data:`CHANNELS_LAST_MIN_PIXELS`), unless the model
    rejects it (e.g. a ``.view`` of a convolution's output): then it is NCHW from there on.
    """

    def __init__(self, model: nn.Module, objective: Objective, c: int, mean: Any, std: Any) -> None:
        self.model = model
        self.objective = objective
        device = model_device(model)
        self.device = device
        self.mean = _as_stats(mean, c, "mean", device)
        self.std = _as_stats(std, c, "std", device)
        self.owner = threading.get_ident()
        self.channels_last = device.type == "cpu" and model not in _NEEDS_NCHW
        self.acts: dict[str, torch.Tensor] = {}
        self.handles = []
        layers = sorted(objective.layers)
        self.layers = layers
        for name in layers:
            module = get_layer(model, name)  # ValueError listing the valid names
            self.handles.append(module.register_forward_hook(self._make_hook(name)))
        self._patched: contextlib.AbstractContextManager | None = None
        if len(layers) == 1 and not objective.needs_logits and objective.channels is not None:
            module = get_layer(model, layers[0])
            forward = (_pruned_conv_forward(module, objective.channels.get(layers[0], frozenset()))
                       if isinstance(module, nn.Conv2d) and not has_own_forward(module) else None)
            if forward is not None:
                self._patched = replaced_forward(module, forward)
                self._patched.__enter__()

    def _make_hook(self, name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            if threading.get_ident() != self.owner or name in self.acts:
                return
            if not isinstance(out, torch.Tensor):
                raise ValueError(f"layer {name!r} outputs a {type(out).__name__}, not a tensor")
            self.acts[name] = out
            if not self.objective.needs_logits and len(self.acts) == len(self.layers):
                raise _StopForward
            # the forward pass goes on: keep a copy that later in-place operations cannot change
            self.acts[name] = out.clone()

        return hook

    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        x = img
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return x

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Objective values (B,) for display-space images (B x C x H x W)."""
        x = self.normalize(img)
        if self.channels_last and x.dim() == 4 and x.shape[2] * x.shape[3] >= CHANNELS_LAST_MIN_PIXELS:
            try:
                return self._values(img, x.contiguous(memory_format=torch.channels_last))
            except RuntimeError as exc:
                text = str(exc).lower()
                if "stride" not in text and "contiguous" not in text:
                    raise  # not about the memory layout: a real error, raised once
                self.channels_last = False  # e.g. a .view of a conv output: NCHW from now on
                _NEEDS_NCHW.add(self.model)
        return self._values(img, x)

    def _values(self, img: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.acts = {}
        if x is img:
            x = img.clone()  # a model that changes its input in place must not change ours
        logits = None
        try:
            out = self.model(x)
        except _StopForward:
            out = None
        if self.objective.needs_logits:
            if not isinstance(out, torch.Tensor):
                raise ValueError(f"class objectives need a tensor model output, got {type(out).__name__}")
            logits = out
        missing = [n for n in self.layers if n not in self.acts]
        if missing:
            raise ValueError(f"layer(s) {missing} did not run during the forward pass")
        acts, self.acts = self.acts, {}
        return self.objective(acts, logits)

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        if self._patched is not None:
            self._patched.__exit__(None, None, None)
            self._patched = None


@contextlib.contextmanager
def _prepared(
    model: nn.Module, objective: Objective, c: int, mean: Any, std: Any, warn: bool = True
) -> Iterator[_Runner]:
    """preserved_state, frozen parameters, softmax bypass (for logits) and the hooks."""
    check_model(model)
    if not isinstance(objective, Objective):
        raise TypeError(
            f"objective must be an Objective, got {type(objective).__name__}. "
            "Hint: build one with channel(), neuron() or class_logit()."
        )
    with contextlib.ExitStack() as stack:
        stack.enter_context(preserved_state(model))
        for p in model.parameters():
            p.requires_grad_(False)
        if objective.needs_logits:
            stack.enter_context(_logits_only(model, warn))
        runner = _Runner(model, objective, c, mean, std)
        stack.callback(runner.close)
        yield runner


# ---------------------------------------------------------------- results and schedules
def log_steps(total: int, n: int | None = None) -> list[int]:
    """Logarithmically spaced snapshot steps: 9, 18, 36, 72, ... below ``total``, plus ``total - 1``.

    Steps are 0-based, so ``total - 1`` is the last step of a run of ``total`` steps (the
    classic study's "step 599 finalized" for 600 epochs).

    Parameters
    ----------
    total : int
        Number of steps of the run (>= 1).
    n : int, optional
        At most this many doubling steps before the last one (the classic study's 6
        intermediate reports); all below ``total - 1`` when None.

    Examples
    --------
    >>> log_steps(600)
    [9, 18, 36, 72, 144, 288, 576, 599]
    >>> log_steps(600, n=6)
    [9, 18, 36, 72, 144, 288, 599]
    >>> log_steps(5)
    [4]
    """
    total = _check_int(total, "total", 1)
    limit = None if n is None else _check_int(n, "n", 0)
    out = []
    s = 9
    while s < total - 1 and (limit is None or len(out) < limit):
        out.append(s)
        s *= 2
    out.append(total - 1)
    return out


@dataclass(eq=False)
class OIPResult:
    """Outcome of :func:`optimize`.

    Attributes
    ----------
    images : torch.Tensor
        B x C x H x W float in [0, 1], CPU: the images after the last step.
    history : list of float
        Mean objective over the batch at every step done (``len == steps_done``).
    per_image : torch.Tensor
        steps_done x B, CPU: the objective of every image at every step. Row ``k`` is the value
        of the image that entered step ``k`` (with that step's random transform), before its
        update.
    snapshots : dict of int to torch.Tensor
        Step ``k`` -> B x C x H x W (CPU): the images right after step ``k``'s update.
    steps_done : int
        Number of steps (updates) done.
    converged : bool
        The convergence criterion ended the run.
    stopped : bool
        ``stop.is_set()`` or the callback ended the run.
    initial : torch.Tensor
        B x C x H x W, CPU: the starting images.
    final_values : torch.Tensor
        (B,), CPU: the objective of ``images`` (without transforms or penalties).

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3))
    >>> res = optimize(net, channel("0", 1), (1, 8, 8), steps=3)
    >>> res.steps_done, res.per_image.shape
    (3, torch.Size([3, 1]))
    """

    images: torch.Tensor
    history: list[float]
    per_image: torch.Tensor
    snapshots: dict[int, torch.Tensor]
    steps_done: int
    converged: bool = False
    stopped: bool = False
    initial: torch.Tensor | None = None
    final_values: torch.Tensor | None = None
    objective: str = ""

    @property
    def dead(self) -> torch.Tensor:
        """(B,) bool: images whose objective was exactly 0 at every step (a dead target)."""
        if self.per_image.numel() == 0:
            return torch.zeros(self.images.shape[0], dtype=torch.bool)
        return (self.per_image == 0).all(dim=0)

    def __repr__(self) -> str:
        last = f"{self.history[-1]:.4g}" if self.history else "-"
        return (
            f"OIPResult(objective={self.objective!r}, images={tuple(self.images.shape)}, "
            f"steps_done={self.steps_done}, last_value={last}, converged={self.converged}, "
            f"stopped={self.stopped}, snapshots={sorted(self.snapshots)})"
        )


def _resolve_batch(batch: Any, objective: Objective, init: Any) -> int:
    batch = _check_int(batch, "batch", 1)
    sources = {}
    if batch != 1:
        sources["batch"] = batch
    if objective.batch_size is not None:
        sources["the objective's target list"] = objective.batch_size
    if isinstance(init, torch.Tensor) and init.dim() == 4 and init.shape[0] != 1:
        sources["init"] = init.shape[0]
    sizes = set(sources.values())
    if len(sizes) > 1:
        desc = ", ".join(f"{k} = {v}" for k, v in sources.items())
        raise ValueError(f"inconsistent batch sizes: {desc}")
    return sizes.pop() if sizes else 1


def _start_image(
    init: Any, shape: tuple[int, int, int], batch: int, seed: int, init_kw: Mapping[str, Any]
) -> torch.Tensor | None:
    if init is None:
        return None
    if isinstance(init, torch.Tensor):
        return init
    if init == "gray":
        return gray_noise(shape, batch, seed, **init_kw)
    if init == "multiscale":
        return multiscale(shape, batch, seed, **init_kw)
    raise ValueError(f"init must be None, a tensor or one of {', '.join(repr(i) for i in INITS)}; got {init!r}")


def _snapshot_steps(snapshots: Any, steps: int) -> tuple[set[int], bool]:
    """(steps to snapshot, whether to snapshot the last step done)."""
    if snapshots is None:
        return set(), False
    if isinstance(snapshots, str):
        if snapshots != "log":
            raise ValueError(f"snapshots must be 'log', a list of steps or None; got {snapshots!r}")
        return set(log_steps(steps)), True
    return {_check_int(s, "snapshot step", 0) for s in snapshots}, False


def _check_converge(converge: Any) -> tuple[int, float, float] | None:
    if converge is None:
        return None
    if not isinstance(converge, Mapping):
        raise TypeError(f"converge must be a dict like {{'window': 20, 'rtol': 1e-4}} or None, got {converge!r}")
    unknown = set(converge) - {"window", "rtol", "atol"}
    if unknown:
        raise ValueError(f"unknown converge keys {sorted(unknown)}; valid: 'window', 'rtol', 'atol'")
    window = _check_int(converge.get("window", 20), "converge window", 1)
    rtol = _check_float(converge.get("rtol", 1e-4), "converge rtol", nonneg=True)
    atol = _check_float(converge.get("atol", 1e-12), "converge atol", positive=True)
    return window, rtol, atol


def _rms_step(params: list[torch.Tensor], grads: list[torch.Tensor], lr: float) -> None:
    """``p += lr * g / (rms(g) + 1e-8)``, with the RMS taken over each image's parameters."""
    if len(grads) == 1:  # the usual case: one tensor of pixels or coefficients
        rms = grads[0].pow(2).flatten(1).mean(1).sqrt()
    else:
        sumsq = sum(g.pow(2).flatten(1).sum(1) for g in grads)
        rms = (sumsq / sum(g[0].numel() for g in grads)).sqrt()
    for p, g in zip(params, grads):
        p.add_(g / (rms.view(-1, *([1] * (g.dim() - 1))) + 1e-8), alpha=lr)


class _Adam:
    """Adam ascent (``maximize=True``) through torch's functional ``torch.optim.adam.adam``.

    ``torch.optim.Adam(...)`` imports ``torch._dynamo`` on first construction, which takes
    seconds -- a freeze the first time a widget switches to Adam. The functional form is the
    same torch code without that import; if its (semi-private) signature ever changes, this
    falls back to ``torch.optim.Adam``.
    """

    def __init__(self, params: list[torch.Tensor], lr: float) -> None:
        self.params = params
        self.lr = lr
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.state_steps = [torch.tensor(0.0) for _ in params]
        self.fallback: torch.optim.Optimizer | None = None

    def step(self, grads: list[torch.Tensor]) -> None:
        if self.fallback is None:
            try:
                from torch.optim.adam import adam

                adam(
                    self.params, grads, self.exp_avg, self.exp_avg_sq, [], self.state_steps,
                    foreach=False, capturable=False, differentiable=False, fused=None,
                    grad_scale=None, found_inf=None, has_complex=False, amsgrad=False,
                    beta1=0.9, beta2=0.999, lr=self.lr, weight_decay=0.0, eps=1e-8, maximize=True,
                )
                return
            except (ImportError, TypeError):
                if any(float(t) for t in self.state_steps):  # failed mid-run: cannot switch
                    raise
                self.fallback = torch.optim.Adam(self.params, lr=self.lr, maximize=True)
        for p, g in zip(self.params, grads):
            p.grad = g
        self.fallback.step()
        for p in self.params:
            p.grad = None


# ---------------------------------------------------------------- optimize
def optimize(
    model: nn.Module,
    objective: Objective,
    shape: Shape,
    *,
    batch: int = 1,
    steps: int = 200,
    lr: float = 0.05,
    step_rule: StepRule = "rms",
    param: ParamName = "pixel",
    init: torch.Tensor | InitName | None = None,
    transforms: Sequence[Callable[..., torch.Tensor]] = (),
    penalties: Sequence[Callable[[torch.Tensor], torch.Tensor]] = (),
    image_ops: Sequence[ImageOp] = (),
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    seed: int = 0,
    snapshots: Literal["log"] | Sequence[int] | None = "log",
    converge: Mapping[str, float] | None = None,
    callback: Callable[[int, torch.Tensor, Callable[[], torch.Tensor]], bool | None] | None = None,
    stop: Any = None,
    init_kw: Mapping[str, Any] | None = None,
) -> OIPResult:
    """Gradient ascent on the input image: find patterns that maximize ``objective``.

    Every step ``k`` (0-based): ``img = image_fn()``; the transforms (random each step) are
    applied; the model sees ``(t(img) - mean) / std``; the objective minus the penalties (on
    the untransformed ``img``) is differentiated with respect to the parameters, which move
    uphill by ``step_rule``; the pixels are projected back into [0, 1] and the image
    operations run (pixel parameterization); the snapshot is taken; ``callback`` is called.

    Parameters
    ----------
    model : nn.Module
        Any model; it runs on its own device, in eval mode, with frozen parameters, and only
        as deep as needed (the pass stops after the objective's last layer unless it needs
        logits).
    objective : Objective
        See :func:`channel`, :func:`neuron`, :func:`class_logit`; combine with ``+ - *``.
    shape : (C, H, W)
        Image size the model expects, e.g. ``(1, 28, 28)``.
    batch : int
        Number of images B optimized at once (independently). Left at 1, it is taken from a
        batch-mode objective's target list or from an ``init`` tensor with B rows.
    steps : int
        Maximum number of steps (> 0).
    lr : float
        Step size (> 0). ``"rms"``: each image moves by ``lr`` in RMS over its parameters
        (display units, 0..1, for pixels). ``"adam"``: Adam's learning rate.
    step_rule : {"rms", "adam"}
        ``"rms"``: ``x += lr * g / (sqrt(mean(g ** 2)) + 1e-8)`` per image, the gradient
        normalized by its RMS (the classic OIP update). ``"adam"``: torch's Adam
        (betas 0.9, 0.999; eps 1e-8) with ``maximize=True``.
    param : {"pixel", "fourier"}
        :func:`pixel_param` or :func:`fourier_param` (decorrelated colour for C == 3).
    init : None, "gray", "multiscale" or torch.Tensor
        Starting image: None = gray noise for pixels (:func:`gray_noise`) and a small random
        spectrum for Fourier; "gray" / "multiscale" with ``init_kw`` (e.g. ``amplitudes``);
        or a tensor B x C x H x W (or 1 x C x H x W) in display space [0, 1], e.g. dataset
        images un-normalized with ``img * std + mean``.
    transforms : sequence of callables
        ``fn(img) -> img``, applied in order every step (:func:`jitter`, :func:`scale`,
        :func:`rotate`, :func:`compose`); their random draws come from a generator seeded
        with ``seed``. They must keep the shape the model needs.
    penalties : sequence of callables
        ``pen(img) -> (B,)`` subtracted from the objective (:func:`l2`, :func:`lp`,
        :func:`total_variation`).
    image_ops : sequence of callables
        ``op(img, step, grad) -> img`` applied to the pixels after each update
        (:func:`blur_every`, :func:`clip_weak_pixels`); pixel parameterization only.
    mean, std : float or sequence of float, optional
        Per-channel normalization the model expects.
    seed : int
        Seeds the starting image and the transforms: the same seed gives the same result
        (bitwise on CPU).
    snapshots : "log", list of int or None
        Steps after which to keep a copy of the images: "log" = :func:`log_steps` (9, 18, 36,
        ...) plus the last step done.
    converge : dict, optional
        ``{"window": w, "rtol": r, "atol": a}`` (defaults 20, 1e-4, 1e-12): stop once, for
        every image, ``|v[k] - v[k - w]| <= r * w * max(|v[k]|, a)`` -- the relative change
        per step over the last ``w`` steps is below ``r``. (A target that stays exactly 0
        counts as converged.)
    callback : callable, optional
        ``callback(step, values, image_fn)`` after every step: ``values`` (B,) CPU objective
        values of the step, ``image_fn()`` the current images (B x C x H x W, CPU, in [0, 1],
        computed only when called). Return True to stop.
    stop : object with ``is_set()``, optional
        E.g. a ``threading.Event``; checked before every step, so setting it from another
        thread ends the run within one step.
    init_kw : dict, optional
        Keyword arguments for the named ``init`` (:func:`gray_noise` ``amplitude``;
        :func:`multiscale` ``scales``, ``amplitudes``, ``mode``).

    Returns
    -------
    OIPResult

    Raises
    ------
    ValueError
        Unknown layer (the message lists valid names), a channel/unit/class out of range
        (the message names 0..K-1), ``steps <= 0``, ``lr <= 0``, bad choices or shapes.

    Notes
    -----
    Runs under :func:`~cnnwidgets.core.model.preserved_state`: the model's training flags
    and ``requires_grad`` flags are restored and no hook remains, also after an error.

    Examples
    --------
    >>> _ = torch.manual_seed(0)  # some random nets have every unit of class 2 dead at the start
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    >>> res = optimize(net, class_logit(2), (1, 8, 8), steps=5, snapshots=None)
    >>> res.history[-1] > res.history[0]
    True
    """
    check_model(model)
    if not isinstance(objective, Objective):
        raise TypeError(
            f"objective must be an Objective, got {type(objective).__name__}. "
            "Hint: build one with channel(), neuron() or class_logit()."
        )
    shape = _check_shape(shape)
    steps = _check_int(steps, "steps")
    if steps <= 0:
        raise ValueError(f"steps must be >= 1, got {steps}")
    lr = _check_float(lr, "lr")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if step_rule not in STEP_RULES:
        raise ValueError(f"step_rule must be one of {', '.join(repr(s) for s in STEP_RULES)}; got {step_rule!r}")
    if param not in PARAMS:
        raise ValueError(f"param must be one of {', '.join(repr(p) for p in PARAMS)}; got {param!r}")
    seed = _check_int(seed, "seed")
    for t in transforms:
        if not callable(t):
            raise TypeError(f"every transform must be callable, got {type(t).__name__}")
    for pen in penalties:
        if not callable(pen):
            raise TypeError(f"every penalty must be callable, got {type(pen).__name__}")
    for op in image_ops:
        if not callable(op):
            raise TypeError(f"every image op must be callable, got {type(op).__name__}")
    if image_ops and param != "pixel":
        raise ValueError("image_ops act on the pixels: use param='pixel'")
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise TypeError("stop must have an is_set() method, e.g. a threading.Event")
    conv = _check_converge(converge)
    snap_steps, snap_last = _snapshot_steps(snapshots, steps)
    batch = _resolve_batch(batch, objective, init)
    if init_kw and not isinstance(init, str):
        raise ValueError("init_kw applies to init='gray' or 'multiscale'")
    start = _start_image(init, shape, batch, seed, init_kw or {})
    for name in objective.layers:
        get_layer(model, name)  # unknown layer: ValueError with the valid names, before any work

    device = model_device(model)
    if param == "pixel":
        params, image_fn = pixel_param(shape, batch, start, seed, device=device)
    else:
        params, image_fn = fourier_param(shape, batch, seed, init=start, device=device)
    pix = params[0]

    gen = _generator(seed + 1)  # transforms; not the start image's stream
    optimizer = _Adam(params, lr) if step_rule == "adam" else None

    def current() -> torch.Tensor:
        with torch.no_grad():
            return image_fn().detach().to("cpu", torch.float32).clone()

    per_image: list[torch.Tensor] = []
    snaps: dict[int, torch.Tensor] = {}
    converged = stopped = False
    done = 0
    initial = current()
    with _prepared(model, objective, shape[0], mean, std) as run, torch.enable_grad():
        for k in range(steps):
            if stop is not None and stop.is_set():
                stopped = True
                break
            img = image_fn()
            if (transforms or penalties) and img.is_leaf:
                img = img.clone()  # the pixels themselves: user code may change its input in place
            seen = img
            for t in transforms:
                seen = _apply(t, seen, gen)
            values = run(seen)
            if values.shape[0] != batch:
                raise ValueError(f"objective gave {values.shape[0]} values for a batch of {batch}")
            total = values
            for pen in penalties:
                total = total - pen(img)
            if total.requires_grad:
                grads = torch.autograd.grad(total.sum(), params, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            else:  # the objective does not depend on the image
                grads = [torch.zeros_like(p) for p in params]
            with torch.no_grad():
                if optimizer is None:
                    _rms_step(params, grads, lr)
                else:
                    optimizer.step(grads)
                if param == "pixel":
                    pix.clamp_(0, 1)
                    for op in image_ops:
                        pix.copy_(op(pix.detach(), k, grads[0]).clamp(0, 1))
            done = k + 1
            vals = values.detach().to("cpu", torch.float32)
            per_image.append(vals)
            if k in snap_steps:
                snaps[k] = current()
            if callback is not None and callback(k, vals.clone(), current):
                stopped = True
                break
            if conv is not None and len(per_image) > conv[0]:
                w, rtol, atol = conv
                now, then = per_image[-1], per_image[-1 - w]
                if bool(((now - then).abs() <= rtol * w * now.abs().clamp(min=atol)).all()):
                    converged = True
                    break
        images = current()
        with torch.no_grad():
            final_values = run(image_fn()).detach().to("cpu", torch.float32)
    if snap_last and done > 0 and (done - 1) not in snaps:
        snaps[done - 1] = images.clone()
    table = torch.stack(per_image) if per_image else torch.zeros(0, batch)
    return OIPResult(
        images=images,
        history=table.mean(dim=1).tolist(),
        per_image=table,
        snapshots=dict(sorted(snaps.items())),
        steps_done=done,
        converged=converged,
        stopped=stopped,
        initial=initial,
        final_values=final_values,
        objective=objective.name,
    )


# ---------------------------------------------------------------- precursor scan, class check
def _pre_relu_hint(model: nn.Module, objective: Objective) -> str:
    """' (e.g. 'features.6' for 'features.7')' when a target layer is a ReLU after a layer."""
    layers = named_layers(model)
    names = [n for n, m in layers.items() if not any(True for _ in m.children())]
    hints = []
    for n in sorted(objective.layers):
        if isinstance(layers.get(n), nn.ReLU) and n in names:
            i = names.index(n)
            if i > 0:
                hints.append(f"{names[i - 1]!r} instead of {n!r}")
    return f" ({', '.join(hints)})" if hints else ""


def precursor_scan(
    model: nn.Module,
    objective: Objective,
    shape: Shape,
    *,
    candidates: int = 16,
    init: InitName = "gray",
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    seed: int = 0,
    chunk: int = 256,
    **init_kw: Any,
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Try ``candidates`` random starting images and keep the one the target likes best.

    The classic remedy for maps that stay at zero from a given start: before optimizing,
    evaluate the objective on K random images (:func:`gray_noise` or :func:`multiscale`
    with ``seed`` and ``init_kw``) and start from the best.

    Parameters
    ----------
    model, objective, shape, mean, std
        As for :func:`optimize`; the objective must have one target for all images (not a
        batch-mode list).
    candidates : int
        K, the number of starting images.
    init : {"gray", "multiscale"}
    seed : int
    chunk : int
        Images per forward pass.
    **init_kw
        For the starting images, e.g. ``amplitudes=(0.5, 0.5, 0.2, 0.1)``.

    Returns
    -------
    best : torch.Tensor
        1 x C x H x W, CPU, in [0, 1]: the candidate with the largest objective (the first
        one on ties). Pass it as ``init`` to :func:`optimize`.
    best_value : float
    values : torch.Tensor
        (K,), CPU: the objective of every candidate.

    Raises
    ------
    DeadTargetError
        If the objective is exactly 0 for every candidate (a dead map for this kind of
        input, e.g. a ReLU map that never turns on).

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> best, value, values = precursor_scan(net, channel("0", 0), (1, 8, 8), candidates=4)
    >>> best.shape, values.shape, value == float(values.max())
    (torch.Size([1, 1, 8, 8]), torch.Size([4]), True)
    """
    check_model(model)
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be an Objective, got {type(objective).__name__}")
    if objective.batch_size is not None:
        raise ValueError("precursor_scan needs an objective with one target for every image, not a batch-mode list")
    shape = _check_shape(shape)
    candidates = _check_int(candidates, "candidates", 1)
    chunk = _check_int(chunk, "chunk", 1)
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(repr(i) for i in INITS)}; got {init!r}")
    for name in objective.layers:
        get_layer(model, name)
    imgs = _start_image(init, shape, candidates, seed, init_kw)
    assert imgs is not None
    device = model_device(model)
    parts = []
    with _prepared(model, objective, shape[0], mean, std) as run, torch.no_grad():
        for i in range(0, candidates, chunk):
            parts.append(run(imgs[i : i + chunk].to(device)).detach().to("cpu", torch.float32))
    values = torch.cat(parts)
    if bool((values == 0).all()):
        raise DeadTargetError(
            f"objective {objective.name!r} is exactly 0 for all {candidates} {init!r} starting images: "
            "a dead map for this kind of input (e.g. a ReLU map that never turns on), so there is no "
            "gradient to follow. Try another starting-image strategy (init='multiscale' with larger "
            "amplitudes, e.g. amplitudes=(0.5, 0.5, 0.3, 0.1)), another channel, or the pre-ReLU "
            f"convolution layer{_pre_relu_hint(model, objective)}."
        )
    best = int(values.argmax())
    return imgs[best : best + 1].clone(), float(values[best]), values


def class_probabilities(
    model: nn.Module,
    images: torch.Tensor,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
) -> torch.Tensor:
    """Softmax of the model's logits for display-space images (the "fooled with confidence" check).

    Parameters
    ----------
    model : nn.Module
        A classifier returning B x K logits (a final Softmax/LogSoftmax is bypassed and the
        softmax applied here, so the result is a probability either way).
    images : torch.Tensor
        B x C x H x W in [0, 1], e.g. ``OIPResult.images``.
    mean, std : optional
        Normalization the model expects.

    Returns
    -------
    torch.Tensor
        B x K probabilities (rows sum to 1), CPU.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> p = class_probabilities(net, torch.rand(2, 1, 4, 4))
    >>> p.shape, torch.allclose(p.sum(dim=1), torch.ones(2))
    (torch.Size([2, 3]), True)
    """
    check_model(model)
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() != 4:
        desc = f"shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor B x C x H x W in [0, 1], got {desc}")
    device = model_device(model)
    c = images.shape[1]
    m = _as_stats(mean, c, "mean", device)
    s = _as_stats(std, c, "std", device)
    x = images.detach().to(device, torch.float32).clone()
    if m is not None:
        x = x - m
    if s is not None:
        x = x / s
    with preserved_state(model), _logits_only(model, warn=False), torch.no_grad():
        out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        desc = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return B x K logits, got {desc}")
    return torch.softmax(out.float(), dim=1).cpu()
