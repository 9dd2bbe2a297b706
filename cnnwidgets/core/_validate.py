"""Small argument checks shared by the compute core (torch and numpy free)."""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any


def as_int(value: Any, name: str) -> int:
    """``value`` as an int (anything with ``__index__``, numpy integers too), else a TypeError
    naming ``name``; bools are refused, they are almost always a mistake here.

    Examples
    --------
    >>> as_int(3, "k")
    3
    >>> as_int(True, "k")
    Traceback (most recent call last):
    ...
    TypeError: k must be an int, got bool True
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}") from None


def check_int(value: Any, name: str, minimum: int | None = None) -> int:
    """:func:`as_int`, and a ValueError below ``minimum``."""
    v = as_int(value, name)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def check_float(value: Any, name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    """``value`` as a finite float (any real number but a bool), else a TypeError or ValueError
    naming ``name``; ``positive`` / ``nonneg`` also refuse values <= 0 / < 0.

    Examples
    --------
    >>> check_float(2, "sigma")
    2.0
    >>> check_float(-1.0, "sigma", nonneg=True)
    Traceback (most recent call last):
    ...
    ValueError: sigma must be >= 0, got -1.0
    """
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
