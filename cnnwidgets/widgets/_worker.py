"""Background work for widgets: the latest request wins, the notebook never blocks.

Every background thread of the widgets is started with :func:`start_thread`, which records it
with a function that asks it to stop. One :mod:`atexit` hook (:func:`stop_all`) asks every
thread still running to stop and joins them with a bounded timeout, so that a script ending
while a view still computes exits normally: a daemon thread still inside torch or openTSNE
native code when the interpreter finalizes aborts the process (``terminate called without an
active exception``, exit status 134). The threads' loops check their stop flag between steps
and batches.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ._base import log

#: Seconds the exit hook waits, in all, for the background threads to stop.
EXIT_TIMEOUT = 10.0

#: Running background threads and how to ask each one to stop. Holds no widget: a stop
#: function is a worker's or an Event's method, never a widget's.
_JOBS: dict[threading.Thread, Callable[[], None]] = {}
_JOBS_LOCK = threading.Lock()


def start_thread(target: Callable[[], None], name: str, stop: Callable[[], None]) -> threading.Thread:
    """Start ``target`` in a daemon thread called ``name``; ``stop()`` must ask it to end soon
    (set the flag its loop checks) without blocking. The thread is recorded until it ends, for
    :func:`stop_all`."""

    def run() -> None:
        try:
            target()
        finally:
            with _JOBS_LOCK:
                _JOBS.pop(thread, None)

    thread = threading.Thread(target=run, name=name, daemon=True)
    with _JOBS_LOCK:
        _JOBS[thread] = stop
    try:
        thread.start()
    except BaseException:
        with _JOBS_LOCK:
            _JOBS.pop(thread, None)
        raise
    return thread


def stop_all(timeout: float = EXIT_TIMEOUT) -> bool:
    """Ask every background thread to stop, then join them within ``timeout`` seconds in all.

    Registered with :mod:`atexit`. Returns True when none is left running.
    """
    with _JOBS_LOCK:
        jobs = list(_JOBS.items())
    for _thread, stop in jobs:
        try:
            stop()
        except Exception:  # noqa: BLE001 - one failing stop must not keep the others running
            pass
    deadline = time.monotonic() + timeout
    me = threading.current_thread()
    for thread, _stop in jobs:
        if thread is not me:
            thread.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t, _ in jobs if t is not me)


atexit.register(stop_all)

class LatestWorker:
    """A daemon thread that runs only the most recent job submitted to it.

    ``submit(fn)`` replaces any job that has not started yet, so rapid slider moves do not
    queue up work: when the thread gets free it runs the newest request and drops the rest.
    ``wait()`` blocks until the thread is idle; ``close()`` stops it.

    The thread runs a method of the worker only, and forgets each job once it has run, so it
    never keeps the widget that owns the worker alive. With ``owner``, the thread also ends
    when ``owner`` is garbage collected without having closed the worker. ``stop`` (a
    ``threading.Event`` the jobs check between their steps) is set whenever the worker is asked
    to close (by ``close()``, its owner's collection or the exit hook), so a long job ends early.

    A thread idle for :attr:`IDLE_SECONDS` ends, and the next ``submit`` starts a new one: a
    view left open (a re-run cell keeps the old view in ipywidgets' registry until it is
    closed) keeps no idle thread.
    """

    #: Seconds without a job after which the thread ends (a new one starts on the next job).
    IDLE_SECONDS = 30.0

    def __init__(self, name: str = "cnnwidgets-worker", owner: Any = None, stop: Any = None) -> None:
        self._stop_event = stop
        self._cond = threading.Condition()
        self._job: Callable[[], None] | None = None
        self._busy = False
        self._closed = False
        self.dropped = 0
        self.done = 0
        # signals only (no join): a finalizer may run in any thread, this one included
        self._finalizer = weakref.finalize(owner, self._signal_close) if owner is not None else None
        if self._finalizer is not None:
            self._finalizer.atexit = False  # stop_all() handles the exit
        self._name = name
        # a failed job is reported to the owner's view (BaseWidget.report_failure), never a
        # strong reference: the worker must not keep its widget alive
        self._owner = weakref.ref(owner) if owner is not None else None
        self._thread: threading.Thread | None = start_thread(self._run, name, self._signal_close)

    def submit(self, fn: Callable[[], None]) -> None:
        with self._cond:
            if self._closed:
                return
            if self._job is not None:
                self.dropped += 1
            self._job = fn
            if self._thread is None:  # ended after being idle: a new one takes the job
                self._thread = start_thread(self._run, self._name, self._signal_close)
            self._cond.notify_all()

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until no job is pending or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._job is None and not self._busy, timeout=timeout)

    @property
    def pending(self) -> bool:
        """Whether a job is waiting: a running job that checks this between its steps ends
        early, since its result would be replaced at once (``stop=lambda: worker.pending``)."""
        with self._cond:
            return self._job is not None or self._closed

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._job is not None

    def _signal_close(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()
        with self._cond:
            self._closed = True
            self._job = None
            self._cond.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        """Drop a pending job, let a running one finish (``timeout`` seconds at most) and end
        the thread. Safe to call twice, and from inside a job."""
        if self._finalizer is not None:
            self._finalizer.detach()
        self._signal_close()
        th = self._thread
        if th is not None and threading.current_thread() is not th:
            th.join(timeout=timeout)

    @property
    def alive(self) -> bool:
        th = self._thread
        return th is not None and th.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._job is not None or self._closed, timeout=self.IDLE_SECONDS):
                    self._thread = None  # idle: end; submit() starts a new thread
                    return
                if self._closed:
                    self._cond.notify_all()
                    return
                job, self._job = self._job, None
                self._busy = True
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - a failed update must not kill the thread
                if not self._closed:  # a job cut short by close() is not worth a warning
                    log.warning("cnnwidgets: background update failed: %s: %s", type(exc).__name__, exc)
                    owner = self._owner() if self._owner is not None else None
                    report = getattr(owner, "report_failure", None)
                    if report is not None:
                        try:
                            report(exc)
                        except Exception:  # noqa: BLE001, S110 - the log line above already says it
                            pass
            finally:
                job = None  # the job (a closure over the widget) must not outlive its run
                with self._cond:
                    self._busy = False
                    self.done += 1
                    self._cond.notify_all()
