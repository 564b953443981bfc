"""``CancelSender``: a caller's side of cancellation, one per ``Caller`` while it is on.

It declares the control exchange once (and again on every reconnect, as all topology), so
the cost on the normal path is nothing: a cancel is published only for a call given up
(timed out, or its ``RpcFuture`` cancelled). A cancel is fire-and-forget: unconfirmed,
transient, not mandatory. If it is lost (the connection drops), the call simply runs, as
it would have without cancellation; a worker also skips a request past its deadline.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from ..topology import CONTROL
from ..transport import Transport
from .wire import build_cancel


class GivenUp(Protocol):
    """What a cancel needs of a call (an ``RpcFuture``)."""

    service: str
    method: str
    correlation_id: str
    deadline: float  # time.monotonic()

__all__ = ["CancelSender"]

_log = logging.getLogger(__name__)


class CancelSender:
    """Publishes cancels on one connection."""

    def __init__(self, connection: Transport) -> None:
        self.connection = connection
        self.sent = 0
        connection.declare(CONTROL)

    def send(self, future: GivenUp, reason: str) -> None:
        """Tell ``future.service`` that the call is given up (any thread, never raises)."""
        # The request's deadline header is wall-clock; the future keeps a monotonic one.
        deadline = time.time() + (future.deadline - time.monotonic())
        try:
            self.connection.publish(build_cancel(future.service, future.correlation_id,
                                                 deadline, reason))
        except Exception as exc:  # the call is given up either way: it may still run
            _log.info("could not send the cancel of %s.%s (%s): %s", future.service,
                      future.method, future.correlation_id, exc)
            return
        self.sent += 1
        _log.debug("sent the cancel of %s.%s (%s, %s)", future.service, future.method,
                   future.correlation_id, reason)
