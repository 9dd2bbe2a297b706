"""Penalties: per-image costs ``pen(img) -> (B,)`` subtracted from the objective.

:func:`l2`, :func:`lp` (deviation from gray) and :func:`total_variation`; a :class:`Penalty`
adds with ``+`` and scales with ``*``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch

from .._validate import check_float as _check_float
from ._common import GRAY


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
