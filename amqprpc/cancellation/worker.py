"""``CancelListener``: a container's consumer of cancels, and the calls it can cancel.

One per container that has ``@rpc`` methods (a shared extension of ``RpcConsumer``), when
``config.cancellation`` is on. It declares its own queue ``amqprpc.cancel-<service>-<id>``
(exclusive, auto-delete, bounded; ``topology.cancel_queue_topology``) bound to the control
exchange with ``cancel.<service>``, so every worker process of the service hears every
cancel, and consumes it without acks on the I/O thread. For each valid cancel it

* remembers the correlation id until the call's deadline (``CancelledIds``): the request,
  still queued or prefetched, is acked and dropped when the consumer reaches it;
* cancels the call's ``CancelToken`` if it is running here: the handler sees
  ``ctx.cancelled`` (an ``async def`` one gets ``CancelledError``), and the nested calls
  it is waiting for are cancelled in turn.

Requests that carry no correlation id (or a duplicate one, which only a hostile publisher
sends) are simply not tracked, or tracked last-one-wins: they cannot be cancelled.
"""

from __future__ import annotations

import logging
import time
import uuid

from ..exceptions import MalformedRequest
from ..extensions import Extension
from ..topology import cancel_queue_topology, check_name
from ..transport import Delivery
from .token import CancelToken
from .wire import CancelledIds, parse_cancel

__all__ = ["CancelListener"]

_log = logging.getLogger(__name__)

_WARN_EVERY = 10.0  # seconds between warnings about malformed cancels (a flood logs one)


class CancelListener(Extension):
    """Hears cancels for this container's service and applies them."""

    def __init__(self) -> None:
        self.cancelled = CancelledIds()
        self._running: dict[str, CancelToken] = {}
        self.queue_name = ""
        self.refused = 0  # malformed cancels seen
        self._warned_at = 0.0

    def setup(self) -> None:
        service = self.container.service_name
        self.queue_name = check_name(f"amqprpc.cancel-{service}-{uuid.uuid4().hex[:12]}",
                                     "cancel queue")
        connection = self.container.connection
        connection.declare(*cancel_queue_topology(service, self.queue_name))
        connection.consume(self.queue_name, self._on_cancel, no_ack=True)

    # ------------------------------------------------------------ pool threads

    def track(self, request_id: str | None) -> CancelToken | None:
        """A token for the call ``request_id`` about to run (cancelled already if a cancel
        came first); None for a request without an id."""
        if not request_id:
            return None
        token = CancelToken()
        self._running[request_id] = token
        if request_id in self.cancelled:  # after the insert: the I/O thread sees one or the other
            token.cancel("cancelled")
        return token

    def untrack(self, request_id: str | None, token: CancelToken | None) -> None:
        """The call has finished: its cancels need not reach it any more."""
        if request_id and self._running.get(request_id) is token:
            self._running.pop(request_id, None)

    @property
    def running(self) -> int:
        return len(self._running)

    # ------------------------------------------------------------ I/O thread

    def _on_cancel(self, delivery: Delivery) -> None:
        now = time.time()
        try:
            cancel = parse_cancel(delivery, now)
        except MalformedRequest as exc:
            self.refused += 1
            if now - self._warned_at >= _WARN_EVERY:
                self._warned_at = now
                _log.warning("%s: ignored a malformed cancel (%d so far): %s",
                             self.container.service_name, self.refused, exc)
            return
        except Exception:  # never lose the I/O thread to a hostile message
            self.refused += 1
            _log.exception("%s: ignored a cancel that could not be read", self.container.service_name)
            return
        self.cancelled.add(cancel.correlation_id, cancel.expires, now)
        token = self._running.get(cancel.correlation_id)
        if token is not None and token.cancel(cancel.reason):
            _log.info("%s: call %s cancelled by its caller (%s)", self.container.service_name,
                      cancel.correlation_id, cancel.reason)
