"""The handler pool: threads start as calls need them, never more than its size."""

from __future__ import annotations

import threading

import pytest

from amqprpc.pool import HandlerPool


def test_runs_calls_on_named_threads() -> None:
    pool = HandlerPool(2, "amqprpc-test")
    ran = threading.Event()
    names: list[str] = []

    def call() -> None:
        names.append(threading.current_thread().name)
        ran.set()

    pool.submit(call)
    assert ran.wait(5)
    pool.shutdown(wait=True)
    assert names == ["amqprpc-test_0"]


def test_grows_to_its_size_and_no_further() -> None:
    pool = HandlerPool(3, "amqprpc-test")
    cond = threading.Condition()
    running = 0
    finished = 0
    release = threading.Event()

    def call() -> None:
        nonlocal running, finished
        with cond:
            running += 1
            cond.notify_all()
        release.wait(5)
        with cond:
            running -= 1
            finished += 1
            cond.notify_all()

    for _ in range(5):
        pool.submit(call)
    with cond:
        assert cond.wait_for(lambda: running == 3, 5)  # three at once: one thread each
    assert len(pool._threads) == 3  # the other two wait for a free thread
    release.set()
    with cond:
        assert cond.wait_for(lambda: finished == 5, 5)
    pool.shutdown(wait=True)
    assert len(pool._threads) == 3


def test_an_idle_thread_is_reused() -> None:
    pool = HandlerPool(4, "amqprpc-test")
    for _ in range(20):
        done = threading.Event()
        pool.submit(done.set)
        assert done.wait(5)
    pool.shutdown(wait=True)
    assert len(pool._threads) == 1


def test_a_raising_call_keeps_its_thread(caplog: pytest.LogCaptureFixture) -> None:
    pool = HandlerPool(1, "amqprpc-test")
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("boom")

    pool.submit(boom)
    pool.submit(done.set)
    assert done.wait(5)
    pool.shutdown(wait=True)
    assert "boom" in caplog.text


def test_shutdown_cancels_what_has_not_started() -> None:
    pool = HandlerPool(1, "amqprpc-test")
    started, release = threading.Event(), threading.Event()

    def busy() -> None:
        started.set()
        release.wait(5)

    def pending() -> None:
        raise AssertionError("a cancelled call ran")

    pool.submit(busy)
    assert started.wait(5)
    pool.submit(pending)
    release.set()
    cancelled = pool.shutdown(wait=True, cancel_pending=True)
    assert cancelled == [pending]


def test_submit_after_shutdown_names_the_pool() -> None:
    pool = HandlerPool(1, "amqprpc-orders")
    pool.shutdown()
    with pytest.raises(RuntimeError, match="amqprpc-orders: handler pool is shut down"):
        pool.submit(lambda: None)


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        HandlerPool(0, "amqprpc-test")
