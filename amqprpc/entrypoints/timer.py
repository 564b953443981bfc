"""``@timer(interval, eager=False)``: run a method every ``interval`` seconds in each process.

Every container that runs the service runs its timers: with ``--workers 4`` a timer fires
in each of the four processes (use a ``SINGLETON`` event or a lock for once-per-cluster).

Runs fall on a fixed grid (start + k * interval; with ``eager`` the first run is at start).
A run never overlaps the previous one of the same timer: the next starts only after it
returned, at the next grid point still ahead. Grid points missed by a slow run are
skipped, not caught up in a burst. A run that raises is logged; the timer keeps going.

All timers of a container share one scheduler thread (``amqprpc-timer-<service>``), which
the container starts and stops with the service; runs go to the container's handler pool
(or its loop, for ``async def``) like any other call. Timers need no broker.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from ..exceptions import ConfigError
from ..extensions import Entrypoint, ExcInfo, Extension, WorkerContext

_log = logging.getLogger(__name__)


class Timer(Entrypoint):
    """Run the decorated method (no arguments but ``self``) every ``interval`` seconds."""

    def __init__(self, interval: float, eager: bool = False) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
            raise ConfigError(f"@timer interval must be a positive number of seconds, got {interval!r}")
        self.interval = float(interval)
        self.eager = eager

    def setup(self) -> None:
        self.container.shared_extension(TimerScheduler, TimerScheduler).register(self)


timer = Timer.decorator


def next_due(previous_due: float, interval: float, now: float) -> float:
    """The first grid point after ``previous_due`` that is still ahead of ``now``."""
    if now < previous_due + interval:
        return previous_due + interval
    missed = math.floor((now - previous_due) / interval)
    return previous_due + (missed + 1) * interval


class _Schedule:
    """One timer's state; guarded by the scheduler's condition."""

    __slots__ = ("due", "running", "timer")

    def __init__(self, timer: Timer, due: float) -> None:
        self.timer = timer
        self.due = due
        self.running = False


class TimerScheduler(Extension):
    """Fires every timer of a container from one thread (a shared extension)."""

    def __init__(self) -> None:
        self._timers: list[Timer] = []
        self._schedules: list[_Schedule] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def register(self, timer: Timer) -> None:
        self._timers.append(timer)

    def start(self) -> None:
        now = time.monotonic()
        self._schedules = [_Schedule(t, now if t.eager else now + t.interval) for t in self._timers]
        self._stopping = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"amqprpc-timer-{self.container.service_name}")
        self._thread.start()

    def stop(self) -> None:
        """No new runs; a run in progress finishes (the container waits for it)."""
        self._halt(join=True)

    def kill(self) -> None:
        self._halt(join=False)

    def _halt(self, join: bool) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        thread, self._thread = self._thread, None
        if join and thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _run(self) -> None:
        with self._wake:
            while not self._stopping:
                now = time.monotonic()
                for schedule in self._schedules:
                    if not schedule.running and schedule.due <= now:
                        schedule.running = True
                        self._fire(schedule)
                waiting = [s.due for s in self._schedules if not s.running]
                timeout = max(0.0, min(waiting) - time.monotonic()) if waiting else None
                self._wake.wait(timeout)

    def _fire(self, schedule: _Schedule) -> None:
        """Hand one run to the container's pool; called with the condition held."""
        timer = schedule.timer
        container = self.container
        finished = threading.Event()

        def on_result(worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
            done()

        def done() -> None:
            if finished.is_set():
                return
            finished.set()
            with self._wake:
                schedule.running = False
                schedule.due = next_due(schedule.due, timer.interval, time.monotonic())
                self._wake.notify_all()

        def run() -> None:
            try:
                container.spawn_worker(timer, (), {}, None, on_result)
            except BaseException:
                _log.exception("%s.%s: timer run failed to start", container.service_name,
                               timer.method_name)
                done()

        try:
            container.submit(run)
        except RuntimeError:  # the pool is shutting down: the service is stopping
            schedule.running = False
            self._stopping = True
