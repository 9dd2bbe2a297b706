"""Passes over a whole data set: streamed in batches on the model's device, stoppable, resumable,
and cached per (model weights, what is computed, data).

:func:`stream_pass` is the one loop every data-set-wide result goes through (the channel
statistics behind top images, the features of a map, class predictions): it reads an
:class:`~cnnwidgets.core.images.ImageSet` batch by batch (with the loader's worker processes
when it has them), moves each batch to the device, calls ``compute`` and writes the rows it
returns into arrays of N rows. The arrays live in a cache folder as numpy memory maps
(:func:`cache_dir`), so re-running a cell, a second view over the same layer or a new kernel
session finds them finished, and a stopped pass resumes from the first row not done. The key
holds the model's weights (:func:`model_fingerprint`), so training the model invalidates them.

The cache folder is ``$CNNW_CACHE_DIR``, else ``~/.cache/cnnwidgets``; ``CNNW_CACHE_DIR=off``
(or :func:`set_cache_dir(None) <set_cache_dir>`) keeps results in memory only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .images import Batch, ImageSet

__all__ = ["Stopped", "PassResult", "stream_pass", "model_fingerprint", "cache_dir", "set_cache_dir", "clear_cache"]


class Stopped(Exception):
    """A pass over the data was stopped; ``done`` of ``total`` images were processed (a later
    call resumes from there)."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"stopped after {done} of {total} images")
        self.done, self.total = done, total


_OFF = ("", "0", "off", "none", "false")
_cache_override: list[Any] = []  # [path or None] once set_cache_dir was called


def cache_dir() -> Path | None:
    """The folder of cached pass results, or None when results stay in memory only."""
    if _cache_override:
        return _cache_override[0]
    env = os.environ.get("CNNW_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    return Path.home() / ".cache" / "cnnwidgets"


def set_cache_dir(path: str | os.PathLike | None) -> None:
    """Keep pass results in ``path`` from now on (None: in memory only)."""
    _cache_override[:] = [None if path is None else Path(path).expanduser()]


def clear_cache() -> None:
    """Delete every cached pass result (in memory and in :func:`cache_dir`)."""
    with _lock:
        _memory.clear()
    d = cache_dir()
    if d is not None and (d / "passes").is_dir():
        shutil.rmtree(d / "passes", ignore_errors=True)


# ---------------------------------------------------------------------------- model identity

_fp_memo: dict[int, tuple[tuple, str]] = {}
_fp_lock = threading.Lock()


def model_fingerprint(model: nn.Module) -> str:
    """A digest of the model's parameters and buffers (names, shapes, dtypes and values).

    Recomputed only when a tensor's storage or version counter changed (an optimizer step or
    ``load_state_dict`` writes in place and bumps it), so calling it per pass is cheap.
    """
    state = [(k, v) for k, v in model.state_dict(keep_vars=True).items() if isinstance(v, torch.Tensor)]
    sig = tuple((k, v.data_ptr(), v._version, tuple(v.shape), str(v.dtype)) for k, v in state)
    with _fp_lock:
        hit = _fp_memo.get(id(model))
        if hit is not None and hit[0] == sig:
            return hit[1]
    h = hashlib.blake2b(digest_size=16)
    h.update(type(model).__qualname__.encode())
    for k, v in state:
        t = v.detach()
        h.update(f"{k}\0{tuple(t.shape)}\0{t.dtype}\n".encode())
        if t.numel():
            arr = t.cpu().contiguous().reshape(-1)
            h.update(arr.numpy().tobytes() if arr.dtype in (torch.bool, torch.bfloat16) or arr.is_quantized
                     else arr.view(torch.uint8).numpy())
    digest = h.hexdigest()
    with _fp_lock:
        if len(_fp_memo) > 64:
            _fp_memo.clear()
        _fp_memo[id(model)] = (sig, digest)
    return digest


# ---------------------------------------------------------------------------- results


@dataclass
class PassResult:
    """The arrays of a pass (name -> N x ... array, a memory map when cached on disk) and how
    many images are done (a prefix: rows ``0:done``)."""

    key: str
    n: int
    arrays: dict[str, np.ndarray]
    done: int = 0
    folder: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def complete(self) -> bool:
        return self.done >= self.n

    @property
    def valid(self) -> np.ndarray:
        """bool (N,): False for images that could not be read (and rows not done yet)."""
        return self.arrays["_valid"]

    @property
    def labels(self) -> np.ndarray:
        """int64 (N,): labels the data carried (-1: none)."""
        return self.arrays["_label"]

    def _save_done(self) -> None:
        if self.folder is None:
            return
        for a in self.arrays.values():
            if isinstance(a, np.memmap):
                a.flush()
        tmp = self.folder / "meta.json.tmp"
        tmp.write_text(json.dumps({"n": self.n, "done": self.done}))
        os.replace(tmp, self.folder / "meta.json")


_memory: OrderedDict[str, PassResult] = OrderedDict()
_lock = threading.Lock()
#: In-memory pass results kept (the least recently used go first; on-disk ones stay on disk).
KEEP_IN_MEMORY = 8


def _open(key: str, n: int, spec: Mapping[str, tuple[tuple[int, ...], Any]]) -> PassResult:
    """The result for ``key``: from memory, from the cache folder, or new (zeros, done 0)."""
    with _lock:
        hit = _memory.get(key)
        if hit is not None:
            _memory.move_to_end(key)
            return hit
    spec = {**spec, "_valid": ((), np.bool_), "_label": ((), np.int64)}
    root = cache_dir()
    res: PassResult | None = None
    if root is not None:
        folder = root / "passes" / key
        try:
            res = _open_disk(folder, key, n, spec)
        except (OSError, ValueError):
            res = None  # an unwritable or broken cache folder: compute in memory
    if res is None:
        arrays = {name: np.zeros((n, *shape), dtype) for name, (shape, dtype) in spec.items()}
        arrays["_label"][:] = -1
        res = PassResult(key, n, arrays)
    with _lock:
        _memory[key] = res
        while len(_memory) > KEEP_IN_MEMORY:
            _memory.popitem(last=False)
    return res


def _open_disk(folder: Path, key: str, n: int, spec) -> PassResult:
    meta = folder / "meta.json"
    done = 0
    if meta.exists():
        info = json.loads(meta.read_text())
        if info.get("n") == n and all((folder / f"{k}.npy").exists() for k in spec):
            done = int(info.get("done", 0))
        else:
            shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in spec.items():
        path = folder / f"{name}.npy"
        if done and path.exists():
            a = np.lib.format.open_memmap(path, mode="r+")
            if a.shape != (n, *shape) or a.dtype != np.dtype(dtype):
                raise ValueError("cached array of another shape")
        else:
            a = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n, *shape))
            if name == "_label":
                a[:] = -1
        arrays[name] = a
    res = PassResult(key, n, arrays, done, folder)
    if not done:
        res._save_done()
    return res


