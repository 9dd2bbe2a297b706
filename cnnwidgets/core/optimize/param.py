"""Starting images and parameterizations: what the optimization changes.

:func:`gray_noise` and :func:`multiscale` make starting images; :func:`pixel_param` (the
pixels themselves) and :func:`fourier_param` (a 1/f-scaled, colour-decorrelated spectrum, as in
lucid/lucent) turn one into ``(params, image_fn)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from .._validate import check_float as _check_float
from .._validate import check_int as _check_int
from ._common import GRAY, Shape, _check_shape, _generator

#: Pixel values are kept this far inside (0, 1) when an image is turned into the logits of
#: the Fourier parameterization (a sigmoid never reaches 0 or 1).
_FOURIER_EPS: float = 1e-3


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


def _spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> torch.Tensor:
    """1/f scaling of the rfft2 coefficients (H x W//2+1): lucent's ``fft_image`` scale.

    ``1 / max(f, 1 / max(H, W)) ** decay_power`` with ``f = sqrt(fx**2 + fy**2)`` the frequency
    of each coefficient in cycles per pixel (``fftfreq`` along H, ``rfftfreq`` along W), so
    that all frequencies learn alike. With the orthonormal inverse FFT of :func:`fourier_param`
    this is the whole scaling (lucid writes the same as ``scale * sqrt(H * W)`` because its
    inverse FFT is not normalized; an orthonormal one must not multiply by ``sqrt(H * W)``
    again, which makes the image ``sqrt(H * W)`` times too steep).
    """
    fy = torch.fft.fftfreq(h, dtype=torch.float64).view(-1, 1)
    fx = torch.fft.rfftfreq(w, dtype=torch.float64).view(1, -1)
    freqs = torch.sqrt(fx * fx + fy * fy)
    return (1.0 / freqs.clamp(min=1.0 / max(h, w)) ** decay_power).float()


#: The image of :func:`fourier_param` is the inverse FFT divided by this (lucid/lucent's
#: "magic" constant: it keeps the sigmoid away from saturation).
_FOURIER_DIVISOR: float = 4.0


def fourier_param(
    shape: Shape,
    batch: int = 1,
    seed: int = 0,
    decorrelate: bool = True,
    init: torch.Tensor | None = None,
    sd: float = 0.01,
    *,
    decay_power: float = 1.0,
    device: torch.device | str | None = None,
) -> tuple[list[torch.Tensor], ImageFn]:
    """Optimize the image's Fourier coefficients (scaled by 1/frequency), as lucent's ``fft_image``.

    The image is ``sigmoid(M @ irfft2(spectrum * s) / 4)``: ``irfft2`` is the orthonormal
    inverse real FFT, ``s = 1 / max(f, 1 / max(H, W)) ** decay_power`` scales each coefficient
    by the inverse of its frequency ``f`` (cycles per pixel), which favours smooth,
    low-frequency patterns, and 4 is lucid's constant against saturation. ``M`` is a fixed
    colour-decorrelation matrix (ImageNet statistics, lucent's normalized
    ``color_correlation_svd_sqrt``) when ``decorrelate`` and C == 3, else the identity (plain
    Fourier: for C != 3 ``decorrelate`` is ignored, as lucent's ``image(..., channels=c)``
    does). The same spectrum gives the same image as ``lucent.optvis.param.image`` (its
    ``fft=True`` default), so the same optimizer and learning rate behave alike: Adam at
    ``lr=0.05`` is lucent's recipe.

    Parameters
    ----------
    shape : (C, H, W)
    batch : int
    seed : int
    decorrelate : bool
    init : torch.Tensor, optional
        Starting image(s) B x C x H x W (or 1 x C x H x W) in [0, 1]: the spectrum is set so
        that ``image_fn()`` reproduces them (pixel values clamped to [0.001, 0.999] first, as
        the sigmoid never reaches 0 or 1). When None, the spectrum is N(0, sd^2) noise (as
        lucent's): an image very close to 0.5 gray.
    sd : float
        Standard deviation of the random spectrum (lucent's default 0.01).
    decay_power : float
        Exponent of the 1/frequency scaling (lucent's ``decay_power``, 1 by default; 0 gives
        every frequency the same scale).
    device : torch.device or str, optional
        Where the parameters live (CPU by default).

    Returns
    -------
    params : list of torch.Tensor
        One leaf tensor B x C x H x (W//2+1) x 2 (real and imaginary parts). (Lucent keeps
        one unused extra column when W is odd; it does not change the image.)
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
    decay_power = _check_float(decay_power, "decay_power", nonneg=True)
    s = _spectrum_scale(h, w, decay_power) / _FOURIER_DIVISOR  # /4 is exact: the same image as lucent's
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
