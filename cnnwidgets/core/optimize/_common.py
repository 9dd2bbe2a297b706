"""Pieces shared by the modules of :mod:`cnnwidgets.core.optimize`: the valid choices (one
place), the neutral gray and the small argument checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Union

import torch

from .._validate import check_int as _check_int

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


# ---------------------------------------------------------------- small validators
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
