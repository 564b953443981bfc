"""The event-dispatch loop shared by every dispatcher (stdlib + py-amqp, in every venv).

``run_dispatcher`` for the blocking clients (amqprpc, Nameko, Celery), ``run_dispatcher_async``
for the asyncio ones (FastStream, aio-pika). Up to ``confirm_window`` dispatches outstanding;
the handler queue's backlog is kept under ``max_backlog`` (a passive declare every
``check_every`` events), so a run measures dispatch -> handled throughput without piling
events up in the broker.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import _amqp
import _common


def run_dispatcher(dispatch: Callable[[], Any], wait: Callable[[Any], Any], backlog: Backlog,
                   p: dict[str, Any]) -> None:
    """Warm up, then dispatch for the timed window (the runner's ready/go/done protocol)."""
    confirms: deque[object] = deque()
    for _ in range(p["warmup"]):
        confirms.append(dispatch())
    while confirms:
        wait(confirms.popleft())
    _common.emit("ready", warmup_errors=0)
    _common.wait_go()
    sent = 0
    start = time.perf_counter()
    end = start + p["duration"]
    while time.perf_counter() < end:
        confirms.append(dispatch())
        sent += 1
        if len(confirms) > p["confirm_window"]:
            wait(confirms.popleft())
        if sent % p["check_every"] == 0:
            backlog.wait_below(end)
    _common.emit("done")
    while confirms:
        wait(confirms.popleft())
    _common.emit("result", dispatched=sent, seconds=p["duration"], errors=0, pauses=backlog.pauses)


async def run_dispatcher_async(dispatch: Callable[[], Awaitable[Any]], backlog: Backlog,
                               p: dict[str, Any]) -> None:
    """``run_dispatcher`` for asyncio: each ``dispatch()`` (a publish awaiting its confirm)
    becomes a task, up to ``confirm_window`` in flight, awaited in FIFO order."""
    import asyncio

    confirms: deque[asyncio.Future[Any]] = deque()
    for _ in range(p["warmup"]):
        confirms.append(asyncio.ensure_future(dispatch()))
    while confirms:
        await confirms.popleft()
    _common.emit("ready", warmup_errors=0)
    await asyncio.get_running_loop().run_in_executor(None, _common.wait_go)
    sent = 0
    start = time.perf_counter()
    end = start + p["duration"]
    while time.perf_counter() < end:
        confirms.append(asyncio.ensure_future(dispatch()))
        sent += 1
        if len(confirms) > p["confirm_window"]:
            await confirms.popleft()
        if sent % p["check_every"] == 0:
            await asyncio.sleep(0)  # let the event loop write and read before a possible pause
            backlog.wait_below(end)
    _common.emit("done")
    while confirms:
        await confirms.popleft()
    _common.emit("result", dispatched=sent, seconds=p["duration"], errors=0, pauses=backlog.pauses)


class Backlog:
    """The handler queue's ready messages, read with a passive declare on its own connection."""

    def __init__(self, url: str, queue: str, limit: int) -> None:
        self.connection = _amqp.connect(url)
        self.channel = self.connection.channel()
        self.queue = queue
        self.limit = limit
        self.pauses = 0

    def depth(self) -> int:
        return int(self.channel.queue_declare(self.queue, passive=True).message_count)

    def wait_below(self, deadline: float) -> None:
        if self.depth() <= self.limit:
            return
        self.pauses += 1
        while time.perf_counter() < deadline and self.depth() > self.limit // 2:
            time.sleep(0.005)

    def close(self) -> None:
        self.connection.close()
