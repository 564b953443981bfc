"""Making RPC calls over one broker connection: many in flight, replies matched by id.

A ``Caller`` attaches to a ``Transport`` (a client's, or a service container's for
``RpcProxy``). It consumes replies — RabbitMQ direct reply-to by default (no-ack, on the
channel it publishes on), or a reply queue bound to the RPC exchange as Nameko services
need — and resolves one ``RpcFuture`` per correlation id. Every call has a deadline,
enforced by the I/O thread whether or not anyone waits on the future. The broker's
``basic.return`` of a ``mandatory`` request fails that call with ``UnknownService`` at once.
A late or duplicate reply finds no pending call: it is logged and dropped.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from .cancellation.sender import CancelSender
from .config import Config
from .exceptions import (
    BrokerBlocked,
    ConnectionLost,
    RpcTimeout,
    UnknownService,
    deserialize_error,
)
from .futures import settle
from .identity import signer_for
from .messages import DIRECT_REPLY_TO, Context, build_request, parse_reply
from .presence import Presence
from .resilience.guard import Resilience
from .resilience.overload import InFlightLimits, queue_full
from .route_updates import RouteUpdates
from .routing import QUESTION_TIMEOUT, Router, rules_from_config, version_queue, versioned_key
from .serialization import DecodeLimits, codec_named
from .topology import reply_queue_topology, rpc_exchange
from .transport import Delivery, Outgoing, Transport

if TYPE_CHECKING:
    from .tracing.spans import ClientSpans

_log = logging.getLogger(__name__)

DEADLINE_SWEEP = 0.05  # seconds between deadline checks while calls are pending


class RpcFuture(Future[Any]):
    """The outcome of one call. ``result()`` raises the remote error, or ``RpcTimeout``.

    ``cancel()`` gives the call up: with cancellation on, the service is told, so the
    call never runs if it is still queued, and a running handler sees it cancelled.
    """

    def __init__(self, service: str, method: str, correlation_id: str, timeout: float,
                 on_cancel: Callable[[RpcFuture], None] | None = None,
                 version: str | None = None) -> None:
        super().__init__()
        self.service = service
        self.method = method
        self.correlation_id = correlation_id
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self._on_cancel = on_cancel
        self.version = version  # routed to this version's workers (amqprpc.routing); None: shared

    @property
    def queue(self) -> str:
        """The queue the request waits in (what presence asks about)."""
        return f"rpc-{self.service}" if self.version is None else version_queue(self.service, self.version)

    def cancel(self) -> bool:
        """Give the call up (True), unless it has already finished (False)."""
        if not super().cancel():
            return False
        if self._on_cancel is not None:
            self._on_cancel(self)
        return True

    def result(self, timeout: float | None = None) -> Any:
        try:
            return super().result(timeout)
        except FutureTimeout:
            if self.done():  # the call's own RpcTimeout (a TimeoutError too)
                raise
            raise RpcTimeout(
                f"{self.service}.{self.method}: no reply within {timeout:.3g}s of waiting"
            ) from None

    def __repr__(self) -> str:
        return f"<RpcFuture {self.service}.{self.method} {self.correlation_id} {self._state}>"


class Caller:
    """Publishes requests and routes replies for one connection."""

    def __init__(
        self,
        connection: Transport,
        config: Config,
        *,
        direct_reply_to: bool = True,
        owner: str = "client",
    ) -> None:
        self.connection = connection
        self.config = config
        self._limits = DecodeLimits.from_config(config)  # once: read per reply
        self.codec = codec_named(config.serializer)
        self.direct_reply_to = direct_reply_to
        self._pending: dict[str, RpcFuture] = {}
        self._sweeping = False  # a sweep is scheduled; guarded by _sweep_lock
        self._sweep_lock = threading.Lock()
        # Correlation ids: a random prefix per caller plus a counter. As unique as a uuid4
        # per call, without its urandom syscall (which also hands the GIL away) on every call.
        self._id_prefix = f"{uuid.uuid4().hex}-"
        self._ids = itertools.count(1)
        self.presence: Presence | None = Presence(  # None: wait out the deadline
            connection, patience=config.rpc_presence_patience)
        self._spans: ClientSpans | None = None  # tracing off: no span, no call
        if config.tracing:
            from .tracing.spans import ClientSpans
            self._spans = ClientSpans(config.header_prefix)
        self.on_call: Callable[[RpcFuture], None] | None = None  # sees each call (metrics)
        self._in_flight = InFlightLimits.from_config(config)  # None: no cap, no cost
        self.resilience = Resilience.from_config(config, connection, make_future=RpcFuture,
                                                 owner=owner)  # None: breakers, retries off
        self._signer = signer_for(config)  # None without an identity key: nothing is signed
        self._cancels: CancelSender | None = None  # cancellation off: a timeout sends nothing
        if config.cancellation:
            self._cancels = CancelSender(connection)
        rules = rules_from_config(config.extra.get("routing"))
        self.router: Router | None = None  # no rule can ever apply: no routing, no cost
        if rules or config.routing_updates:
            self.router = Router(rules, functools.partial(_has_consumers, connection))
        if direct_reply_to:
            self.reply_to = DIRECT_REPLY_TO
            self._reply_queue = ""
        else:
            reply_id = str(uuid.uuid4())
            self.reply_to = reply_id  # Nameko's scheme: routing key = the queue's uuid
            self._reply_queue = f"rpc.reply-{owner}-{reply_id}"
        connection.declare(rpc_exchange(config))
        if direct_reply_to:
            connection.consume(DIRECT_REPLY_TO, self._on_reply, no_ack=True)
        else:
            connection.declare(*reply_queue_topology(config, self._reply_queue, self.reply_to))
            connection.consume(self._reply_queue, self._on_reply, no_ack=True)
        if self.router is not None and config.routing_updates:
            RouteUpdates(connection, config, self.router, owner)
        connection.on_lost(self._on_lost)
        connection.on_return(self._on_return)

    def call_async(
        self,
        service: str,
        method: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        context: Context | None = None,
        hedge_after: float | None = None,
    ) -> RpcFuture:
        """Send a request now; the future resolves with the reply or fails by the deadline.

        With breakers or retries on, the call goes through them (docs/resilience.md)."""
        if self.resilience is not None:
            timeout = self.config.rpc_timeout if timeout is None else timeout
            future: RpcFuture = self.resilience.call(self.send, service, method, args, kwargs,
                                                     timeout=timeout, context=context,
                                                     hedge_after=hedge_after)
            return future
        return self.send(service, method, args, kwargs, timeout=timeout, context=context)

    def send(
        self,
        service: str,
        method: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        context: Context | None = None,
    ) -> RpcFuture:
        """One request, straight to the broker (no breaker, no retry)."""
        timeout = self.config.rpc_timeout if timeout is None else timeout
        if timeout <= 0:
            raise RpcTimeout(f"{service}.{method}: the caller's deadline has already passed")
        blocked = self.connection.blocked_reason
        if blocked is not None:
            raise BrokerBlocked(f"{service}.{method}: the broker refuses messages for now ({blocked})")
        correlation_id = f"{self._id_prefix}{next(self._ids)}"
        router = self.router
        version = router.choose(service, context) if router is not None and router.rules else None
        message = build_request(
            service,
            method,
            args,
            kwargs or {},
            codec=self.codec,
            exchange=self.config.rpc_exchange,
            reply_to=self.reply_to,
            correlation_id=correlation_id,
            timeout=timeout,
            context=context,
            header_prefix=self.config.header_prefix,
        )
        if self._signer is not None:
            self._signer.sign(message, context)  # over <service>.<method>, whatever the route
        if version is not None:
            message.routing_key = versioned_key(service, version, method)
        future = RpcFuture(service, method, correlation_id, timeout,
                           None if self._cancels is None else self._cancelled, version)
        if self._in_flight is not None:
            self._in_flight.admit(future)  # ServiceOverloaded past the cap: nothing is sent
        self._pending[correlation_id] = future
        if self._spans is not None:
            self._spans.start(message, service, method, future)
        if self.on_call is not None:
            self.on_call(future)
        self.connection.publish(message, on_confirm=functools.partial(self._on_confirm, correlation_id)
                                if self.connection.confirms else None)
        with self._sweep_lock:  # after the insert above: a sweep that saw no calls has unset it
            start_sweep, self._sweeping = not self._sweeping, True
        if start_sweep:
            self.connection.call_later(DEADLINE_SWEEP, self._sweep)
        return future

    def pending_count(self) -> int:
        return len(self._pending)

    def _cancelled(self, future: RpcFuture) -> None:
        """``future.cancel()`` (any thread): forget the call and tell the service."""
        if self._pending.pop(future.correlation_id, None) is not None and self._cancels is not None:
            self._cancels.send(future, "cancelled")

    # ------------------------------------------------------------ I/O thread

    def _on_reply(self, delivery: Delivery) -> None:
        correlation_id = delivery.properties.get("correlation_id")
        future = self._pending.pop(correlation_id, None) if correlation_id else None
        if future is None:
            _log.info("dropped a late or duplicate reply (correlation id %s)", correlation_id)
            return
        if self.presence is not None:
            self.presence.seen(future.queue)
        try:
            result, error = parse_reply(
                delivery.body, delivery.properties.get("content_type"),
                self._limits,
            )
        except Exception as exc:
            settle(future, exc)
            return
        if error is not None:
            settle(future, deserialize_error(error))
        else:
            settle(future, result=result)

    def _on_confirm(self, correlation_id: str, error: BaseException | None) -> None:
        """A nacked request was not taken by the broker: fail its call now, not at its deadline.

        A lost connection is ``_on_lost``'s to report (the request may have run)."""
        if error is None or isinstance(error, ConnectionLost):
            return
        future = self._pending.pop(correlation_id, None)
        if future is not None:
            settle(future, queue_full(future.service))

    def _on_return(self, message: Outgoing, reply_text: str) -> None:
        correlation_id = message.properties.get("correlation_id")
        future = self._pending.get(correlation_id) if isinstance(correlation_id, str) else None
        if future is None or not isinstance(correlation_id, str):
            return
        if future.version is not None and self.router is not None:
            # Its version's queue is gone (no worker of it left): the shared queue takes it.
            self.router.version_gone(future.service, future.version)
            future.version = None
            message.routing_key = f"{future.service}.{future.method}"
            self.connection.publish(message, on_confirm=functools.partial(
                self._on_confirm, correlation_id) if self.connection.confirms else None)
            return
        del self._pending[correlation_id]
        settle(future, UnknownService(future.service))

    def _sweep(self) -> None:
        """Fail the calls past their deadline; runs on the I/O thread while calls are pending.

        One sweep every ``DEADLINE_SWEEP`` seconds instead of a timer per call keeps
        memory bounded by the calls in flight (a timer per call lived for its whole
        timeout: ~70,000 of them at 2,400 calls/s); a timeout fires at most that late.
        It keeps running while the connection is down, so calls made during an outage
        end by their deadline too.
        """
        now = time.monotonic()
        for future in [f for f in list(self._pending.values()) if f.deadline <= now]:
            self._expire(future.correlation_id)
        if self.presence is not None:  # no consumer on a service's queue: fail its calls
            self.presence.sweep(self._pending.values(), now, self._fail)
        with self._sweep_lock:
            keep_sweeping = self._sweeping = bool(self._pending)
        if keep_sweeping:
            self.connection.call_later(DEADLINE_SWEEP, self._sweep)

    def _fail(self, correlation_id: str, error: BaseException) -> None:
        future = self._pending.pop(correlation_id, None)
        if future is not None:
            settle(future, error)

    def _expire(self, correlation_id: str) -> None:
        future = self._pending.pop(correlation_id, None)
        if future is None:
            return
        why = "" if self.connection.is_connected else " (not connected to the broker)"
        settle(future, RpcTimeout(
            f"{future.service}.{future.method}: no reply within {future.timeout:.3g}s{why}"
        ))
        if self._cancels is not None:
            self._cancels.send(future, "timeout")

    def _on_lost(self, error: BaseException) -> None:
        """Replies to requests sent on a dead connection can never arrive: fail them now."""
        for correlation_id in list(self._pending):
            future = self._pending.pop(correlation_id, None)
            if future is None:
                continue
            settle(future, ConnectionLost(
                f"{future.service}.{future.method}: connection to the broker lost before the "
                "reply; the call may or may not have run"
            ))


def _has_consumers(connection: Transport, queue: str) -> bool:
    """Has ``queue`` consumers? Asked by the router off the I/O thread (amqprpc.routing)."""
    info = connection.queue_info(queue, QUESTION_TIMEOUT, detached=True)
    return info is not None and info.consumer_count > 0


def remaining_timeout(default: float, deadline: float | None) -> float:
    """A nested call's timeout: its own, but never past its parent's deadline."""
    if deadline is None:
        return default
    return min(default, deadline - time.time())
