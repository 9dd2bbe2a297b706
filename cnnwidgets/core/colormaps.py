"""Colour lookup tables shared by the Python renderer and the front end.

A lookup table (LUT) is a uint8 array of shape (256, 3). Codes 0..254 carry data; code 255
(:data:`NONFINITE_CODE`) marks NaN or infinite values and is drawn in :data:`NONFINITE_RGB`.
The front end receives the same table as bytes, so both sides map codes to identical pixels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["blend_overlay", "heat_codes", "is_diverging", "NONFINITE_CODE", "NONFINITE_RGB", "MID_CODE", "MAX_CODE", "lut", "gray_lut", "diverging_lut"]

#: Highest data code: values are quantized to 0..254.
MAX_CODE = 254
#: The code of zero on a symmetric (diverging) scale.
MID_CODE = 127
#: Reserved code for NaN / +-Inf.
NONFINITE_CODE = 255
#: Colour of non-finite values: magenta, absent from the gray and diverging maps.
NONFINITE_RGB = (255, 0, 255)

# Anchor colours of the diverging map (blue - near white - red), at codes 0, 63.5, 127, 190.5, 254.
_DIVERGING_ANCHORS = np.array(
    [[5, 48, 97], [67, 147, 195], [247, 247, 247], [214, 96, 77], [103, 0, 31]], dtype=np.float64
)


def _finish(rgb: np.ndarray) -> np.ndarray:
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: MAX_CODE + 1] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    table[NONFINITE_CODE] = NONFINITE_RGB
    return table


def gray_lut() -> np.ndarray:
    """Black (code 0) to white (code 254); shape (256, 3), uint8."""
    v = np.arange(MAX_CODE + 1, dtype=np.float64) * 255.0 / MAX_CODE
    return _finish(np.repeat(v[:, None], 3, axis=1))


def diverging_lut() -> np.ndarray:
    """Blue (negative) - neutral (code 127, zero) - red (positive); shape (256, 3), uint8."""
    pos = np.linspace(0, MAX_CODE, len(_DIVERGING_ANCHORS))
    codes = np.arange(MAX_CODE + 1, dtype=np.float64)
    rgb = np.stack([np.interp(codes, pos, _DIVERGING_ANCHORS[:, c]) for c in range(3)], axis=1)
    return _finish(rgb)


_DIVERGING_NAMES = {
    "diverging", "RdBu", "RdBu_r", "bwr", "seismic", "coolwarm", "PiYG", "PRGn", "BrBG", "PuOr",
    "RdGy", "RdYlBu", "RdYlGn", "Spectral", "berlin", "managua", "vanimo",
}


def is_diverging(name: str) -> bool:
    """Whether colormap ``name`` is diverging, i.e. signed data should put zero at its centre."""
    return name in _DIVERGING_NAMES or name.removesuffix("_r") in _DIVERGING_NAMES


def lut(name: str) -> np.ndarray:
    """The LUT called ``name``: ``"gray"``, ``"diverging"``, or any matplotlib colormap name.

    Raises
    ------
    ValueError
        For a name that is none of these.
    """
    if name == "gray":
        return gray_lut()
    if name == "diverging":
        return diverging_lut()
    try:
        import matplotlib

        cmap = matplotlib.colormaps[name]
    except (KeyError, ImportError):
        raise ValueError(
            f"unknown colormap {name!r}; use 'gray', 'diverging' or a matplotlib colormap name such as 'viridis'"
        ) from None
    rgba = cmap(np.linspace(0.0, 1.0, MAX_CODE + 1))
    return _finish(rgba[:, :3] * 255.0)


def blend_overlay(image: np.ndarray, codes: np.ndarray, table: np.ndarray, opacity: float) -> np.ndarray:
    """Draw a map of codes over an image, exactly as the front end does (integer arithmetic).

    Parameters
    ----------
    image : numpy.ndarray
        uint8 (H, W, 3).
    codes : numpy.ndarray
        uint8 (h, w), upsampled to H x W by nearest neighbour (source row ``y * h // H``).
    table : numpy.ndarray
        uint8 (256, 3) colours of the codes.
    opacity : float
        0 shows the image only, 1 the map only.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 3): ``(image * (255 - a) + colour * a + 127) // 255`` with
        ``a = floor(opacity * 255 + 0.5)``.
    """
    H, W = image.shape[:2]
    h, w = codes.shape
    ys = (np.arange(H) * h) // H
    xs = (np.arange(W) * w) // W
    colour = table[codes[ys][:, xs]].astype(np.int32)
    a = int(np.floor(float(opacity) * 255 + 0.5))
    out = (image.astype(np.int32) * (255 - a) + colour * a + 127) // 255
    return out.astype(np.uint8)


def heat_codes(heat: np.ndarray, signed: bool) -> np.ndarray:
    """Codes for a heatmap in [0, 1] (or [-1, 1] when ``signed``, zero at code 127); NaN -> 255."""
    h = np.asarray(heat, dtype=np.float32)
    q = h * MID_CODE + (MID_CODE + 0.5) if signed else h * MAX_CODE + 0.5
    codes = np.clip(np.nan_to_num(q, nan=0.0), 0, MAX_CODE + 0.5).astype(np.uint8)
    codes[~np.isfinite(h)] = NONFINITE_CODE
    return codes
