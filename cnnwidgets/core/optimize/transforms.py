"""Transforms: random changes of the image before every step (robustness to them).

Each is ``fn(img, generator=None) -> img`` and keeps the shape: :func:`jitter` (translation),
:func:`scale` (zoom), :func:`rotate`, chained by :func:`compose`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .._validate import check_float as _check_float
from .._validate import check_int as _check_int
from ..imageops import rotate_zoom
from ._common import _generator

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
        return rotate_zoom(img, 0.0, fs[_randint(len(fs), g)])

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
        return rotate_zoom(img, draw(g), 1.0)

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
