"""``EventDispatcher()``: announce what happened, from inside a handler.

::

    class OrdersService:
        name = "orders"
        dispatch = EventDispatcher()

        @rpc
        def create(self, item: str) -> dict:
            order = {"id": 7, "item": item}
            self.dispatch("order_created", order)
            return order

Events go out on ``<service>.events`` through the container's own connection (no
connection of their own), carrying the handler's context (``nameko.call_id_stack``,
``nameko.user_id``, ...). ``dispatch`` does not wait: it returns a future the broker's
confirm resolves. The dispatcher waits once, after the handler returns and before its
reply is sent or its message acked, for every event that worker dispatched: a reply (or
an ack) therefore means its events are safe in the broker, and an event the broker did not
confirm turns the call into a failure (retried, for an event handler) instead of a loss.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, wait
from typing import TYPE_CHECKING, Any

from ..exceptions import BrokerError
from ..extensions import DependencyProvider, ExcInfo, WorkerContext
from ..futures import settle
from ..publisher import UnroutableEvents, event_message
from ..serialization import codec_named
from ..topology import event_exchange, event_exchange_entity

if TYPE_CHECKING:
    from ..tracing.spans import ProducerSpans


class EventDispatcher(DependencyProvider):
    """Inject ``dispatch(event_type, payload) -> Future`` that publishes as this service.

    ``confirm_timeout``: how long a worker waits for its events' confirms after the handler
    returned (default: the config's ``rpc_timeout``).
    """

    def __init__(self, *, confirm_timeout: float | None = None) -> None:
        self.confirm_timeout = confirm_timeout

    def setup(self) -> None:
        container = self.container
        self.source = container.service_name
        self._config = container.config
        self._connection = container.connection
        self._codec = codec_named(self._config.serializer)
        self._spans: ProducerSpans | None = None  # tracing off: no span, no call
        if self._config.tracing:
            from ..tracing.spans import ProducerSpans
            self._spans = ProducerSpans(self._config.header_prefix)
        self._pending: dict[int, list[Future[None]]] = {}  # id(worker_ctx) -> its events
        self._lock = threading.Lock()
        # Declared on every (re)connect, before any queued publish goes out on it.
        self._connection.declare(event_exchange_entity(self.source))
        self.exchange_name = event_exchange(self.source)
        self._unroutable = UnroutableEvents(event_exchange(self.source))
        self._connection.on_return(self._unroutable)

    @property
    def unroutable(self) -> dict[tuple[str, str], int]:
        """Events of this service the broker routed to no queue, by ``(exchange, event type)``."""
        return self._unroutable.counts

    def get_dependency(self, worker_ctx: WorkerContext) -> EventDispatch:
        return EventDispatch(self, worker_ctx)

    def dispatch(self, worker_ctx: WorkerContext, event_type: str, payload: Any) -> Future[None]:
        message = event_message(self.source, event_type, payload, codec=self._codec,
                                context=worker_ctx.data, header_prefix=self._config.header_prefix)
        future: Future[None] = Future()
        with self._lock:
            self._pending.setdefault(id(worker_ctx), []).append(future)
        span = None if self._spans is None else self._spans.publish(message, self.source, event_type)
        self._connection.publish(message, on_confirm=lambda error: settle(future, error))
        if span is not None:
            span.end()
        return future

    def worker_result(self, worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        futures = self._take(worker_ctx)
        if futures:
            _, not_done = wait(futures, self._timeout())
            self._check(futures, not_done, exc_info)

    async def worker_result_async(self, worker_ctx: WorkerContext, result: Any,
                                  exc_info: ExcInfo) -> None:
        futures = self._take(worker_ctx)
        if futures:  # wait on the loop without blocking it
            import asyncio  # not at the top: plain services never load it

            await asyncio.wait([asyncio.wrap_future(f) for f in futures], timeout=self._timeout())
            self._check(futures, [f for f in futures if not f.done()], exc_info)

    def worker_teardown(self, worker_ctx: WorkerContext) -> None:
        self._take(worker_ctx)  # a worker that failed before worker_result leaves nothing behind

    # ------------------------------------------------------------ internals

    def _timeout(self) -> float:
        return self._config.rpc_timeout if self.confirm_timeout is None else self.confirm_timeout

    def _take(self, worker_ctx: WorkerContext) -> list[Future[None]]:
        with self._lock:
            return self._pending.pop(id(worker_ctx), [])

    def _check(self, futures: list[Future[None]], not_done: Any, exc_info: ExcInfo) -> None:
        if exc_info is not None:
            return  # the handler's own error is the outcome; don't hide it behind ours
        exchange = self.exchange_name
        if not_done:
            raise BrokerError(f"{len(not_done)} events on {exchange!r} not confirmed by the "
                              f"broker within {self._timeout():g}s")
        for future in futures:
            error = future.exception()
            if error is not None:
                raise BrokerError(f"an event on {exchange!r} was not confirmed: {error}") from error


class EventDispatch:
    """What a handler sees as ``self.dispatch``: ``self.dispatch("order_created", order)``."""

    __slots__ = ("_provider", "_worker_ctx")

    def __init__(self, provider: EventDispatcher, worker_ctx: WorkerContext) -> None:
        self._provider = provider
        self._worker_ctx = worker_ctx

    def __call__(self, event_type: str, payload: Any) -> Future[None]:
        """Publish ``payload`` as event ``event_type`` of this service; returns at once."""
        return self._provider.dispatch(self._worker_ctx, event_type, payload)

    @property
    def source(self) -> str:
        return self._provider.source
