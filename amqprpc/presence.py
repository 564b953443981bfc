"""Is any worker consuming a service's queue? Fail calls fast when none is.

A request to a service nobody ever ran is returned by the broker (it is ``mandatory``) and
fails at once with ``UnknownService``. A service that ran and stopped leaves its durable
queue ``rpc-<service>`` behind: the broker takes the request, nobody reads it, and without
this module the caller waits out its whole timeout.

Nothing is asked on the normal path. Only a call that has had no reply for ``GRACE``
seconds makes the caller ask the broker about its service (a passive declare through
``Transport.queue_info(detached=True)``, on a short-lived thread, never on the I/O thread); one question
per service is in flight at a time, shared by every call waiting on it. The answer:

* consumers > 0: the service is there (a slow handler); not asked again for ``TTL`` seconds;
* no consumer and requests ready in the queue: the calls to that service sent before the
  question fail with ``ServiceUnavailable``, unless the service was seen alive in the last
  ``patience`` seconds (a reply, or consumers > 0; config ``rpc_presence_patience``, 30 s):
  then a restarting worker, a broker restart or a failover gets that long to come back,
  and the question is asked again every ``RECHECK`` seconds;
* no consumer and nothing ready: the request is with a worker that is stopping gracefully
  (it still replies); keep waiting;
* no queue: it was deleted with the request in it; the calls fail with ``UnknownService``;
* no answer (connection down, timeout): asked again after ``RECHECK``; the deadline still ends the call.

Everything except the question itself runs on the transport's I/O thread (the caller's
deadline sweep and reply callback), so the state needs no lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from .exceptions import ServiceUnavailable, UnknownService
from .transport import QueueInfo

_log = logging.getLogger(__name__)

GRACE = 1.0  # seconds without a reply before the caller asks whether anyone is there
TTL = 5.0  # a service found present is not asked about again for this long
PATIENCE = 30.0  # a service seen alive this recently gets this long to come back
RECHECK = 0.5  # seconds between questions while a service is absent or unanswered
QUESTION_TIMEOUT = 5.0

Fail = Callable[[str, BaseException], None]  # (correlation id, error)


class Pending(Protocol):
    """What presence reads of a pending call (``calls.RpcFuture``)."""

    service: str
    correlation_id: str
    deadline: float
    timeout: float

    @property
    def queue(self) -> str:
        """Where it waits: ``rpc-<service>``, or a version's queue (amqprpc.routing)."""


class Admin(Protocol):
    """The part of ``Transport`` presence uses."""

    name: str

    def call_soon(self, fn: Callable[[], None]) -> None: ...

    def queue_info(self, queue: str, timeout: float = 5.0, *,
                   detached: bool = False) -> QueueInfo | None: ...


class Presence:
    """Consumer presence per queue a call waits in, learnt only when one waits; I/O thread only.

    A service's calls wait in its queue, or, routed to a version, in that version's queue
    (``amqprpc.routing``): each queue is asked about and judged on its own.
    """

    def __init__(self, transport: Admin, *, grace: float = GRACE, patience: float = PATIENCE) -> None:
        self.transport = transport
        self.grace = grace
        self.patience = patience
        self._seen: dict[str, float] = {}  # queue -> when its consumers were last known alive
        self._next_question: dict[str, float] = {}  # queue -> not asked again before
        self._asking: set[str] = set()

    def seen(self, queue: str) -> None:
        """A reply came from a call sent to ``queue``: it is served (one dict store per reply)."""
        self._seen[queue] = time.monotonic()

    def sweep(self, pending: Iterable[Pending], now: float, fail: Fail) -> None:
        """Ask about each queue whose calls have waited ``grace``; runs with the deadline sweep."""
        waiting = {call.queue: call.service for call in list(pending)  # callers add calls meanwhile
                   if call.deadline - call.timeout + self.grace <= now}
        for queue in waiting.keys() - self._asking:
            if self._next_question.get(queue, 0.0) > now:
                continue
            self._asking.add(queue)
            threading.Thread(target=self._ask, args=(queue, waiting[queue], now, pending, fail),
                             name=f"{self.transport.name}-presence-{queue}", daemon=True).start()

    # ------------------------------------------------------------ the question's thread

    def _ask(self, queue: str, service: str, asked: float, pending: Iterable[Pending],
             fail: Fail) -> None:
        """Ask the broker (blocking, off the I/O thread), then settle on the I/O thread."""
        info: QueueInfo | BaseException | None
        try:
            info = self.transport.queue_info(queue, QUESTION_TIMEOUT, detached=True)
        except Exception as exc:  # connection down, timeout: the deadline still ends the calls
            info = exc
        self.transport.call_soon(lambda: self._settle(queue, service, asked, info, pending, fail))

    # ------------------------------------------------------------ I/O thread

    def _settle(self, queue: str, service: str, asked: float,
                info: QueueInfo | BaseException | None, pending: Iterable[Pending],
                fail: Fail) -> None:
        self._asking.discard(queue)
        now = time.monotonic()
        if isinstance(info, BaseException):
            _log.debug("%s: could not ask about %s: %s", self.transport.name, queue, info)
            self._next_question[queue] = now + RECHECK
            return
        if info is not None and info.consumer_count > 0:
            self._seen[queue] = now
            self._next_question[queue] = now + TTL
            return
        self._next_question[queue] = now + RECHECK
        error: type[UnknownService | ServiceUnavailable]
        if info is None:
            error = UnknownService
        elif info.message_count == 0:
            return  # with a worker that is stopping gracefully: its reply still comes
        elif now - self._seen.get(queue, float("-inf")) < self.patience:
            return  # seen alive a moment ago: a restart, give it time
        else:
            error = ServiceUnavailable
        gone = [call.correlation_id for call in list(pending)
                if call.queue == queue and call.deadline - call.timeout <= asked]
        _log.info("%s: %s; failing %d waiting call(s)", self.transport.name, error(service),
                  len(gone))
        for correlation_id in gone:
            fail(correlation_id, error(service))  # one instance per call: each gets its traceback
