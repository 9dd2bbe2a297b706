"""ImageSet: the images a view explores, with their labels, class names and display form."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .inputs import as_batch, check_stats, to_display

__all__ = ["ImageSet"]


class ImageSet:
    """Images (N x C x H x W, as the model takes them) with optional labels and class names.

    Parameters
    ----------
    images : tensor or array
        Float N x C x H x W (taken as is) or uint8 N x H x W x C (scaled to [0, 1] and
        normalized with ``mean``/``std``); see :func:`cnnwidgets.core.as_batch`.
    labels : sequence of int, optional
        One label per image.
    classes : sequence of str, optional
        Class names; checked against the model's outputs with :meth:`check_classes`.
    mean, std : optional
        The model's input normalization, undone for display.

    Examples
    --------
    >>> s = ImageSet(torch.zeros(4, 1, 8, 8), labels=[0, 1, 0, 1])
    >>> len(s), s.display(0).shape
    (4, (8, 8, 1))
    """

    def __init__(
        self,
        images: Any,
        labels: Sequence[int] | torch.Tensor | np.ndarray | None = None,
        classes: Sequence[str] | None = None,
        *,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
    ) -> None:
        self.x = as_batch(images, mean=mean, std=std)
        self.mean, self.std = check_stats(mean, std, self.x.shape[1])
        n = self.x.shape[0]
        self.labels: np.ndarray | None = None
        if labels is not None:
            arr = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
            if arr.shape[0] != n:
                raise ValueError(
                    f"labels has {arr.shape[0]} entries but there are {n} images; give one label per image"
                )
            self.labels = arr.astype(np.int64)
        self.classes: list[str] | None = None if classes is None else [str(c) for c in classes]
        self._display: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(int(v) for v in self.x.shape[1:])  # type: ignore[return-value]

    def check_classes(self, n_outputs: int) -> None:
        """ValueError if fewer class names than the model's ``n_outputs``."""
        if self.classes is not None and len(self.classes) < n_outputs:
            raise ValueError(
                f"classes names {len(self.classes)} classes but the model has {n_outputs} outputs; "
                f"give at least {n_outputs} names"
            )

    def check_index(self, index: Any) -> int:
        """``index`` as an int in range, else ValueError naming the range."""
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) < n:
            raise ValueError(f"index must be an int in 0..{n - 1}, got {index!r}")
        return int(index)

    def class_name(self, c: int | None) -> str | int | None:
        """Name of class ``c`` (or ``c`` itself without names)."""
        if c is None:
            return None
        if self.classes is not None and 0 <= c < len(self.classes):
            return self.classes[c]
        return int(c)

    def label(self, index: int) -> int | None:
        return None if self.labels is None else int(self.labels[index])

    def display(self, index: int) -> np.ndarray:
        """Image ``index`` as shown (normalization undone), uint8 (H, W, C)."""
        img = self._display.get(index)
        if img is None:
            img = to_display(self.x[index], mean=self.mean, std=self.std)
            if len(self._display) > 4096:
                self._display.clear()
            self._display[index] = img
        return img

    def display_rgb(self, index: int) -> np.ndarray:
        """Like :meth:`display`, with gray expanded to 3 channels: uint8 (H, W, 3)."""
        img = self.display(index)
        return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]
