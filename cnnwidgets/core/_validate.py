"""Small argument checks shared by the compute core (torch and numpy free)."""

from __future__ import annotations

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
