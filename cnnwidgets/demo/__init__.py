"""Embedded MNIST demo: a small trained CNN plus 10,000 digits to look at.

The data are the MNIST *test* set (10,000 images) shipped inside the package,
so the demo works offline and without torchvision. The first 8,000 images
were used to train the shipped weights (split ``"train"``), the last 2,000
were held out (split ``"val"``).

MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges and is
licensed CC BY-SA 3.0; see ``cnnwidgets/demo/data/LICENSE.md``.

Examples
--------
>>> from cnnwidgets.demo import mnist
>>> demo = mnist("val")
>>> demo.images.shape
torch.Size([2000, 1, 28, 28])
>>> logits = demo.model(demo.images[:8])
>>> logits.shape
torch.Size([8, 10])
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._model import MnistCNN

__all__ = ["MnistCNN", "MnistDemo", "load_mnist_arrays", "mnist"]

DATA_DIR: Path = Path(__file__).parent / "data"
IMAGES_FILE: Path = DATA_DIR / "t10k-images-idx3-ubyte.gz"
LABELS_FILE: Path = DATA_DIR / "t10k-labels-idx1-ubyte.gz"
WEIGHTS_FILE: Path = DATA_DIR / "mnist_cnn.pt"

MEAN: tuple[float, ...] = (0.1307,)
STD: tuple[float, ...] = (0.3081,)
CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))

N_IMAGES: int = 10_000
N_TRAIN: int = 8_000
SPLITS: tuple[str, ...] = ("all", "train", "val")


@functools.lru_cache(maxsize=1)
def load_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Decode the embedded MNIST test set with numpy.

    The result is cached, so only the first call reads the files. The
    returned arrays are read-only (they are shared between calls); copy them
    before modifying.

    Returns
    -------
    images : numpy.ndarray
        ``uint8`` array of shape ``(10000, 28, 28)``, pixel values 0-255.
    labels : numpy.ndarray
        ``uint8`` array of shape ``(10000,)``, digits 0-9.

    Examples
    --------
    >>> images, labels = load_mnist_arrays()
    >>> images.shape, images.dtype, labels.shape
    ((10000, 28, 28), dtype('uint8'), (10000,))
    """
    with gzip.open(IMAGES_FILE, "rb") as f:
        images = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
    with gzip.open(LABELS_FILE, "rb") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    images = images.reshape(-1, 28, 28)
    if images.shape[0] != N_IMAGES or labels.shape != (N_IMAGES,):
        raise RuntimeError(
            f"corrupt demo data: got {images.shape[0]} images and "
            f"{labels.shape[0]} labels, expected {N_IMAGES} of each"
        )
    return images, labels


def _split_slice(split: str) -> slice:
    """Index range of ``split`` within the 10,000 images."""
    if split == "all":
        return slice(0, N_IMAGES)
    if split == "train":
        return slice(0, N_TRAIN)
    if split == "val":
        return slice(N_TRAIN, N_IMAGES)
    raise ValueError(
        f"split must be one of {', '.join(repr(s) for s in SPLITS)}; got {split!r}"
    )


def _to_tensors(
    images: np.ndarray, labels: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalize uint8 images to float32 ``(N, 1, 28, 28)``; labels to int64."""
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
    x = (x / 255.0 - MEAN[0]) / STD[0]
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


@functools.lru_cache(maxsize=1)
def _load_state_dict() -> dict[str, torch.Tensor]:
    """Read the shipped weights once (``load_state_dict`` copies them)."""
    if not WEIGHTS_FILE.exists():
        raise FileNotFoundError(
            f"demo weights not found at {WEIGHTS_FILE}; "
            "create them with `python -m cnnwidgets.demo.train`"
        )
    return torch.load(WEIGHTS_FILE, map_location="cpu", weights_only=True)


@dataclass(frozen=True, eq=False)
class MnistDemo:
    """A trained :class:`MnistCNN` together with MNIST digits.

    Attributes
    ----------
    model : MnistCNN
        Trained network in eval mode on the CPU. Every :func:`mnist` call
        builds a new instance, so it is safe to modify.
    images : torch.Tensor
        ``float32`` tensor of shape ``(N, 1, 28, 28)``, normalized as
        ``(x / 255 - mean) / std``; can be fed to ``model`` as is.
    labels : torch.Tensor
        ``int64`` tensor of shape ``(N,)`` with the digit of each image.
    classes : tuple of str
        Class names ``("0", ..., "9")``; ``classes[k]`` names logit ``k``.
    mean : tuple of float
        Per-channel normalization mean, ``(0.1307,)``.
    std : tuple of float
        Per-channel normalization std, ``(0.3081,)``.
    split : str
        ``"all"`` (N = 10000), ``"train"`` (N = 8000) or ``"val"`` (N = 2000).
    """

    model: MnistCNN
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    split: str

    def __repr__(self) -> str:
        return (
            f"MnistDemo(split={self.split!r}, n_images={len(self.labels)}, "
            f"image_shape={tuple(self.images.shape[1:])}, "
            f"classes={len(self.classes)}, model={type(self.model).__name__})"
        )

    def __len__(self) -> int:
        return len(self.labels)


def mnist(split: str = "all") -> MnistDemo:
    """Load the embedded MNIST demo: a trained CNN and normalized digits.

    Parameters
    ----------
    split : {"all", "train", "val"}, default "all"
        Which images to return: ``"all"`` = all 10,000 images of the MNIST
        test set, ``"train"`` = the first 8,000 (used to train the shipped
        weights), ``"val"`` = the last 2,000 (held out, ~99% accuracy).

    Returns
    -------
    MnistDemo
        ``.model`` is a fresh :class:`MnistCNN` in eval mode with the shipped
        weights (CPU); ``.images`` is a ``float32`` tensor ``(N, 1, 28, 28)``;
        ``.labels`` an ``int64`` tensor ``(N,)``; plus ``.classes``,
        ``.mean``, ``.std`` and ``.split``.

    Raises
    ------
    ValueError
        If ``split`` is not one of ``"all"``, ``"train"``, ``"val"``.

    Examples
    --------
    >>> import torch
    >>> demo = mnist("val")
    >>> demo.images.shape, demo.labels.shape
    (torch.Size([2000, 1, 28, 28]), torch.Size([2000]))
    >>> with torch.no_grad():
    ...     pred = demo.model(demo.images[:5]).argmax(dim=1)
    >>> pred.shape
    torch.Size([5])
    """
    sl = _split_slice(split)
    images, labels = load_mnist_arrays()
    x, y = _to_tensors(images[sl], labels[sl])
    model = MnistCNN()
    model.load_state_dict(_load_state_dict())
    model.eval()
    return MnistDemo(
        model=model,
        images=x,
        labels=y,
        classes=CLASSES,
        mean=MEAN,
        std=STD,
        split=split,
    )
