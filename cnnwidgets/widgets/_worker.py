"""Background work for widgets: the latest request wins, the notebook never blocks."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from ._base import log

_MODEL_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
    """One re-entrant lock per model, so that views sharing a model never run it at once
    (each call switches it to eval mode and back)."""
    with _REGISTRY_LOCK:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.RLock()
        return lock


class LatestWorker:
    """A daemon thread that runs only the most recent job submitted to it.

    ``submit(fn)`` replaces any job that has not started yet, so rapid slider moves do not
    queue up work: when the thread gets free it runs the newest request and drops the rest.
    ``wait()`` blocks until the thread is idle; ``close()`` stops it.
    """

    def __init__(self, name: str = "cnnwidgets-worker") -> None:
        self._cond = threading.Condition()
        self._job: Callable[[], None] | None = None
        self._busy = False
        self._closed = False
        self.dropped = 0
        self.done = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], None]) -> None:
        with self._cond:
            if self._closed:
                return
            if self._job is not None:
                self.dropped += 1
            self._job = fn
            self._cond.notify_all()

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until no job is pending or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._job is None and not self._busy, timeout=timeout)

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._job is not None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._job = None
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._closed)
                if self._closed:
                    self._cond.notify_all()
                    return
                job, self._job = self._job, None
                self._busy = True
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - a failed update must not kill the thread
                log.warning("cnnwidgets: background update failed: %s: %s", type(exc).__name__, exc)
            finally:
                with self._cond:
                    self._busy = False
                    self.done += 1
                    self._cond.notify_all()