def pass_key(*parts: Any) -> str:
    """A key for a pass: a digest of its parts' text."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def stream_pass(
    images: ImageSet,
    what: tuple,
    outputs: Mapping[str, tuple[tuple[int, ...], Any]],
    compute: Callable[[torch.Tensor, Batch], Mapping[str, torch.Tensor | np.ndarray]],
    *,
    model: nn.Module | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
    stop: threading.Event | Callable[[], bool] | None = None,
    cache: bool = True,
    on_open: Callable[[PassResult], Any] | None = None,
) -> PassResult:
    """Run ``compute`` over every image of ``images``, batch by batch, and keep its rows.

    Parameters
    ----------
    images : ImageSet
    what : tuple
        What is computed (e.g. ``("channel_stats", layer)``): with the model's weights and
        the data's fingerprint it makes the cache key.
    outputs : mapping
        name -> (shape of one row, dtype) of each array ``compute`` returns.
    compute : callable
        ``compute(x, batch)`` with ``x`` the batch on ``device`` in ``dtype``; returns
        name -> B x ... rows (tensors are moved to the CPU).
    model : nn.Module, optional
        Whose weights key the cache (a result over another model's weights is never reused).
    progress : callable, optional
        ``progress(done, total)`` after every batch (and first with the rows already
        done, for a cached or resumed pass).
    stop : threading.Event or callable, optional
        Checked between batches: when set (or ``stop()`` returns True), raises :class:`Stopped` (the rows done so far are
        kept, and the next call resumes after them).
    cache : bool
        False: compute afresh, in memory, whatever is cached.
    on_open : callable, optional
        Called with the :class:`PassResult` before the first batch (to read rows as they
        are done, e.g. thumbnails for a page).

    Returns
    -------
    PassResult
        With ``done == N``. Images that could not be read have zero rows and ``valid``
        False; their reasons are in ``images.broken``.
    """
    n = len(images)
    key = pass_key(what, sorted((k, tuple(s), np.dtype(d).str) for k, (s, d) in outputs.items()),
                   None if model is None else model_fingerprint(model), images.fingerprint(), n)
    if not cache:
        with _lock:
            _memory.pop(key, None)
        res = PassResult(key, n, {name: np.zeros((n, *s), d) for name, (s, d) in
                                  {**outputs, "_valid": ((), np.bool_), "_label": ((), np.int64)}.items()})
        res.arrays["_label"][:] = -1
    else:
        res = _open(key, n, outputs)
    with res.lock:  # two views asking for the same pass: the second waits and finds it done
        if on_open is not None:
            on_open(res)
        if res.done:
            known = np.arange(res.done)
            images._note_labels(known, np.asarray(res.labels[: res.done]))
            images.broken.update({int(i): "could not be read (an earlier pass found it)" for i in
                                  np.flatnonzero(~np.asarray(res.valid[: res.done])) if int(i) not in images.broken})
        if progress is not None and res.done:
            progress(res.done, n)  # where a cached or resumed pass starts
        if res.complete:
            return res
        non_blocking = torch.device(device).type == "cuda"
        stopped = stop.is_set if isinstance(stop, threading.Event) else stop
        for b in images.batches(res.done, n, batch_size=batch_size):
            if stopped is not None and stopped():
                raise Stopped(res.done, n)
            x = b.x.to(device=device, dtype=dtype, non_blocking=non_blocking)
            rows = compute(x, b)
            s, e = int(b.indices[0]), int(b.indices[-1]) + 1
            for name, v in rows.items():
                if isinstance(v, torch.Tensor):
                    v = v.detach().to("cpu").numpy()
                res.arrays[name][s:e] = v
            res.arrays["_valid"][s:e] = b.valid
            res.arrays["_label"][s:e] = b.labels
            res.done = e
            res._save_done()
            if progress is not None:
                progress(e, n)
        return res
