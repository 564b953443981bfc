"""``@rpc``: methods other services and clients call.

Topology (Nameko's)::

    caller --(rk "<service>.<method>")--> [nameko-rpc, topic, durable]
        --("<service>.*")--> queue "rpc-<service>" (durable) --> every worker of the service

All workers of a service consume one queue, so they compete for calls: that is the load
balancing. Each takes at most ``prefetch`` (= concurrency) unacked calls. A call is acked
only once its reply is published and confirmed by the broker; a worker that dies before
then leaves the call unacked, and the broker redelivers it to another worker.

Requests that cannot run (unknown method, bad arguments, undecodable or forbidden body,
past their deadline) are answered with an error reply and acked, never requeued, so
garbage never loops and the worker keeps serving.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from ..cancellation.worker import CancelListener
from ..contracts.validation import MethodContract, method_contract
from ..dead_letters import (
    ROUTING_KEY_HEADER,
    Received,
    attempts_of,
    dead_lettered_routing_key,
    forward_copy,
    retry_copy,
)
from ..exceptions import (
    AmqpRpcError,
    ConnectionLost,
    IdentityRefused,
    IncorrectSignature,
    MalformedRequest,
    MethodNotFound,
    serialize_error,
)
from ..extensions import Entrypoint, ExcInfo, Extension, WorkerContext
from ..identity import verifier_for
from ..messages import build_reply, deadline_of, decode_context, parse_request
from ..resilience.overload import max_queue_length
from ..routing import canonical_key, version_queue
from ..serialization import JSON, Codec, DecodeLimits, codec_for
from ..topology import delay_queue, delay_queue_arguments, rpc_queue_topology, version_queue_topology
from ..transport import Delivery, Outgoing
from .consuming import ConsumesQueue
from .events import WorkerLost

_log = logging.getLogger(__name__)


class Rpc(Entrypoint):
    """Expose a method as ``<service>.<method>`` over RPC.

    ``expected_exceptions``: errors that are part of the method's contract; they are
    logged as warnings instead of errors. Exception classes in the service's
    ``http_errors`` count as expected too. ``http``, ``roles`` and ``public`` (no
    authentication needed) describe how the HTTP bridge exposes the method (docs/bridge.md).
    ``idempotent=True`` says running it twice does no harm: callers with retries on may
    then send it again after a lost worker or a refused publish (docs/resilience.md).
    """

    def __init__(
        self,
        *,
        expected_exceptions: type[BaseException] | tuple[type[BaseException], ...] = (),
        http: str | bool | None = None,
        roles: list[str] | tuple[str, ...] | None = None,
        public: bool = False,
        idempotent: bool = False,
    ) -> None:
        if isinstance(expected_exceptions, type):
            expected_exceptions = (expected_exceptions,)
        self.expected_exceptions = tuple(expected_exceptions)
        self.http = http
        self.roles = tuple(roles or ())
        self.public = public
        self.idempotent = idempotent
        self.signature: inspect.Signature | None = None
        self.contract: MethodContract | None = None  # pydantic validation (docs/contracts.md)

    def setup(self) -> None:
        service_cls = self.container.service_cls
        method = getattr(service_cls, self.method_name)
        self.signature = inspect.signature(method)
        self.contract = method_contract(method, f"{self.container.service_name}.{self.method_name}")
        # An exception the service maps to an HTTP status is part of its contract: a 404
        # should log a warning, not an error with a traceback.
        mapped = tuple(key for key in (getattr(service_cls, "http_errors", None) or {})
                       if isinstance(key, type) and issubclass(key, BaseException))
        self.expected_exceptions = tuple(dict.fromkeys(self.expected_exceptions + mapped))
        consumer = self.container.shared_extension(RpcConsumer, RpcConsumer)
        consumer.register(self)

    def check_signature(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The arguments for the handler; IncorrectSignature unless they bind (``self``
        included), ValidationError unless they fit the method's contract types."""
        assert self.signature is not None
        try:
            bound = self.signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise IncorrectSignature(f"{self.container.service_name}.{self.method_name}: {exc}") from None
        return (args, kwargs) if self.contract is None else self.contract.validate(bound)


rpc = Rpc.decorator


