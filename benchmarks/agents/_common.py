"""The client side of the runner's protocol, shared by every load client (stdlib only).

A client gets its parameters as one JSON argument, connects, warms up, prints
``{"event": "ready"}`` and waits for a line on stdin. The runner reads every group's CPU
ticks, then writes that line to all clients at once: the timed window starts. A client
prints ``{"event": "done"}`` the moment its window ends (the runner reads the ticks again
when every client is done), then lets its calls in flight finish and prints
``{"event": "result", ...}``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any


def params() -> dict[str, Any]:
    return dict(json.loads(sys.argv[1]))


def emit(event: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


def wait_go() -> None:
    """Block until the runner starts the timed window (EOF also starts it)."""
    sys.stdin.readline()


REPORT_EVERY = 20  # workloads.EVENT_REPORT_EVERY: the handlers' reporting granularity
_handled = itertools.count(1)  # next() on a count is atomic under the GIL


def handled() -> None:
    """Count one handled event; every ``REPORT_EVERY`` print ``H <count>`` (the events
    workload sums the handler processes' latest counts)."""
    count = next(_handled)
    if count % REPORT_EVERY == 0:
        os.write(1, b"H %d\n" % count)


def percentiles(latencies: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max in milliseconds (nearest rank)."""
    if not latencies:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(latencies)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": ordered[-1] * 1000}


def rss_kib(key: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def fifo_window(call: Callable[[], Any], wait: Callable[[Any], Any], expected: Any,
                window: int, warmup: int, duration: float) -> None:
    """Keep ``window`` calls in flight, collecting replies in FIFO order, as a caller
    holding a list of futures would. ``window=1`` is sequential calling.

    Warm-up: ``warmup`` calls, all finished before ``ready``. The window is refilled as
    each reply is taken; latency is time in flight (issue -> reply taken).
    """
    pending: deque[tuple[float, Any]] = deque()
    errors = 0
    for _ in range(warmup):
        if len(pending) >= window:
            _, handle = pending.popleft()
            errors += wait(handle) != expected
        pending.append((time.perf_counter(), call()))
    while pending:
        errors += wait(pending.popleft()[1]) != expected
    emit("ready", warmup_errors=errors)
    wait_go()

    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    end = start + duration
    perf = time.perf_counter
    now = start
    while now < end:
        while len(pending) < window:
            pending.append((perf(), call()))
        issued, handle = pending.popleft()
        errors += wait(handle) != expected
        now = perf()
        if now <= end:
            latencies.append(now - issued)
    emit("done")
    while pending:  # let the rest finish: no call is left for the next round
        errors += wait(pending.popleft()[1]) != expected
    emit("result", calls=len(latencies), seconds=duration, errors=errors, **percentiles(latencies))


async def fifo_window_async(call: Callable[[], Any], expected: Any, window: int, warmup: int,
                            duration: float) -> None:
    """``fifo_window`` for asyncio clients: ``call()`` returns an awaitable, each one becomes a
    task so ``window`` of them are in flight, and replies are taken in FIFO order."""
    import asyncio

    pending: deque[tuple[float, asyncio.Future[Any]]] = deque()
    perf = time.perf_counter
    errors = 0
    for _ in range(warmup):
        if len(pending) >= window:
            errors += await pending.popleft()[1] != expected
        pending.append((perf(), asyncio.ensure_future(call())))
    while pending:
        errors += await pending.popleft()[1] != expected
    emit("ready", warmup_errors=errors)
    await asyncio.get_running_loop().run_in_executor(None, wait_go)

    latencies: list[float] = []
    errors = 0
    start = perf()
    end = start + duration
    now = start
    while now < end:
        while len(pending) < window:
            pending.append((perf(), asyncio.ensure_future(call())))
        issued, task = pending.popleft()
        errors += await task != expected
        now = perf()
        if now <= end:
            latencies.append(now - issued)
    emit("done")
    while pending:
        errors += await pending.popleft()[1] != expected
    emit("result", calls=len(latencies), seconds=duration, errors=errors, **percentiles(latencies))
