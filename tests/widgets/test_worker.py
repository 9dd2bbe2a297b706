"""Tests for the background worker (latest request wins). Views share no lock on the model:
each runs its own private view of it (tests/core/test_runner.py)."""

from __future__ import annotations

import logging
import threading

import pytest
from cnnwidgets.widgets._worker import LatestWorker


@pytest.fixture
def worker():
    w = LatestWorker("cnnwidgets-test-worker")
    yield w
    w.close()


def blocker(w: LatestWorker) -> tuple[threading.Event, threading.Event]:
    """Occupy ``w`` with a job that runs until the returned ``release`` event is set."""
    started, release = threading.Event(), threading.Event()

    def job():
        started.set()
        release.wait(10)

    w.submit(job)
    assert started.wait(5)
    return started, release


def test_runs_a_job_in_its_own_thread(worker):
    ran: list[str] = []
    worker.submit(lambda: ran.append(threading.current_thread().name))
    assert worker.wait(5)
    assert ran == ["cnnwidgets-test-worker"]
    assert worker.done == 1 and worker.dropped == 0
    assert worker._thread.daemon


def test_latest_wins(worker):
    _, release = blocker(worker)
    ran: list[int] = []
    for i in range(10):
        worker.submit(lambda i=i: ran.append(i))
    assert worker.busy
    assert worker.dropped == 9
    release.set()
    assert worker.wait(5)
    assert ran == [9]
    assert worker.done == 2  # the blocker and job 9
    assert worker.dropped + worker.done == 11  # every submitted job is accounted for
    assert not worker.busy


def test_wait_blocks_until_idle(worker):
    _, release = blocker(worker)
    assert worker.wait(0.05) is False  # still running
    ran = []
    worker.submit(lambda: ran.append(1))
    assert worker.wait(0.05) is False
    release.set()
    assert worker.wait(5) is True
    assert ran == [1]


def test_wait_on_an_idle_worker_returns_at_once(worker):
    assert worker.wait(0) is True
    assert not worker.busy


def test_exception_does_not_kill_the_thread(worker, caplog):
    def boom():
        raise RuntimeError("job failed")

    with caplog.at_level(logging.WARNING, logger="cnnwidgets"):
        worker.submit(boom)
        assert worker.wait(5)
    assert worker.alive
    assert "job failed" in caplog.text
    ran = []
    worker.submit(lambda: ran.append("after"))
    assert worker.wait(5)
    assert ran == ["after"]
    assert worker.done == 2


def test_close_joins_the_thread():
    w = LatestWorker("cnnwidgets-test-close")
    assert w.alive
    w.close()
    assert not w.alive
    assert not w._thread.is_alive()
    ran = []
    w.submit(lambda: ran.append(1))  # ignored after close
    assert w.wait(1)
    assert ran == []
    w.close()  # twice is fine


def test_close_drops_a_pending_job_and_waits_for_the_running_one():
    w = LatestWorker("cnnwidgets-test-close2")
    _, release = blocker(w)
    ran = []
    w.submit(lambda: ran.append("pending"))
    threading.Timer(0.1, release.set).start()
    w.close()  # joins: returns once the running job is over
    assert not w.alive
    assert ran == []


def test_close_from_inside_a_job_does_not_deadlock():
    w = LatestWorker("cnnwidgets-test-close3")
    w.submit(w.close)
    w._thread.join(5)
    assert not w.alive




def test_an_idle_worker_thread_ends_and_the_next_job_starts_a_new_one(monkeypatch):
    monkeypatch.setattr(LatestWorker, "IDLE_SECONDS", 0.2)
    w = LatestWorker("cnnwidgets-test-idle")
    first = w._thread
    first.join(5)
    assert not first.is_alive() and not w.alive  # no idle thread left behind
    ran = threading.Event()
    w.submit(ran.set)
    assert ran.wait(5) and w.wait(5)
    assert w._thread is not first
    w.close()
    assert not w.alive
