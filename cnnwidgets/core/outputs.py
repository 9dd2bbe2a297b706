"""Model outputs: which tensor holds the scores, and how it reads as classes.

A model may return one tensor, or a tuple, list, dict or named tuple of them (a detector's
boxes and scores, a segmentation net's ``{"out": ..., "aux": ...}``). :func:`select_output`
picks the tensor that holds the scores, given ``output=``: an index, a key (or attribute
name), or a callable from the model's output to the tensor. Without ``output`` a structured
output is refused with a ValueError that prints the structure and an example call.

:class:`Head` then says how that tensor reads as classes:

================  ======================  =================================  ==========================
kind              tensor                  score of class k (gradients)       probabilities (display)
================  ======================  =================================  ==========================
``classes``       N x K logits            ``t[:, k]``                        softmax
``multilabel``    N x K before a Sigmoid  ``t[:, k]``                        sigmoid of each class
``binary``        N x 1 (or N) logit z    ``-z`` (class 0), ``z`` (class 1)  ``1 - sigmoid(z)``, ``sigmoid(z)``
``segmentation``  N x K x H x W           mean of ``t[:, k]`` over the       share of the pixels whose
                                          pixels (or over a region)          top class is k
================  ======================  =================================  ==========================

A final ``nn.Softmax``/``nn.LogSoftmax``/``nn.Sigmoid`` module is bypassed while the model
runs for scores (:func:`~cnnwidgets.core.runner.logits_only`) and applied once here, for
display. Plain torch; no widget imports.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F

__all__ = ["Head", "HeadKind", "OutputSelector", "check_output", "describe_output", "region_mask", "select_output"]

#: ``output=``: an index, a key or attribute name, a callable, or None for a plain tensor.
OutputSelector = Union[int, str, Callable[[Any], Any], None]
HeadKind = Literal["classes", "multilabel", "binary", "segmentation"]


def check_output(output: Any) -> OutputSelector:
    """``output`` if it is a valid selector, else a TypeError saying what is accepted."""
    if output is None or callable(output) or isinstance(output, str):
        return output
    if isinstance(output, bool):
        raise TypeError(f"output must be an index, a key, a callable or None, got bool {output!r}")
    try:
        return operator.index(output)
    except TypeError:
        raise TypeError(
            f"output must be an index (int), a key (str), a callable taking the model's output, or None; "
            f"got {type(output).__name__} {output!r}"
        ) from None


def _describe(out: Any, depth: int) -> str:
    if isinstance(out, torch.Tensor):
        shape = " x ".join(str(s) for s in out.shape) or "scalar"
        return f"tensor {shape}"
    if depth >= 2:
        return type(out).__name__
    fields = getattr(type(out), "_fields", None)
    if isinstance(out, tuple) and fields:
        inner = ", ".join(f"{f}: {_describe(v, depth + 1)}" for f, v in zip(fields, out))
        return f"{type(out).__name__}({inner})"
    if isinstance(out, (tuple, list)):
        inner = ", ".join(f"[{i}] {_describe(v, depth + 1)}" for i, v in enumerate(out))
        return f"a {type(out).__name__} of {len(out)}: {inner}"
    if isinstance(out, Mapping):
        inner = ", ".join(f"{k!r}: {_describe(v, depth + 1)}" for k, v in out.items())
        return f"a {type(out).__name__} {{{inner}}}"
    return type(out).__name__


def describe_output(out: Any) -> str:
    """One line for a model's output structure, each tensor with its shape.

    Examples
    --------
    >>> describe_output((torch.zeros(8, 4), torch.zeros(8, 2)))
    'a tuple of 2: [0] tensor 8 x 4, [1] tensor 8 x 2'
    >>> describe_output({"out": torch.zeros(2, 3, 5, 5)})
    "a dict {'out': tensor 2 x 3 x 5 x 5}"
    """
    return _describe(out, 0)


def _example_selector(out: Any) -> str:
    """An ``output=`` that picks a score-like tensor of ``out``, for error messages."""
    fields = getattr(type(out), "_fields", None)
    if isinstance(out, Mapping):
        items = list(out.items())
    elif isinstance(out, tuple) and fields:
        items = list(zip(fields, out))
    elif isinstance(out, (tuple, list)):
        items = list(enumerate(out))
    else:
        return "lambda out: out.logits"
    tensors = [(k, v) for k, v in items if isinstance(v, torch.Tensor)]
    for want in ("logits", "scores", "out"):
        for k, _ in tensors:
            if k == want:
                return repr(k)
    return repr(tensors[-1][0]) if tensors else "0"


def select_output(out: Any, output: OutputSelector = None) -> torch.Tensor:
    """The tensor of the model's output ``out`` that holds the scores.

    Parameters
    ----------
    out : tensor or structure
        What the model returned.
    output : int, str, callable or None
        None: ``out`` must be a tensor. An int indexes a tuple or list (or is a dict key), a
        str is a dict key or an attribute (a named tuple's field, ``ModelOutput.logits``), a
        callable maps ``out`` to the tensor.

    Raises
    ------
    ValueError
        A structured output without ``output`` (the message shows the structure and an
        example), an index or key the output does not have, a selection that is no tensor.

    Examples
    --------
    >>> boxes, scores = torch.zeros(2, 4), torch.ones(2, 3)
    >>> select_output((boxes, scores), 1).shape
    torch.Size([2, 3])
    >>> select_output({"out": scores}, "out") is scores
    True
    """
    if output is None:
        if isinstance(out, torch.Tensor):
            return out
        raise ValueError(
            f"the model returns {describe_output(out)}; say which tensor holds the class scores with "
            f"output=, e.g. output={_example_selector(out)} (an index, a key, or a function of the model's "
            "output such as output=lambda out: out[1]). Views that only read a layer need no output=."
        )
    if callable(output):
        try:
            got = output(out)
        except Exception as exc:  # noqa: BLE001 - the user's function: say what it was given
            raise ValueError(
                f"output={getattr(output, '__name__', 'function')} raised {type(exc).__name__}: {exc} "
                f"(the model returned {describe_output(out)})"
            ) from exc
        what = "the output function"
    else:
        try:
            if isinstance(output, str) and not isinstance(out, Mapping):
                got = getattr(out, output)
            else:
                got = out[output]
        except (KeyError, IndexError, AttributeError, TypeError):
            raise ValueError(
                f"output={output!r} does not select anything from the model's output, which is "
                f"{describe_output(out)}; try output={_example_selector(out)}"
            ) from None
        what = f"output={output!r}"
    if not isinstance(got, torch.Tensor):
        raise ValueError(f"{what} gives {describe_output(got)}, not a tensor (the model returned {describe_output(out)})")
    return got


def region_mask(region: Any, n: int, size: tuple[int, int]) -> torch.Tensor:
    """A float N x h x w weight mask (summing to 1 per image) from ``region``.

    ``region`` is a box ``(x0, y0, x1, y1)`` in fractions of the image (0..1, x to the right,
    y down), or a mask (H x W or N x H x W, bool or float >= 0) at any resolution, resized
    to ``size`` by area averaging.

    Examples
    --------
    >>> region_mask((0.0, 0.0, 0.5, 1.0), 1, (2, 4))
    tensor([[[0.2500, 0.2500, 0.0000, 0.0000],
             [0.2500, 0.2500, 0.0000, 0.0000]]])
    """
    h, w = size
    if isinstance(region, (tuple, list)) and len(region) == 4 and all(isinstance(v, (int, float)) for v in region):
        x0, y0, x1, y1 = (float(v) for v in region)
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"a region box is (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {region!r}")
        ys = (torch.arange(h) + 0.5) / h
        xs = (torch.arange(w) + 0.5) / w
        m = ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]
        if not m.any():  # a box smaller than one output pixel: the pixel under its centre
            m[min(h - 1, int((y0 + y1) / 2 * h)), min(w - 1, int((x0 + x1) / 2 * w))] = True
        m = m.float().expand(n, h, w)
    else:
        m = torch.as_tensor(region)
        if m.dim() == 2:
            m = m[None]
        if m.dim() != 3 or m.shape[0] not in (1, n):
            raise ValueError(f"a region mask is H x W or N x H x W (N = {n}), got shape {tuple(m.shape)}")
        m = m.float()
        if bool((m < 0).any()):
            raise ValueError("a region mask must be >= 0 everywhere")
        if tuple(m.shape[-2:]) != (h, w):
            m = F.interpolate(m[:, None], size=(h, w), mode="area")[:, 0]
        m = m.expand(n, h, w)
    total = m.sum(dim=(1, 2), keepdim=True)
    if bool((total == 0).any()):
        raise ValueError("the region is empty for some image (all zeros at the output's resolution)")
    return m / total


@dataclass(frozen=True)
class Head:
    """How a model's score tensor reads as classes (see the module docstring).

    Attributes
    ----------
    kind : {"classes", "multilabel", "binary", "segmentation"}
    n_classes : int
        Classes a target can name: K, or 2 for a single logit.
    final : str or None
        The final activation module bypassed for scores and applied for display
        (``"Softmax"``, ``"LogSoftmax"``, ``"Sigmoid"``), None for none.

    Examples
    --------
    >>> head = Head.of(torch.tensor([[0.0], [2.0]]))
    >>> head.kind, head.n_classes
    ('binary', 2)
    >>> head.scores(torch.tensor([[0.0], [2.0]]))
    tensor([[-0., 0.],
            [-2., 2.]])
    """

    kind: HeadKind
    n_classes: int
    final: str | None = None

    @classmethod
    def of(cls, t: torch.Tensor, final: str | None = None) -> Head:
        """The head of a score tensor ``t`` (the model's selected output with the final
        activation ``final`` bypassed)."""
        if t.dim() == 1 or (t.dim() == 2 and t.shape[1] == 1):
            return cls("binary", 2, final)
        if t.dim() == 2:
            return cls("multilabel" if final == "Sigmoid" else "classes", int(t.shape[1]), final)
        if t.dim() == 4:
            if t.shape[1] == 1:
                return cls("binary", 2, final)  # a one-channel mask: binary segmentation
            return cls("segmentation", int(t.shape[1]), final)
        raise ValueError(
            f"the model's scores must be N x K class logits, an N x 1 logit or N x K x H x W segmentation "
            f"scores; got a tensor of shape {tuple(t.shape)}. Hint: pass output= (a function) to pick or "
            "reshape them."
        )

    @property
    def note(self) -> str | None:
        """A sentence for the view when the head is not plain logits, else None."""
        parts = []
        if self.final is not None:
            parts.append(
                f"the model ends in {self.final}: gradients use the scores before it, and it is applied once "
                "for the probabilities shown"
            )
        if self.kind == "binary":
            parts.append("one logit z: a sigmoid classifier with two classes (class 1 scores z, class 0 scores -z)")
        elif self.kind == "segmentation":
            parts.append(
                "segmentation scores: class k is explained by its mean score over the pixels (or a region), "
                "and the probabilities are the share of pixels whose top class is k"
            )
        elif self.kind == "multilabel":
            parts.append("independent sigmoid per class (multi-label): probabilities need not sum to 1")
        return "; ".join(parts) + "." if parts else None

    def scores(self, t: torch.Tensor, region: Any = None) -> torch.Tensor:
        """N x K class scores from ``t``, differentiable (gradients of ``scores[i, k]``)."""
        if t.dim() == 4:
            n, _, h, w = t.shape
            if region is None:
                t = t.mean(dim=(2, 3))
            else:
                m = region_mask(region, n, (h, w)).to(device=t.device, dtype=t.dtype)
                t = (t * m[:, None]).sum(dim=(2, 3))
        if self.kind == "binary":
            z = t.reshape(t.shape[0], 1)
            return torch.cat([-z, z], dim=1)
        return t

    def probabilities(self, t: torch.Tensor) -> torch.Tensor:
        """N x K float32 probabilities for display, detached (see the module docstring)."""
        t = t.detach().float()
        if self.kind == "segmentation":
            top = t.argmax(dim=1)  # N x H x W
            counts = F.one_hot(top.flatten(1), self.n_classes).sum(dim=1)
            return counts.float() / top[0].numel()
        if self.kind == "binary":
            z = t.reshape(t.shape[0], -1).mean(dim=1, keepdim=True) if t.dim() == 4 else t.reshape(t.shape[0], 1)
            p = torch.sigmoid(z)
            return torch.cat([1 - p, p], dim=1)
        if self.kind == "multilabel":
            return torch.sigmoid(t)
        return torch.softmax(t, dim=1)


def class_names_for(head: Head, names: Sequence[str] | None) -> list[str] | None:
    """Class names to show: for a binary head given one name X, ``["not X", "X"]``."""
    if names is None:
        return None
    names = list(names)
    if head.kind == "binary" and len(names) == 1:
        return [f"not {names[0]}", names[0]]
    return names
