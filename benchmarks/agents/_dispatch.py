"""The event-dispatch loop shared by the amqprpc and Nameko dispatchers (stdlib + py-amqp).

Up to ``confirm_window`` dispatches outstanding; the handler queue's backlog is kept under
``max_backlog`` (a passive declare every ``check_every`` events), so a run measures
dispatch -> handled throughput without piling events up in the broker.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
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
