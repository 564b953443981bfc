"""@timer in a running container: on schedule, never overlapping, errors don't stop it."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from amqprpc import timer

pytestmark = pytest.mark.integration

WAIT = 10.0


class Runs:
    """Run records of a timer, with a condition to wait on (no sleeps in the tests)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.active = 0
        self.max_active = 0
        self.changed = threading.Condition()

    def enter(self) -> int:
        with self.changed:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.starts.append(time.monotonic())
            self.changed.notify_all()
            return len(self.starts)

    def leave(self) -> None:
        with self.changed:
            self.active -= 1
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.starts) >= count, timeout), \
                f"only {len(self.starts)} runs of {count} within {timeout}s"


def test_timer_runs_on_schedule_and_never_overlaps(container_factory, unique_name):
    runs = Runs()
    release = threading.Event()
    interval = 0.05

    class Ticker:
        name = unique_name("ticker")

        @timer(interval)
        def tick(self) -> None:
            number = runs.enter()
            try:
                if number == 2:
                    release.wait(WAIT)  # a run far slower than its interval
            finally:
                runs.leave()

    started = time.monotonic()
    container_factory(Ticker)
    runs.wait_for(2)
    assert runs.starts[0] - started >= interval  # not eager: the first run waits an interval
    # Run 2 is stuck for ~10 intervals: an overlapping timer would start run 3 meanwhile.
    with runs.changed:
        overlapped = runs.changed.wait_for(lambda: len(runs.starts) > 2, timeout=10 * interval)
    assert not overlapped
    assert runs.active == 1
    released = time.monotonic()
    release.set()
    runs.wait_for(4)
    assert runs.max_active == 1
    # Missed ticks are skipped, not caught up in a burst: a catch-up would start runs 3, 4,
    # ... at once; here run 3 waits for the next tick and run 4 for the one after.
    assert runs.starts[3] - released >= interval


def test_eager_timer_runs_at_once_and_survives_errors(container_factory, unique_name):
    runs = Runs()

    class Eager:
        name = unique_name("eager")

        @timer(3600, eager=True)
        def hourly(self) -> None:
            runs.enter()
            runs.leave()

        @timer(0.02)
        async def failing(self) -> None:
            await asyncio.sleep(0)
            raise RuntimeError("each run fails; the timer goes on")

    failures = Runs()
    container = container_factory(Eager)
    container.worker_observers.append(
        lambda ctx, result, exc_info: failures.enter() if ctx.method_name == "failing" else None)
    runs.wait_for(1)  # an hour-long interval: only eagerness runs it within the test
    failures.wait_for(3)
    assert len(runs.starts) == 1
