"""What other threads hand the I/O thread: typed operations in one queue, drained by one rule.

Every thread but the I/O thread talks to the broker through an :class:`Outbox`. The I/O
thread takes everything queued, in order, and each operation says what becomes of it:

============  ==================================  ============================================
operation     connected                            not connected (or stopping)
============  ==================================  ============================================
``Publish``   written to the socket                kept for the next connection; failed with
                                                   ``ConnectionLost`` at stop
``Ack``       marked finished (acked in batches)   dropped: the broker requeued the delivery
``Reject``    sent                                 dropped, as an ack
``Call``      run                                  run; kept for the next connection if it
                                                   raised ``ConnectionLost`` (it needs one)
============  ==================================  ============================================

Kept operations go back to the head of the outbox, ahead of what was queued meanwhile, so a
thread's publishes keep their order across a reconnect.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .base import ConfirmCallback, Delivery, Outgoing

__all__ = ["Ack", "Call", "Op", "Outbox", "Publish", "Reject"]


@dataclass(slots=True)
class Publish:
    message: Outgoing
    on_confirm: ConfirmCallback | None


@dataclass(slots=True)
class Ack:
    delivery: Delivery


@dataclass(slots=True)
class Reject:
    delivery: Delivery
    requeue: bool


@dataclass(slots=True)
class Call:
    fn: Callable[[], None]


Op = Publish | Ack | Reject | Call


class Outbox:
    """A FIFO of :data:`Op` for any thread to put into and the I/O thread to drain."""

    def __init__(self) -> None:
        self._ops: deque[Op] = deque()
        self._lock = threading.Lock()

    def put(self, op: Op) -> None:
        with self._lock:
            self._ops.append(op)

    def empty(self) -> bool:
        return not self._ops

    def take(self) -> Op | None:
        """The oldest operation, or None when empty (I/O thread)."""
        with self._lock:
            return self._ops.popleft() if self._ops else None

    def keep(self, ops: list[Op]) -> None:
        """Put ``ops`` back at the head, in their order (they wait for the next connection)."""
        with self._lock:
            self._ops.extendleft(reversed(ops))

    def take_all(self) -> list[Op]:
        with self._lock:
            ops = list(self._ops)
            self._ops.clear()
            return ops