class RpcConsumer(ConsumesQueue, Extension):
    """Consumes the service's queue and dispatches each request to its ``@rpc`` method.

    ``on_unrun(method, outcome)`` hears of each request that never reaches a worker
    (``expired``, ``rejected``, ``error`` for a lost run, ``cancelled`` when its caller
    cancelled it before it ran): a no-op unless metrics are on.
    """

    def __init__(self) -> None:
        self.on_unrun: Callable[[str, str], None] = _ignore
        self._methods: dict[str, Rpc] = {}
        self.queue_name = ""  # rpc-<service>, once set up
        self.version_queue = ""  # rpc-<service>@<version> of a versioned worker (amqprpc.routing)
        self._version_tag: str | None = None

    def register(self, entrypoint: Rpc) -> None:
        self._methods[entrypoint.method_name] = entrypoint

    def setup(self) -> None:
        container = self.container
        self._service = container.service_name
        self.queue_name = f"rpc-{self._service}"
        self._config = container.config
        self._limits = DecodeLimits.from_config(self._config)  # once: read per message
        self._identity = verifier_for(container.service_cls, self._config)  # None: not required
        self._connection = container.connection
        # Before the service queue is consumed: a cancel that comes first is remembered.
        self._cancels = (container.shared_extension(CancelListener, CancelListener)
                         if self._config.cancellation else None)
        bound = max_queue_length(self._config, self._service, container.service_cls)
        version = self._config.service_version
        prefetch = self._config.effective_prefetch
        # Declared even by a canary that does not consume it: a returned request falls back to it.
        self._connection.declare(*rpc_queue_topology(self._config, self._service, bound))
        if version:  # docs/protocol.md, "Versions and canary routing"
            self.version_queue = version_queue(self._service, version)
            self._connection.declare(*version_queue_topology(self._config, self._service, version, bound))
            self._version_tag = self._connection.consume(self.version_queue, self._on_delivery,
                                                         prefetch=prefetch)
        if not (version and self._config.canary):
            self._consumer_tag = self._connection.consume(self.queue_name, self._on_delivery,
                                                          prefetch=prefetch)

    def stop(self) -> None:
        """Stop both consumers; the last worker of a version sends its queue's leftovers on."""
        super().stop()
        tag, self._version_tag = self._version_tag, None
        if tag is not None:
            self._connection.cancel(tag)
            self._forward_leftovers()

    def _forward_leftovers(self) -> None:
        """Requests still queued for this version go to the shared queue, so none is stranded.

        Callers stop routing to a version within ``LIVENESS_TTL`` of its last consumer
        going, so the queue is emptied for twice that long (only when no consumer is left).
        """
        connection, queue = self._connection, self.version_queue
        try:
            info = connection.queue_info(queue)
            if info is not None and info.consumer_count > 0:
                return  # other workers of this version serve it
            deadline = time.monotonic() + FORWARD_WINDOW
            forwarded = 0
            while True:
                delivery = connection.get(queue)
                if delivery is None:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(FORWARD_POLL)  # a poll of the broker, bounded by the deadline
                    continue
                received = Received(delivery.body, delivery.properties, delivery.exchange,
                                    delivery.routing_key)
                copy = forward_copy(received, self._config.rpc_exchange,
                                    canonical_key(delivery.routing_key))
                self._republish_as_is(delivery, copy)
                forwarded += 1
        except Exception as exc:  # broker gone: what is left waits for this version's next worker
            _log.warning("%s: could not send the requests left in %s to the shared queue: %s",
                         self._service, queue, exc)
            return
        if forwarded:
            _log.info("%s: sent %d request(s) left in %s to %s", self._service, forwarded, queue,
                      self.queue_name)

    def _republish_as_is(self, delivery: Delivery, copy: Outgoing) -> None:
        """Publish ``copy``, then ack the original once confirmed (unacked, it comes back)."""
        connection = self._connection

        def confirmed(error: BaseException | None) -> None:
            if error is None:
                connection.ack(delivery)
            else:
                _log.warning("%s: forwarding %s not confirmed (%s); it stays in %s", self._service,
                             copy.routing_key, error, self.version_queue)
                connection.reject(delivery, requeue=True)

        connection.publish(copy, on_confirm=confirmed)

    # ------------------------------------------------------------ per request

    def _handle(self, delivery: Delivery) -> None:
        props = delivery.properties
        routing_key = canonical_key(self._routing_key_of(delivery))  # <service>.<method>, routed or not
        method_name = routing_key.partition(".")[2]
        try:
            deadline = deadline_of(delivery.headers)
        except MalformedRequest as exc:
            _log.warning("refused %s: %s", routing_key, exc)
            self.on_unrun(method_name, "rejected")
            try:
                reply_codec = codec_for(props.get("content_type"))
            except MalformedRequest:
                reply_codec = JSON_CODEC
            self._reply(delivery, reply_codec, None, exc)
            return
        if deadline is not None and deadline < time.time():
            _log.info("skipped %s.%s: its caller's deadline passed %.3fs ago",
                      self._service, method_name, time.time() - deadline)
            self.on_unrun(method_name, "expired")
            self._connection.ack(delivery)
            return
        try:
            codec = codec_for(props.get("content_type"))
        except MalformedRequest as exc:
            self.on_unrun(method_name, "rejected")
            self._reply(delivery, JSON_CODEC, None, exc)
            return
        if self._took_lost_run(delivery, routing_key, codec):
            return
        try:
            entrypoint = self._methods.get(method_name)
            if entrypoint is None:
                raise MethodNotFound(f"{self._service}.{method_name}: no such @rpc method")
            request = parse_request(delivery.body, props.get("content_type"),
                                    self._limits)
            args, kwargs = entrypoint.check_signature(request.args, request.kwargs)
            context = decode_context(delivery.headers, self._config.header_prefix)
            if self._identity is not None:
                context = self._identity.context(context, self._identity.verify(
                    delivery.headers, correlation_id=props.get("correlation_id"), routing_key=routing_key,
                    rerun=delivery.redelivered or attempts_of(delivery.headers) > 0))
        except (MethodNotFound, MalformedRequest, IncorrectSignature, IdentityRefused) as exc:
            _log.warning("refused %s.%s: %s", self._service, method_name, exc)
            self.on_unrun(method_name, "rejected")
            self._reply(delivery, codec, None, exc)
            return
        request_id = props.get("correlation_id")
        cancels = self._cancels
        token = None if cancels is None else cancels.track(request_id)
        if token is not None and token.cancelled:
            assert cancels is not None
            cancels.untrack(request_id, token)
            _log.debug("skipped %s.%s: its caller cancelled it (correlation id %s)",
                       self._service, method_name, request_id)
            self.on_unrun(method_name, "cancelled")
            self._connection.ack(delivery)
            return

        def on_result(ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
            if cancels is not None:
                cancels.untrack(request_id, token)
            error = exc_info[1] if exc_info else None
            if error is None and entrypoint.contract is not None:
                try:
                    result = entrypoint.contract.dump(result)
                except Exception as exc:
                    result, error = None, _unencodable(exc)
            self._reply(delivery, codec, result, error)

        self.container.spawn_worker(
            entrypoint,
            args,
            kwargs,
            context,
            on_result,
            request_id=request_id,
            deadline=deadline,
            redelivered=delivery.redelivered or attempts_of(delivery.headers) > 0,
            headers=delivery.headers,
            cancel=token,
        )

    def _took_lost_run(self, delivery: Delivery, routing_key: str, codec: Codec) -> bool:
        """Count a run that a dead worker never finished; True if the delivery is dealt with.

        A request that kills every worker that takes it (``os._exit``, the OOM killer) must
        not loop for ever, and a Nameko caller sends no deadline to end it. Quorum queues
        count deliveries themselves (``x-delivery-count``); on a classic queue a redelivered
        request goes back as a copy that counts (``x-amqprpc-attempts``). After
        ``rpc_max_attempts`` lost runs the caller gets ``WorkerLost``. A connection that
        drops mid-call costs an attempt too: the broker cannot tell the two apart.
        """
        headers = delivery.headers
        limit = self._config.rpc_max_attempts
        if self._config.queue_type == "quorum":
            lost = headers.get("x-delivery-count")
            lost = lost if isinstance(lost, int) and not isinstance(lost, bool) else 0
            if lost < limit:
                return False
        else:
            if not delivery.redelivered:
                return False
            lost = attempts_of(headers) + 1
            if lost < limit:
                self._run_again(delivery, routing_key, lost)
                return True
        _log.error("%s: %s was taken by %d workers that died before finishing it; answering "
                   "WorkerLost instead of running it again", self._service, routing_key, lost)
        self.on_unrun(routing_key.partition(".")[2], "error")
        self._reply(delivery, codec, None, WorkerLost(
            f"{routing_key} did not finish in {lost} attempts: each worker that ran it "
            "died (or lost its broker connection) first"))
        return True

    def _run_again(self, delivery: Delivery, routing_key: str, lost: int) -> None:
        """Send a counted copy back through a short delay queue; ack the original once safe.

        The delay matters: a copy straight back to the queue can reach the very worker that
        is about to die before the original's ack goes out, and then both come back, lineage
        after lineage. It comes back by queue name, so it names its method in a header.
        """
        delay_ms = _RERUN_DELAY_MS * 2 ** (lost - 1)
        _log.warning("%s: %s was redelivered (lost run %d of at most %d); running it again in "
                     "%d ms", self._service, routing_key, lost, self._config.rpc_max_attempts, delay_ms)
        received = Received(delivery.body, delivery.properties, delivery.exchange, delivery.routing_key)
        target = delay_queue(self.queue_name, delay_ms)
        copy = retry_copy(received, queue=self.queue_name, delay_queue=target, attempts=lost,
                          error=WorkerLost("the worker that ran it died before finishing"))
        self._republish(delivery, copy, delay_queue_arguments(self.queue_name, delay_ms))

    def _routing_key_of(self, delivery: Delivery) -> str:
        """``<service>.<method>``: a re-run copy comes back by queue name and says it in a
        header; a request a version's workers did not take in time, in ``x-death``."""
        if delivery.exchange == "":
            for origin in (delivery.headers.get(ROUTING_KEY_HEADER),
                           dead_lettered_routing_key(delivery.headers)):
                if isinstance(origin, str) and canonical_key(origin).partition(".")[0] == self._service:
                    return origin
        return delivery.routing_key

    def _reply(self, delivery: Delivery, codec: Codec, result: Any,
               error: BaseException | None) -> None:
        """Publish the reply, then ack the request once the broker confirms the reply."""
        reply_to = delivery.properties.get("reply_to")
        if not reply_to:
            self._connection.ack(delivery)
            return
        build = dict(codec=codec, reply_to=reply_to,
                     correlation_id=delivery.properties.get("correlation_id"),
                     rpc_exchange=self._config.rpc_exchange)
        try:
            message = build_reply(result, serialize_error(error) if error else None, **build)
        except Exception as exc:  # the result cannot be encoded: say so instead
            _log.error("%s: cannot encode the reply of %s: %s", self._service,
                       delivery.routing_key, exc)
            message = build_reply(None, serialize_error(_unencodable(exc)), **build)
        connection = self._connection

        def confirmed(failure: BaseException | None) -> None:
            if isinstance(failure, ConnectionLost):
                return  # unacked on a dead connection: the broker redelivers the request
            if failure is not None:
                # Refused (nacked), e.g. a full reply queue. Unacked, the request would run
                # again after every reconnect, without end: it ran once, only its answer is lost.
                _log.error("%s: the broker refused the reply to %s (correlation id %s, "
                           "reply_to %s): %s; the request is acked and will not run again",
                           self._service, delivery.routing_key,
                           delivery.properties.get("correlation_id"), reply_to, failure)
            connection.ack(delivery)

        connection.publish(message, on_confirm=confirmed)


JSON_CODEC = codec_for(JSON)
FORWARD_WINDOW = 2.0  # seconds a version's last worker keeps emptying its queue on stop
FORWARD_POLL = 0.05
_RERUN_DELAY_MS = 250  # before the first re-run of a request whose worker died; doubles after


class UnencodableResult(AmqpRpcError):
    """The handler returned a value the request's serializer cannot encode."""


def _ignore(method: str, outcome: str) -> None:
    """``on_unrun`` while metrics are off."""


def _unencodable(exc: Exception) -> UnencodableResult:
    return UnencodableResult(f"the result cannot be serialized: {exc}")
