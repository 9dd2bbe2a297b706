"""ImageSet: the images a view explores, wherever they live, with labels, class names and display.

A view never holds a whole data set in memory. :class:`ImageSet` reads images when they are
needed (the one shown, a batch of a pass over the data) from one of its sources:

* an in-memory tensor or array (N x C x H x W floats, uint8 N x H x W x C, ...), converted
  one slice at a time (:func:`~cnnwidgets.core.inputs.as_batch`);
* a map-style ``torch.utils.data.Dataset`` whose items are an image or ``(image, label, ...)``
  (a tensor, a PIL image or a uint8 array), or a ``DataLoader`` (its dataset, batch size,
  ``num_workers`` and order);
* a list of PIL images or of image file paths, or a folder with one subfolder per class
  (class names from the folder names, images read with Pillow).

Decoded images and display images are kept in caches bounded by bytes
(:attr:`ImageSet.CACHE_BYTES`), so memory follows the cache and the batch, not the data set.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .inputs import as_batch, check_stats, to_display

__all__ = ["ImageSet", "Batch", "IMAGE_SUFFIXES"]

#: File name endings read as images in a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class _BytesLRU:
    """A thread-safe least-recently-used cache bounded by the bytes of its values (arrays or
    tensors); a value larger than the whole budget is not kept."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._d: OrderedDict[Any, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _size(v: Any) -> int:
        return int(v.nbytes) if isinstance(v, np.ndarray) else int(v.numel() * v.element_size())

    def get(self, key: Any) -> Any:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: Any, value: Any) -> None:
        size = self._size(value)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self._bytes -= self._size(old)
            self._d[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and self._d:
                _, v = self._d.popitem(last=False)
                self._bytes -= self._size(v)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self._bytes = 0


@dataclass
class Batch:
    """One batch of a pass over an :class:`ImageSet`.

    Attributes
    ----------
    indices : numpy.ndarray
        int64 (B,): the images' indices in the set.
    x : torch.Tensor
        float32 B x C x H x W, as the model takes them (an image that could not be read is
        zeros, with ``valid`` False).
    labels : numpy.ndarray
        int64 (B,): labels from the data (-1 where there is none).
    valid : numpy.ndarray
        bool (B,): False for an image that could not be read (``errors`` says why).
    errors : dict
        index -> message, for the images that could not be read.
    """

    indices: np.ndarray
    x: torch.Tensor
    labels: np.ndarray
    valid: np.ndarray
    errors: dict[int, str]


# ---------------------------------------------------------------------------- sources


def _is_label(v: Any) -> bool:
    """Whether an item's second part reads as a class label (an integer, or a 0-d integer
    tensor/array)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    if isinstance(v, torch.Tensor):
        return v.dim() == 0 and not v.is_floating_point() and v.dtype != torch.bool
    return isinstance(v, np.ndarray) and v.ndim == 0 and np.issubdtype(v.dtype, np.integer)


def _open_image(path: Path, mode: str | None) -> Any:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if mode is None:
            mode = "L" if im.mode in ("1", "L", "I;16", "I", "F") else "RGB"
        return im.convert(mode)


def _resize(im: Any, size: tuple[int, int]) -> Any:
    """A PIL image scaled so it covers ``size`` (H, W), then cropped to it at the centre."""
    from PIL import Image

    h, w = size
    scale = max(h / im.height, w / im.width)
    nw, nh = max(w, round(im.width * scale)), max(h, round(im.height * scale))
    if (nw, nh) != (im.width, im.height):
        im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - w) // 2, (nh - h) // 2
    return im.crop((left, top, left + w, top + h))


class _Items:
    """Images read one at a time: ``get(i)`` gives the raw item (a Dataset's item, a PIL image,
    a path). Picklable when its parts are (DataLoader workers get a copy)."""

    def __init__(self, get: Callable[[int], Any], n: int, where: Callable[[int], str], *,
                 transform: Callable[[Any], Any] | None, size: tuple[int, int] | None,
                 mean: Any, std: Any, mode: str | None = None) -> None:
        self.get, self.n, self.where = get, n, where
        self.transform, self.size, self.mean, self.std, self.mode = transform, size, mean, std, mode

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        """Image ``i`` as the model takes it (float32 C x H x W) and its label (-1: none)."""
        try:
            item = self.get(i)
        except Exception as exc:  # noqa: BLE001 - named with the item and re-raised as ValueError
            raise ValueError(f"image {i} ({self.where(i)}) could not be read: {type(exc).__name__}: {exc}") from exc
        label = -1
        if isinstance(item, (tuple, list)):
            if not item:
                raise ValueError(f"image {i} ({self.where(i)}) is an empty {type(item).__name__}")
            if len(item) > 1 and _is_label(item[1]):
                label = int(item[1])
            item = item[0]
        if isinstance(item, (str, os.PathLike)):
            try:
                item = _open_image(Path(item), self.mode)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"image {i} ({item}) is not an image Pillow can read: {exc}") from exc
        if self.size is not None and _is_pil(item):
            item = _resize(item, self.size)
        if self.transform is not None:
            try:
                item = self.transform(item)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"transform failed on image {i} ({self.where(i)}): {type(exc).__name__}: {exc}") from exc
        return self._tensor(item, i), label

    def _tensor(self, item: Any, i: int) -> torch.Tensor:
        given = item
        if _is_pil(item):
            item = np.array(item)  # a writable copy (torch warns on read-only arrays)
        if isinstance(item, np.ndarray) and item.dtype == np.uint8:
            arr = item if item.ndim == 3 else item[..., None] if item.ndim == 2 else None
            if arr is None:
                raise ValueError(f"image {i} ({self.where(i)}) is a uint8 array of shape {item.shape}; "
                                 "expected H x W or H x W x C")
            return as_batch(arr[None] if arr.shape[-1] in (1, 3, 4) else arr[None].transpose(0, 2, 3, 1),
                            mean=self.mean, std=self.std)[0]
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(np.ascontiguousarray(item))
        if isinstance(item, torch.Tensor):
            if item.dtype == torch.uint8:
                t = item if item.dim() == 3 else item[None]
                if t.dim() != 3:
                    raise ValueError(f"image {i} ({self.where(i)}) is a uint8 tensor of shape "
                                     f"{tuple(item.shape)}; expected C x H x W")
                return as_batch(t[None].permute(0, 2, 3, 1).numpy() if t.shape[0] in (1, 3, 4) else t[None].numpy(),
                                mean=self.mean, std=self.std)[0]
            if item.is_floating_point() and item.dim() in (2, 3):
                return (item if item.dim() == 3 else item[None]).detach().to("cpu", torch.float32)
        raise TypeError(
            f"image {i} ({self.where(i)}) is a {type(given).__name__}"
            + (f" of shape {tuple(given.shape)} and dtype {given.dtype}" if hasattr(given, "shape") else "")
            + "; expected a float tensor C x H x W (as the model takes it), a uint8 array H x W x C or a "
            "PIL image. Hint: pass transform= to convert each item"
        )


def _is_pil(v: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - matplotlib brings Pillow
        return False
    return isinstance(v, Image.Image)


def _folder(path: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files, labels and class names of a folder laid out as one subfolder per class (or a
    flat folder of images: one unnamed class)."""
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a folder. Hint: pass a folder with one subfolder of images per class")
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    files: list[Path] = []
    labels: list[int] = []
    classes: list[str] = []
    for d in subdirs:
        found = sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if found:
            labels += [len(classes)] * len(found)
            classes.append(d.name)
            files += found
    if not files:
        flat = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not flat:
            raise ValueError(
                f"the folder {str(path)!r} holds no images (files ending in {', '.join(IMAGE_SUFFIXES)}), "
                "neither in subfolders (one per class) nor at its top"
            )
        return flat, np.full(len(flat), -1, np.int64), []
    return files, np.asarray(labels, np.int64), classes


def _hash_files(files: Sequence[Path]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for f in files:
        try:
            st = f.stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}\0missing\n".encode())
    return h.hexdigest()


def _hash_tensor(h: Any, x: Any) -> None:
    arr = x.detach().cpu().contiguous().numpy() if isinstance(x, torch.Tensor) else np.ascontiguousarray(x)
    h.update(f"{arr.dtype}{arr.shape}".encode())
    flat = arr.reshape(-1).view(np.uint8)
    step = 1 << 26
    for s in range(0, flat.size, step):
        h.update(flat[s : s + step])


def _size_pair(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0:
        return int(size), int(size)
    if (isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in size)):
        return int(size[0]), int(size[1])
    raise ValueError(f"size must be a positive int or (height, width), got {size!r}")


# ---------------------------------------------------------------------------- ImageSet


class ImageSet:
    """The images a view explores, with optional labels and class names, read on demand.

    Parameters
    ----------
    images
        * a float tensor/array N x C x H x W (taken as the model takes it) or uint8
          N x H x W x C (scaled to [0, 1] and normalized with ``mean``/``std``), see
          :func:`cnnwidgets.core.as_batch`; converted one slice at a time;
        * a map-style ``torch.utils.data.Dataset`` returning an image or ``(image, label,
          ...)``; an image is a float tensor C x H x W (as the model takes it), a uint8
          array/tensor or a PIL image (scaled and normalized with ``mean``/``std``);
        * a ``torch.utils.data.DataLoader``: its dataset, in the loader's order (a shuffling
          loader's order is drawn once), its batch size and ``num_workers`` for passes;
        * a list of PIL images, or of image file paths;
        * a folder (str or Path) with one subfolder of images per class (the folder names
          are the classes; a folder of images with no subfolders has no labels).
        * another ImageSet (returned as is by :meth:`of`).
    labels : sequence of int, optional
        One label per image; by default the data's own (a dataset's ``targets`` or the labels
        its items carry, a folder's subfolders).
    classes : sequence of str, optional
        Class names; by default a dataset's ``classes`` or a folder's subfolder names.
    mean, std : optional
        The model's input normalization: applied to uint8 and PIL images, undone for display.
    transform : callable, optional
        Applied to each item's image before conversion (e.g. a torchvision transform that
        resizes and turns a PIL image into a normalized tensor).
    size : int or (int, int), optional
        For PIL images and files: scale each one to cover ``size`` and crop the centre, so
        images of different sizes make one batch (before ``transform``).
    batch_size : int, optional
        Images per batch of a pass over the data (default: the loader's, else 256).
    num_workers : int, optional
        Worker processes reading images in a pass (default: the loader's, else 0).

    Examples
    --------
    >>> s = ImageSet(torch.zeros(4, 1, 8, 8), labels=[0, 1, 0, 1])
    >>> len(s), s.display(0).shape
    (4, (8, 8, 1))
    """

    #: Bytes of decoded images (as the model takes them) kept for re-use.
    CACHE_BYTES = 256 << 20
    #: Bytes of display images (uint8) kept for re-use.
    DISPLAY_BYTES = 64 << 20

    def __init__(
        self,
        images: Any,
        labels: Sequence[int] | torch.Tensor | np.ndarray | None = None,
        classes: Sequence[str] | None = None,
        *,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        transform: Callable[[Any], Any] | None = None,
        size: int | tuple[int, int] | None = None,
        batch_size: int | None = None,
        num_workers: int | None = None,
    ) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be a callable (image -> image), got {type(transform).__name__}")
        self._size = _size_pair(size)
        self._tensor: Any = None  # an in-memory N x ... tensor or array
        self._items: _Items | None = None
        self._order: np.ndarray | None = None  # a loader's order: index i -> dataset item
        self._fingerprint: str | None = None
        self._fp_parts: list[str] = []
        data_labels: np.ndarray | None = None
        data_classes: list[str] | None = None
        self.batch_size = 256
        self.num_workers = 0
        self.source = type(images).__name__
        if isinstance(images, ImageSet):
            raise TypeError("images is already an ImageSet: use ImageSet.of(images) or pass it to a view as is")
        if isinstance(images, torch.utils.data.DataLoader):  # items are read one by one; its collate_fn is not used
            ds = images.dataset
            if isinstance(ds, torch.utils.data.IterableDataset):
                raise TypeError("the DataLoader reads an IterableDataset, which has no indices to go back to; "
                                "pass a loader over a map-style Dataset (with __getitem__ and __len__)")
            self.batch_size = int(images.batch_size or 256)
            self.num_workers = int(images.num_workers)
            order = [int(i) for i in images.sampler] if images.batch_sampler is None or images.batch_size else \
                [int(i) for b in images.batch_sampler for i in b]
            self._order = np.asarray(order, np.int64)
            if self._order.size != len(ds) or not np.array_equal(self._order, np.arange(len(ds))):
                self._fp_parts.append(_hash_bytes(self._order.tobytes()))
            images = ds
            self.source = f"DataLoader({type(ds).__name__})"
        if isinstance(images, (str, os.PathLike)):
            root = Path(images).expanduser()
            files, data_labels, data_classes = _folder(root)
            data_classes = data_classes or None
            if not data_classes:
                data_labels = None
            self._paths = files
            self._items = _Items(files.__getitem__, len(files), lambda i, f=files: str(f[i]), transform=transform,
                                 size=self._size, mean=mean, std=std, mode=_first_mode(files))
            self._fp_parts.append(_hash_files(files))
            self.source = f"folder {root}"
        elif isinstance(images, (list, tuple)) and images and all(isinstance(v, (str, os.PathLike)) for v in images):
            files = [Path(v).expanduser() for v in images]
            self._paths = files
            self._items = _Items(files.__getitem__, len(files), lambda i, f=files: str(f[i]), transform=transform,
                                 size=self._size, mean=mean, std=std, mode=_first_mode(files))
            self._fp_parts.append(_hash_files(files))
            self.source = "list of files"
        elif isinstance(images, (list, tuple)) and images and all(_is_pil(v) for v in images):
            pil = list(images)
            self._items = _Items(pil.__getitem__, len(pil), lambda i: f"PIL image {i}", transform=transform,
                                 size=self._size, mean=mean, std=std)
            h = hashlib.blake2b(digest_size=16)
            for im in pil:
                h.update(f"{im.mode}{im.size}".encode())
                h.update(im.tobytes())
            self._fp_parts.append(h.hexdigest())
            self.source = "list of PIL images"
        elif isinstance(images, torch.utils.data.Dataset) and not isinstance(images, torch.Tensor):
            if isinstance(images, torch.utils.data.IterableDataset):
                raise TypeError("an IterableDataset has no indices to go back to; pass a map-style Dataset "
                                "(with __getitem__ and __len__), or a tensor of images")
            try:
                n = len(images)  # type: ignore[arg-type]
            except TypeError:
                raise TypeError(f"the dataset ({type(images).__name__}) has no len(); a view needs to know "
                                "how many images there are") from None
            ds, order = images, self._order
            get = ds.__getitem__ if order is None else _Reordered(ds, order)
            self._items = _Items(get, n, lambda i: f"item {i} of the {type(ds).__name__}", transform=transform,
                                 size=self._size, mean=mean, std=std)
            data_labels = _dataset_targets(ds, n)
            if data_labels is not None and order is not None:
                data_labels = data_labels[order]
            cls = getattr(ds, "classes", None)
            data_classes = [str(c) for c in cls] if isinstance(cls, (list, tuple)) and cls else None
            self._fp_parts += [type(ds).__module__ + "." + type(ds).__qualname__, str(n), repr(transform),
                               _hash_tensor_str([self._items.load(i)[0] for i in sorted({0, n // 2, n - 1}) if n])]
        elif isinstance(images, (list, tuple)) and images and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in images):
            self._tensor = as_batch(list(images), mean=mean, std=std)
        elif isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("images is empty (N = 0); pass at least one image")
            kinds = sorted({type(v).__name__ for v in images})
            raise TypeError(f"a list of images must hold PIL images, file paths or tensors/arrays of one kind, "
                            f"got {', '.join(kinds)}")
        elif isinstance(images, (torch.Tensor, np.ndarray)):
            self._tensor = images
        elif self._items is None:
            raise TypeError(
                f"images must be a tensor or array, a torch Dataset or DataLoader, a list of PIL images or file "
                f"paths, or a folder path, got {type(images).__name__}"
            )
        if self._items is not None and self._items.n == 0:
            raise ValueError("images is empty (N = 0); pass at least one image")
        if batch_size is not None:
            self.batch_size = _positive(batch_size, "batch_size")
        if num_workers is not None:
            if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
                raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
            self.num_workers = int(num_workers)
        self._cache = _BytesLRU(self.CACHE_BYTES)
        self._display = _BytesLRU(self.DISPLAY_BYTES)
        #: Images that could not be read: index -> why (filled as they are met).
        self.broken: dict[int, str] = {}
        self._first = None
        first_label = -1
        if self._items is not None:
            self._first, first_label = self._load(0)
        if self._tensor is not None:
            self._tensor_init(mean, std)
        self.mean, self.std = check_stats(mean, std, self.shape[0])
        self._labels = np.full(len(self), -1, np.int64)
        self._labels_known = np.zeros(len(self), bool)
        given = None
        if labels is not None:
            given = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
            if given.shape[0] != len(self):
                raise ValueError(
                    f"labels has {given.shape[0]} entries but there are {len(self)} images; give one label per image"
                )
        elif data_labels is not None:
            given = data_labels
        if given is not None:
            self._labels[:] = given.astype(np.int64)
            self._labels_known[:] = True
        elif self._tensor is not None:
            self._labels_known[:] = True  # an in-memory tensor has no labels of its own
        self._has_labels = given is not None
        if self._items is not None and given is None:
            self._has_labels = False  # until an item says otherwise (_note_labels)
            self._note_labels(np.array([0]), np.array([first_label]))
        cls = classes if classes is not None else data_classes
        self.classes: list[str] | None = None if cls is None else [str(c) for c in cls]

    @classmethod
    def of(cls, images: Any, labels: Any = None, classes: Any = None, **kw: Any) -> ImageSet:
        """``images`` itself when it is an ImageSet (``labels``/``classes`` then replace its
        own when given; normalization and reading options must not be passed), else a new one."""
        if isinstance(images, ImageSet):
            c = images.shape[0]
            same = {"mean": images.mean, "std": images.std}
            extra = [k for k, v in kw.items() if v is not None and not (
                k in same and same[k] is not None and np.asarray(v, np.float32).size in (1, c)
                and np.allclose(np.asarray(v, np.float32).reshape(-1), same[k]))]
            if extra:
                raise ValueError(f"images is an ImageSet, which has its own {', '.join(extra)}; "
                                 "pass them when making the ImageSet")
            if labels is not None or classes is not None:
                images = images.subset(np.arange(len(images)))
                if labels is not None:
                    arr = np.asarray(labels).reshape(-1)
                    if arr.shape[0] != len(images):
                        raise ValueError(f"labels has {arr.shape[0]} entries but there are {len(images)} images")
                    images._labels[:] = arr.astype(np.int64)
                    images._labels_known[:] = True
                    images._has_labels = True
                if classes is not None:
                    images.classes = [str(c) for c in classes]
            return images
        return cls(images, labels, classes, **kw)

    # ------------------------------------------------------------------ in-memory tensors
    def _tensor_init(self, mean: Any, std: Any) -> None:
        t = self._tensor
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() in (3, 4) and t.dtype == torch.float32:
            self._tensor = t if t.dim() == 4 else t[None]
            if self._tensor.shape[0] == 0:
                raise ValueError("images is empty (N = 0); pass at least one image")
            self._convert = None
        else:
            # anything else (uint8 arrays, float64, 3-D stacks): as_batch per slice, after one
            # check of the whole on its first image
            probe = as_batch(t[:1] if getattr(t, "ndim", 0) == 4 else t, mean=mean, std=std)
            if getattr(t, "ndim", 0) == 4:
                self._convert = (mean, std)
            else:  # a single image or a 3-D stack: small enough to convert once
                self._tensor = as_batch(t, mean=mean, std=std)
                self._convert = None
            del probe
        self._n = int(self._tensor.shape[0])
        if self._n == 0:
            raise ValueError("images is empty (N = 0); pass at least one image")

    @property
    def in_memory(self) -> torch.Tensor | None:
        """The whole set as one float32 N x C x H x W tensor when the images came as one
        (taken as is, no copy), else None."""
        return self._tensor if self._tensor is not None and self._convert is None else None

    # ------------------------------------------------------------------ sizes, labels, names
    def __len__(self) -> int:
        if self._items is not None:
            return self._items.n
        return self._n

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image (the first)."""
        first = self._first if self._first is not None else self.batch(0, 1)[0]
        return tuple(int(v) for v in first.shape)  # type: ignore[return-value]

    @property
    def labels(self) -> np.ndarray | None:
        """int64 (N,) labels, or None when the data has none, or before every image's label is
        known (labels carried by a dataset's items are learned as a pass reads them)."""
        if not self._has_labels or not self._labels_known.all():
            return None
        return self._labels

    @property
    def has_labels(self) -> bool:
        """Whether the data has labels (given, a dataset's ``targets``, its items, folders)."""
        return self._has_labels

    def _note_labels(self, idx: np.ndarray, labels: np.ndarray) -> None:
        if self._labels_known.all() and (self._has_labels or self._tensor is not None):
            return
        if (labels >= 0).any():
            self._has_labels = True
        self._labels[idx] = labels
        self._labels_known[idx] = True

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
        """The label of image ``index`` (reading the image if that is how it is known), or None."""
        if not self._labels_known[index]:
            try:
                self._load(index)
            except ValueError:
                return None
        if not self._has_labels:
            return None
        v = int(self._labels[index])
        return None if v < 0 else v

    # ------------------------------------------------------------------ reading
    def _load(self, i: int, keep: bool = True) -> tuple[torch.Tensor, int]:
        """Image ``i`` (float32 C x H x W) and its label; ValueError naming the item when it
        cannot be read. ``keep``: put it in the cache (a pass over the data reads each image
        once and does not)."""
        assert self._items is not None
        hit = self._cache.get(i)
        if hit is not None:
            return hit, int(self._labels[i]) if hasattr(self, "_labels") else -1
        try:
            x, label = self._items.load(i)
        except (ValueError, TypeError) as exc:
            self.broken[i] = str(exc)
            raise
        if self._first is not None and tuple(x.shape) != tuple(self._first.shape):
            raise ValueError(
                f"image {i} ({self._items.where(i)}) is {'x'.join(map(str, x.shape))} but the first image is "
                f"{'x'.join(map(str, self._first.shape))}; pass size= (e.g. size=224) or a transform that "
                "resizes, so every image has one size"
            )
        if keep:
            self._cache.put(i, x)
        if hasattr(self, "_labels"):
            self._note_labels(np.array([i]), np.array([label]))
        return x, label

    def item(self, index: int) -> torch.Tensor:
        """Image ``index`` as the model takes it: float32 1 x C x H x W on the CPU."""
        index = self.check_index(index)
        if self._items is None:
            return self.batch(index, index + 1)
        return self._load(index)[0][None]

    def batch(self, start: int, stop: int) -> torch.Tensor:
        """Images ``start:stop`` as one float32 B x C x H x W tensor on the CPU (read now)."""
        if self._items is None:
            sl = self._tensor[start:stop]
            return sl if self._convert is None else as_batch(sl, mean=self._convert[0], std=self._convert[1])
        return torch.stack([self._load(i)[0] for i in range(start, min(stop, len(self)))])

    def take(self, indices: Sequence[int]) -> torch.Tensor:
        """The images at ``indices``, float32 B x C x H x W on the CPU."""
        idx = [self.check_index(int(i)) for i in indices]
        if self._items is None and self._convert is None:
            return self._tensor[torch.as_tensor(idx, dtype=torch.long)]
        return torch.cat([self.item(i) for i in idx])

    def batches(self, start: int = 0, stop: int | None = None, *, batch_size: int | None = None) -> Iterator[Batch]:
        """Images ``start:stop`` in batches (:class:`Batch`), read by ``num_workers`` worker
        processes when there are any; an image that cannot be read is zeros with ``valid``
        False (and its reason in :attr:`broken`). Labels read on the way are noted."""
        n = len(self)
        stop = n if stop is None else min(int(stop), n)
        bs = _positive(batch_size or self.batch_size, "batch_size")
        if self._items is None:
            for s in range(start, stop, bs):
                e = min(s + bs, stop)
                yield Batch(np.arange(s, e), self.batch(s, e), self._labels[s:e].copy(), np.ones(e - s, bool), {})
            return
        shape = self.shape
        if self.num_workers > 0 and stop - start > bs:
            loader = torch.utils.data.DataLoader(
                _Reader(self._items, shape), batch_size=bs, sampler=range(start, stop),
                num_workers=self.num_workers, collate_fn=_collate,
            )
            for b in loader:
                self._absorb(b)
                yield b
            return
        reader = _Reader(self._items, shape, self)
        for s in range(start, stop, bs):
            b = _collate([reader[i] for i in range(s, min(s + bs, stop))])
            self._absorb(b)
            yield b

    def _absorb(self, b: Batch) -> None:
        self.broken.update(b.errors)
        self._note_labels(b.indices, b.labels)

    def broken_note(self) -> str | None:
        """A sentence on the images that could not be read (for a view's note), or None."""
        if not self.broken:
            return None
        first = next(iter(self.broken.values()))
        k = len(self.broken)
        return (f"{k} image{'s' if k > 1 else ''} could not be read and {'are' if k > 1 else 'is'} left out of "
                f"passes over the data (first: {first}).")

    # ------------------------------------------------------------------ display
    def display(self, index: int) -> np.ndarray:
        """Image ``index`` as shown (normalization undone), uint8 (H, W, C)."""
        img = self._display.get(index)
        if img is None:
            img = to_display(self.item(index)[0], mean=self.mean, std=self.std)
            self._display.put(index, img)
        return img

    def display_rgb(self, index: int) -> np.ndarray:
        """Like :meth:`display`, with gray expanded to 3 channels: uint8 (H, W, 3)."""
        img = self.display(index)
        return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]

    # ------------------------------------------------------------------ subsets, identity
    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        """The images at ``indices`` as an ImageSet that reads through this one (caches shared)."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError("a subset needs at least one index")
        for i in (int(idx.min()), int(idx.max())):
            self.check_index(i)
        mem = self.in_memory
        if mem is not None and idx.size == int(idx[-1]) - int(idx[0]) + 1 and (np.diff(idx) == 1).all():
            sub = ImageSet(mem[int(idx[0]) : int(idx[-1]) + 1], mean=self.mean, std=self.std)  # a view, no copy
        else:
            sub = object.__new__(ImageSet)
            sub.__dict__.update(self.__dict__)
            sub._items = _Items(_SubGet(self, idx), int(idx.size), lambda i, p=self, ix=idx: p._where(int(ix[i])),
                                transform=None, size=None, mean=None, std=None)
            sub._tensor = None
            sub._first = self.item(int(idx[0]))[0]
            sub._cache = _BytesLRU(self.CACHE_BYTES // 4)
            sub._display = _BytesLRU(self.DISPLAY_BYTES // 4)
            sub.broken = {}
            sub._fingerprint = None
            sub._fp_parts = [self.fingerprint(), _hash_bytes(idx.tobytes())]
            sub.source = f"subset of {self.source}"
        sub._labels = self._labels[idx].copy()
        sub._labels_known = self._labels_known[idx].copy()
        sub._has_labels = self._has_labels
        sub.classes = None if self.classes is None else list(self.classes)
        sub.batch_size, sub.num_workers = self.batch_size, self.num_workers
        return sub

    def __getitem__(self, key: Any) -> Any:
        """``images[i]``: image i as the model takes it (float32 C x H x W); ``images[a:b]`` or
        ``images[[i, j, ...]]``: those images as an ImageSet (:meth:`subset`)."""
        if isinstance(key, slice):
            return self.subset(np.arange(len(self))[key])
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return self.item(int(key) + (len(self) if key < 0 else 0))[0]
        return self.subset(np.asarray(key, np.int64))

    def _where(self, i: int) -> str:
        return self._items.where(i) if self._items is not None else f"image {i}"

    def fingerprint(self) -> str:
        """A digest that changes when the images change (for caching results over the data):
        the bytes of an in-memory tensor; files' paths, sizes and modification times; a
        dataset's type, length, transform and three of its images."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            if self._tensor is not None:
                _hash_tensor(h, self._tensor)
            for p in self._fp_parts:
                h.update(p.encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        c, hh, w = self.shape
        return f"ImageSet({len(self)} images of {c}x{hh}x{w} from {self.source})"


class _Reordered:
    """``dataset[order[i]]``: a loader's order over its dataset (picklable)."""

    def __init__(self, ds: Any, order: np.ndarray) -> None:
        self.ds, self.order = ds, order

    def __call__(self, i: int) -> Any:
        return self.ds[int(self.order[i])]


class _SubGet:
    """Item ``i`` of a subset: its parent's image (picklable for workers)."""

    def __init__(self, parent: ImageSet, idx: np.ndarray) -> None:
        self.parent, self.idx = parent, idx

    def __call__(self, i: int) -> torch.Tensor:
        return self.parent.item(int(self.idx[i]))[0]


class _Reader(torch.utils.data.Dataset):
    """Items of an image source as (index, image or None, label, error) for a batch."""

    def __init__(self, items: _Items, shape: tuple[int, ...], owner: ImageSet | None = None) -> None:
        self.items, self.shape, self.owner = items, shape, owner

    def __len__(self) -> int:
        return self.items.n

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, int, str | None]:
        try:
            if self.owner is not None:
                x, label = self.owner._load(i, keep=False)
            else:
                x, label = self.items.load(i)
                if tuple(x.shape) != tuple(self.shape):
                    raise ValueError(f"image {i} ({self.items.where(i)}) is {'x'.join(map(str, x.shape))} but the "
                                     f"first image is {'x'.join(map(str, self.shape))}; pass size= or a resizing transform")
            return i, x, label, None
        except (ValueError, TypeError) as exc:
            return i, torch.zeros(self.shape), -1, str(exc)


def _collate(items: list) -> Batch:
    idx = np.asarray([it[0] for it in items], np.int64)
    x = torch.stack([it[1] for it in items])
    labels = np.asarray([it[2] for it in items], np.int64)
    errors = {int(it[0]): it[3] for it in items if it[3] is not None}
    valid = np.asarray([it[3] is None for it in items], bool)
    return Batch(idx, x, labels, valid, errors)


def _first_mode(files: Sequence[Path]) -> str | None:
    """The PIL mode every image of a folder is converted to: gray when the first readable
    image is gray, else RGB."""
    from PIL import Image

    for f in files[:16]:
        try:
            with Image.open(f) as im:
                return "L" if im.mode in ("1", "L", "I;16", "I", "F") else "RGB"
        except Exception:  # noqa: BLE001 - a broken file: try the next
            continue
    return "RGB"


def _dataset_targets(ds: Any, n: int) -> np.ndarray | None:
    """A dataset's labels without reading its images: its ``targets`` (torchvision's
    datasets, ImageFolder) when there is one label per item."""
    t = getattr(ds, "targets", None)
    if t is None:
        return None
    try:
        arr = np.asarray(t.cpu() if isinstance(t, torch.Tensor) else t).reshape(-1)
    except Exception:  # noqa: BLE001 - not an array of labels
        return None
    if arr.shape[0] != n or not np.issubdtype(arr.dtype, np.integer):
        return None
    return arr.astype(np.int64)


def _hash_bytes(b: bytes) -> str:
    return hashlib.blake2b(b, digest_size=16).hexdigest()


def _hash_tensor_str(ts: list[torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in ts:
        _hash_tensor(h, t)
    return h.hexdigest()


def _positive(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    return int(v)
