"""Objectives: per-image quantities :func:`~cnnwidgets.core.optimize.optimize` maximizes.

An :class:`Objective` is ``obj(acts, logits) -> (B,)``: :func:`channel` (the mean of a
feature map), :func:`neuron` (one position of it, or one unit of a linear layer),
:func:`class_logit` and :func:`diversity` (how different the images of a batch are, lucent's
objective); ``+ - * /`` combine them.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch
import torch.nn.functional as F

from ._common import Index, _check_index

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


def diversity(layer: str) -> Objective:
    """How different the images of a batch are: lucent's ``objectives.diversity``.

    Each image's Gram matrix of ``layer``'s activations, ``G_b = A_b A_b^T`` with ``A_b`` the
    K x (h*w) feature maps (the channels' correlations: the image's "style"), is normalized to
    unit Frobenius norm; the value of image ``b`` is minus the sum of its cosine similarities to
    the other images, ``-sum_{j != b} <G_b, G_j>``. Added to an objective, it pushes the images
    of one batch apart (Olah et al. 2017, "Feature Visualization", section Diversity), e.g. four
    different patterns that all drive one channel::

        channel("features.6", 5) + 2.0 * diversity("features.6")   # batch=4

    The batch mean of the values is lucent's ``diversity(layer)``
    (``-sum_i sum_{j != i} <G_i, G_j> / B``), and ``obj + w * diversity(layer)`` here is
    lucent's ``obj - w * diversity(layer)`` (lucent's objectives are losses, but its diversity
    keeps lucid's sign): the same gradients up to the factor B that :func:`optimize` (which
    sums the images' values) applies to every term alike, so lucent's weights carry over. A
    batch of one image has the value 0 (nothing to differ from).

    Parameters
    ----------
    layer : str
        Qualified layer name with a 4-D output (B x K x h x w); often the target's layer or one
        below it.

    Returns
    -------
    Objective
        Value (B,) in [-(B - 1), 0] for non-negative activations (e.g. after a ReLU).

    Examples
    --------
    >>> a = torch.zeros(3, 2, 1, 2)
    >>> a[0, 0] = a[1, 0] = a[2, 1] = 1.0  # images 0 and 1 alike, image 2 different
    >>> diversity("conv")({"conv": a}, None)
    tensor([-1., -1., -0.])
    """
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a qualified module name (str), got {type(layer).__name__}")

    def fn(acts: dict[str, torch.Tensor], logits: torch.Tensor | None) -> torch.Tensor:
        a = _layer_output(acts, layer)
        if a.dim() != 4:
            raise ValueError(f"diversity() needs a 4-D layer output B x K x h x w; {layer!r} gives {tuple(a.shape)}")
        b, k = a.shape[:2]
        flat = a.reshape(b, k, -1)
        grams = F.normalize(torch.bmm(flat, flat.transpose(1, 2)).reshape(b, -1), p=2, dim=1)
        sims = grams @ grams.T  # B x B cosine similarities
        others = ~torch.eye(b, dtype=torch.bool, device=a.device)
        return -(sims * others).sum(dim=1)

    # reads every channel of the layer (channels=None): no pruning of its convolution
    return Objective(fn, {layer}, False, f"diversity:{layer}")
