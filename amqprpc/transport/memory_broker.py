"""An in-process AMQP broker that behaves as RabbitMQ does, for :mod:`.memory` transports.

What it models (RabbitMQ 3.10 semantics, the ones amqprpc relies on): the default exchange
and ``direct``/``topic``/``fanout``/``headers`` exchanges; idempotent declares that fail like
PRECONDITION_FAILED when flags or ``x-*`` arguments differ; exclusive and auto-delete queues;
per-consumer prefetch; ack, reject and requeue (to the head, ``redelivered``); message and
queue TTL with dead-lettering (``x-death``); ``x-expires``; ``x-max-length`` with
``drop-head`` or ``reject-publish``; quorum delivery limits (``x-delivery-count``);
mandatory returns; direct reply-to; resource alarms (``block``/``unblock``) and lost
connections (``drop_connections``, ``refuse_connections``).

What it does not: clustering, persistence, real timing (everything is instant), frame
sizes, vhosts, permissions, priorities, streams.

Threads. The broker owns none. All state sits behind one lock; deliveries and events are
handed to a session's ``sink`` (a transport's inbox), never run under the lock by the
broker. Deadlines (TTLs, ``x-expires``) are swept by whoever touches the broker next:
every operation, and the I/O thread of each attached transport, which waits until
``next_deadline()`` and calls ``sweep()`` (``tick`` events wake it when a nearer one comes).
"""

from __future__ import annotations

import copy
import datetime
import heapq
import itertools
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from ..exceptions import BrokerError, BrokerUnreachable, ConnectionLost
from .base import Binding, Delivery, Entity, Exchange, Outgoing, Queue, QueueInfo

REPLY_TO = "amq.rabbitmq.reply-to"
_REPLY_PREFIX = REPLY_TO + "."
_DEFAULT_EXCHANGES = {"amq.direct": "direct", "amq.topic": "topic", "amq.fanout": "fanout",
                      "amq.headers": "headers"}
# The arguments RabbitMQ compares when a queue is redeclared (others are not checked).
_EQUIVALENT_ARGS = ("x-dead-letter-exchange", "x-dead-letter-routing-key", "x-expires",
                    "x-max-length", "x-max-length-bytes", "x-message-ttl", "x-overflow",
                    "x-queue-type", "x-delivery-limit", "x-max-priority", "x-queue-mode")

Sink = Callable[[tuple[Any, ...]], None]


class PublishBlocked(Exception):
    """Internal: the broker is blocked (a resource alarm); the publish must wait."""


def copy_properties(properties: dict[str, Any]) -> dict[str, Any]:
    """A deep copy: headers are nested dicts and lists a consumer could change."""
    return copy.deepcopy(properties)


def _refused(code: str, text: str) -> BrokerError:
    return BrokerError(f"{code} - {text}")


@dataclass(slots=True)
class _Message:
    body: bytes
    properties: dict[str, Any]
    exchange: str
    routing_key: str
    redelivered: bool = False
    expires_at: float | None = None
    returns: int = 0  # quorum queues: times it came back unacked (x-delivery-count)


@dataclass(slots=True)
class _Consumer:
    tag: str
    queue: _QueueState
    session: Session
    callback: Any
    no_ack: bool
    prefetch: int | None
    exclusive: bool
    unacked: int = 0

    def has_room(self) -> bool:
        return self.no_ack or not self.prefetch or self.unacked < self.prefetch


@dataclass(slots=True)
class _QueueState:
    spec: Queue
    owner: Session | None
    messages: deque[_Message] = field(default_factory=deque)
    consumers: list[_Consumer] = field(default_factory=list)
    next_consumer: int = 0
    had_consumer: bool = False
    unused_since: float = field(default_factory=monotonic)

    def argument(self, name: str) -> Any:
        return (self.spec.arguments or {}).get(name)

    @property
    def quorum(self) -> bool:
        return bool(self.argument("x-queue-type") == "quorum")

    def expires_deadline(self) -> float | None:
        expires = self.argument("x-expires")
        if expires is None or self.consumers:
            return None
        return self.unused_since + int(expires) / 1000


@dataclass(slots=True)
class _ExchangeState:
    spec: Exchange
    bindings: list[tuple[str, str]] = field(default_factory=list)  # (routing key, queue)


class Session:
    """One transport connection as the broker sees it: its consumers and unacked deliveries."""

    def __init__(self, broker: MemoryBroker, name: str, sink: Sink) -> None:
        self.broker = broker
        self.name = name
        self.sink = sink
        self.open = True
        self.reply_token: str | None = None
        self.consumers: dict[str, _Consumer] = {}
        self.unacked: dict[int, tuple[_QueueState, _Message, _Consumer | None]] = {}
        self._tags = itertools.count(1)

    def next_tag(self) -> int:
        return next(self._tags)


class MemoryBroker:
    """The state of one in-memory broker; share it by URL (``memory://<name>``) or by object."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._lock = threading.RLock()
        self._exchanges: dict[str, _ExchangeState] = {
            name: _ExchangeState(Exchange(name, type))  # type: ignore[arg-type]
            for name, type in _DEFAULT_EXCHANGES.items()
        }
        self._queues: dict[str, _QueueState] = {}
        self._sessions: list[Session] = []
        self._reply_sessions: dict[str, Session] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._blocked_reason: str | None = None
        self._accepting = True
        self._waiting: list[Sink] = []  # transports waiting to reconnect

    def __repr__(self) -> str:
        return f"<MemoryBroker {self.name!r}: {len(self._queues)} queues, {len(self._sessions)} sessions>"

    # ---------------------------------------------------------------- simulation knobs

    @property
    def blocked_reason(self) -> str | None:
        return self._blocked_reason

    def block(self, reason: str = "low on memory") -> None:
        """Raise a resource alarm: publishes wait (confirms too) until ``unblock``."""
        with self._lock:
            self._blocked_reason = reason
            self._tell_all(("blocked", reason))

    def unblock(self) -> None:
        with self._lock:
            self._blocked_reason = None
            self._tell_all(("unblocked",))

    def drop_connections(self, reason: str = "connection reset by the memory broker") -> None:
        """Break every connection as a network failure would; transports reconnect."""
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            self.drop(session, reason)

    def drop(self, session: Session, reason: str) -> None:
        """Break one connection: its unacked deliveries requeue, its exclusive queues go."""
        with self._lock:
            if not session.open:
                return
            self.close(session)
            session.sink(("lost", session, ConnectionLost(reason)))

    def refuse_connections(self) -> None:
        """The broker is down: connects fail until ``accept_connections``."""
        with self._lock:
            self._accepting = False

    def accept_connections(self) -> None:
        with self._lock:
            self._accepting = True
            waiting, self._waiting = self._waiting, []
        for sink in waiting:
            sink(("retry",))

    def _tell_all(self, event: tuple[Any, ...]) -> None:
        for session in self._sessions:
            session.sink(event)

    # ---------------------------------------------------------------- connections

    def connect(self, name: str, sink: Sink) -> Session:
        with self._lock:
            if not self._accepting:
                self._waiting.append(sink)
                raise BrokerUnreachable(f"the memory broker {self.name!r} refuses connections")
            session = Session(self, name, sink)
            self._sessions.append(session)
            return session

    def close(self, session: Session) -> None:
        """Close a connection: requeue what it had unacked, cancel its consumers, drop its
        exclusive queues."""
        with self._lock:
            if not session.open:
                return
            session.open = False
            self._sessions.remove(session)
            if session.reply_token is not None:
                self._reply_sessions.pop(session.reply_token, None)
            for tag in sorted(session.unacked, reverse=True):
                queue, message, consumer = session.unacked.pop(tag)
                self._requeue(queue, message)
            for consumer in list(session.consumers.values()):
                self._remove_consumer(consumer)
            for queue in [q for q in self._queues.values() if q.owner is session]:
                self._delete(queue)
            for queue in list(self._queues.values()):
                self._dispatch(queue)

    # ---------------------------------------------------------------- topology

    def declare(self, session: Session, entity: Entity) -> None:
        with self._lock:
            self._sweep()
            if isinstance(entity, Exchange):
                self._declare_exchange(entity)
            elif isinstance(entity, Queue):
                self._declare_queue(session, entity)
            elif isinstance(entity, Binding):
                self._bind(session, entity)
            else:
                raise TypeError(f"cannot declare {entity!r}: not an Exchange, Queue or Binding")

    def _declare_exchange(self, spec: Exchange) -> None:
        if spec.name == "" or spec.name.startswith("amq."):
            raise _refused("ACCESS_REFUSED", f"exchange name '{spec.name}' is reserved")
        if spec.type not in ("direct", "topic", "fanout", "headers"):
            raise _refused("COMMAND_INVALID", f"unknown exchange type '{spec.type}'")
        current = self._exchanges.get(spec.name)
        if current is None:
            self._exchanges[spec.name] = _ExchangeState(spec)
            return
        for attr in ("type", "durable", "auto_delete"):
            if getattr(current.spec, attr) != getattr(spec, attr):
                raise _refused("PRECONDITION_FAILED",
                               f"inequivalent arg '{attr}' for exchange '{spec.name}': received "
                               f"{getattr(spec, attr)!r} but current is {getattr(current.spec, attr)!r}")

    def _declare_queue(self, session: Session, spec: Queue) -> None:
        if not spec.name:
            raise _refused("COMMAND_INVALID", "server-named queues are not supported: name the queue")
        if spec.name.startswith("amq."):
            raise _refused("ACCESS_REFUSED", f"queue name '{spec.name}' contains reserved prefix 'amq.*'")
        args = dict(spec.arguments or {})
        if args.get("x-queue-type") == "quorum" and (not spec.durable or spec.exclusive or spec.auto_delete):
            raise _refused("PRECONDITION_FAILED",
                           f"invalid property for quorum queue '{spec.name}': it must be durable, "
                           "not exclusive and not auto-delete")
        current = self._queues.get(spec.name)
        if current is None:
            queue = _QueueState(Queue(spec.name, spec.durable, spec.exclusive, spec.auto_delete, args),
                                owner=session if spec.exclusive else None)
            self._queues[spec.name] = queue
            self._push_deadline(queue)
            return
        self._check_owner(session, current)
        for attr in ("durable", "exclusive", "auto_delete"):
            if getattr(current.spec, attr) != getattr(spec, attr):
                raise _refused("PRECONDITION_FAILED",
                               f"inequivalent arg '{attr}' for queue '{spec.name}': received "
                               f"{getattr(spec, attr)!r} but current is {getattr(current.spec, attr)!r}")
        have = current.spec.arguments or {}
        for name in _EQUIVALENT_ARGS:
            if have.get(name) != args.get(name):
                raise _refused("PRECONDITION_FAILED",
                               f"inequivalent arg '{name}' for queue '{spec.name}': received "
                               f"{args.get(name)!r} but current is {have.get(name)!r}")
        current.unused_since = monotonic()  # a redeclare counts as use (x-expires)
        self._push_deadline(current)

    def _bind(self, session: Session, binding: Binding) -> None:
        if binding.exchange == "":
            raise _refused("ACCESS_REFUSED", "operation not permitted on the default exchange")
        exchange = self._exchanges.get(binding.exchange)
        if exchange is None:
            raise _refused("NOT_FOUND", f"no exchange '{binding.exchange}'")
        queue = self._queue(session, binding.queue)
        key = (binding.routing_key, queue.spec.name)
        if key not in exchange.bindings:
            exchange.bindings.append(key)

    def _queue(self, session: Session, name: str) -> _QueueState:
        queue = self._queues.get(name)
        if queue is None:
            raise _refused("NOT_FOUND", f"no queue '{name}'")
        self._check_owner(session, queue)
        return queue

    def _check_owner(self, session: Session, queue: _QueueState) -> None:
        if queue.owner is not None and queue.owner is not session:
            raise _refused("RESOURCE_LOCKED",
                           f"cannot obtain exclusive access to locked queue '{queue.spec.name}'")

    def _delete(self, queue: _QueueState) -> int:
        name = queue.spec.name
        self._queues.pop(name, None)
        for consumer in list(queue.consumers):
            consumer.session.consumers.pop(consumer.tag, None)
            consumer.session.sink(("cancelled", consumer.session, consumer.tag))
        queue.consumers.clear()
        for exchange_name, exchange in list(self._exchanges.items()):
            before = len(exchange.bindings)
            exchange.bindings = [b for b in exchange.bindings if b[1] != name]
            if exchange.spec.auto_delete and before and not exchange.bindings:
                del self._exchanges[exchange_name]
        count = len(queue.messages)
        queue.messages.clear()
        return count

    # ---------------------------------------------------------------- consumers

    def consume(self, session: Session, queue_name: str, tag: str, callback: Any, *, no_ack: bool,
                exclusive: bool, prefetch: int | None) -> None:
        with self._lock:
            self._sweep()
            if queue_name == REPLY_TO:
                if not no_ack:
                    raise _refused("PRECONDITION_FAILED", "reply consumer cannot acknowledge")
                if session.reply_token is None:
                    session.reply_token = uuid.uuid4().hex
                    self._reply_sessions[session.reply_token] = session
                reply = _QueueState(Queue(REPLY_TO, durable=False), owner=session)
                session.consumers[tag] = _Consumer(tag, reply, session, callback, True, None, False)
                return
            queue = self._queue(session, queue_name)
            if any(c.exclusive for c in queue.consumers) or (exclusive and queue.consumers):
                raise _refused("ACCESS_REFUSED", f"queue '{queue_name}' in exclusive use")
            if tag in session.consumers:
                raise _refused("NOT_ALLOWED", f"attempt to reuse consumer tag '{tag}'")
            consumer = _Consumer(tag, queue, session, callback, no_ack, prefetch, exclusive)
            queue.consumers.append(consumer)
            queue.had_consumer = True
            session.consumers[tag] = consumer
            self._dispatch(queue)

    def cancel(self, session: Session, tag: str) -> None:
        with self._lock:
            consumer = session.consumers.pop(tag, None)
            if consumer is not None:
                self._remove_consumer(consumer)

    def _remove_consumer(self, consumer: _Consumer) -> None:
        consumer.session.consumers.pop(consumer.tag, None)
        queue = consumer.queue
        if consumer in queue.consumers:
            queue.consumers.remove(consumer)
        if queue.spec.name not in self._queues:  # deleted, or the reply-to pseudo-queue
            return
        if not queue.consumers:
            queue.unused_since = monotonic()
            if queue.spec.auto_delete and queue.had_consumer:
                self._delete(queue)
                return
            self._push_deadline(queue)

    # ---------------------------------------------------------------- messages

    def publish(self, session: Session, message: Outgoing) -> tuple[bool, BrokerError | None]:
        """Route a publish; returns (returned as unroutable, refusal). Raises PublishBlocked."""
        with self._lock:
            self._sweep()
            if self._blocked_reason is not None:
                raise PublishBlocked(self._blocked_reason)
            properties = copy_properties(message.properties)
            if properties.get("reply_to") == REPLY_TO:
                if session.reply_token is None:
                    return False, _refused("PRECONDITION_FAILED", "fast reply consumer does not exist")
                properties["reply_to"] = _REPLY_PREFIX + session.reply_token
            msg = _Message(bytes(message.body), properties, message.exchange, message.routing_key)
            if message.exchange == "" and message.routing_key.startswith(_REPLY_PREFIX):
                self._direct_reply(msg)
                return False, None  # RabbitMQ never returns these, delivered or not
            queues = self._route(message.exchange, message.routing_key, properties)
            if queues is None:
                return False, _refused("NOT_FOUND", f"no exchange '{message.exchange}'")
            refused = None
            for queue in queues:
                if not self._enqueue(queue, msg if queue is queues[-1] else self._clone(msg)):
                    refused = _refused("REJECT_PUBLISH", f"queue '{queue.spec.name}' is full")
            return (message.mandatory and not queues), refused

    def _direct_reply(self, msg: _Message) -> None:
        session = self._reply_sessions.get(msg.routing_key[len(_REPLY_PREFIX):])
        if session is None or not session.open:
            return
        for consumer in session.consumers.values():
            if consumer.queue.spec.name == REPLY_TO:
                self._deliver(consumer, msg)
                return

    def _route(self, exchange_name: str, routing_key: str, properties: dict[str, Any]
               ) -> list[_QueueState] | None:
        if exchange_name == "":
            queue = self._queues.get(routing_key)
            return [queue] if queue is not None else []
        exchange = self._exchanges.get(exchange_name)
        if exchange is None:
            return None
        kind = exchange.spec.type
        names: list[str] = []
        for key, queue_name in exchange.bindings:
            if kind in ("fanout", "headers") or (kind == "direct" and key == routing_key) or (
                    kind == "topic" and topic_matches(key, routing_key)):
                if queue_name not in names:
                    names.append(queue_name)
        return [self._queues[name] for name in names if name in self._queues]

    @staticmethod
    def _clone(msg: _Message) -> _Message:
        return _Message(msg.body, copy_properties(msg.properties), msg.exchange, msg.routing_key)

    def _enqueue(self, queue: _QueueState, msg: _Message) -> bool:
        """Add to the queue's tail; False when ``reject-publish`` refuses it."""
        max_length = queue.argument("x-max-length")
        overflow = queue.argument("x-overflow") or "drop-head"
        if max_length is not None and overflow.startswith("reject-publish") \
                and len(queue.messages) >= int(max_length):
            if overflow == "reject-publish-dlx":
                self._dead_letter(queue, msg, "maxlen")
            return False
        ttls = [int(t) for t in (queue.argument("x-message-ttl"), msg.properties.get("expiration"))
                if t is not None]
        if ttls:
            msg.expires_at = monotonic() + min(ttls) / 1000
        queue.messages.append(msg)
        if max_length is not None and overflow == "drop-head":
            while len(queue.messages) > int(max_length):
                self._dead_letter(queue, queue.messages.popleft(), "maxlen")
        self._dispatch(queue)
        self._expire_head(queue, monotonic())
        return True

    def _dispatch(self, queue: _QueueState) -> None:
        """Hand ready messages to consumers with room, round robin."""
        if queue.spec.name not in self._queues:
            return
        now = monotonic()
        while queue.messages and queue.consumers:
            self._expire_head(queue, now)
            if not queue.messages:
                return
            consumer = self._next_consumer(queue)
            if consumer is None:
                return
            self._deliver(consumer, queue.messages.popleft())

    def _next_consumer(self, queue: _QueueState) -> _Consumer | None:
        count = len(queue.consumers)
        for offset in range(count):
            index = (queue.next_consumer + offset) % count
            consumer = queue.consumers[index]
            if consumer.has_room():
                queue.next_consumer = (index + 1) % count
                return consumer
        return None

    def _deliver(self, consumer: _Consumer, msg: _Message) -> None:
        session = consumer.session
        tag = session.next_tag()
        if not consumer.no_ack:
            consumer.unacked += 1
            session.unacked[tag] = (consumer.queue, msg, consumer)
        session.sink(("deliver", session, consumer.callback, self._delivery(tag, msg, consumer.no_ack)))

    @staticmethod
    def _delivery(tag: int, msg: _Message, no_ack: bool) -> Delivery:
        properties = copy_properties(msg.properties)
        if msg.returns:
            headers = dict(properties.get("application_headers") or {})
            headers["x-delivery-count"] = msg.returns
            properties["application_headers"] = headers
        return Delivery(tag=tag, generation=0, body=msg.body, properties=properties,
                        exchange=msg.exchange, routing_key=msg.routing_key,
                        redelivered=msg.redelivered, no_ack=no_ack)

    def settle(self, session: Session, tag: int, *, requeue: bool | None) -> None:
        """Ack (``requeue=None``) or reject a delivery; unknown tags are ignored."""
        with self._lock:
            entry = session.unacked.pop(tag, None)
            if entry is None:
                return
            queue, msg, consumer = entry
            if consumer is not None:
                consumer.unacked -= 1
            if requeue is True:
                self._requeue(queue, msg)
            elif requeue is False:
                self._dead_letter(queue, msg, "rejected")
            self._dispatch(queue)

    def _requeue(self, queue: _QueueState, msg: _Message) -> None:
        if queue.spec.name not in self._queues:
            return
        msg.redelivered = True
        if queue.quorum:
            msg.returns += 1
            limit = queue.argument("x-delivery-limit")
            if limit is not None and msg.returns > int(limit):
                self._dead_letter(queue, msg, "delivery_limit")
                return
        queue.messages.appendleft(msg)

    def _dead_letter(self, queue: _QueueState, msg: _Message, reason: str) -> None:
        exchange = queue.argument("x-dead-letter-exchange")
        if exchange is None:
            return
        routing_key = queue.argument("x-dead-letter-routing-key") or msg.routing_key
        properties = copy_properties(msg.properties)
        headers = dict(properties.get("application_headers") or {})
        headers.pop("x-delivery-count", None)
        deaths = [d for d in headers.get("x-death") or [] if isinstance(d, dict)]
        previous = next((d for d in deaths if d.get("queue") == queue.spec.name
                         and d.get("reason") == reason), None)
        if previous is not None:
            deaths.remove(previous)
        death: dict[str, Any] = {
            "count": (previous or {}).get("count", 0) + 1, "reason": reason,
            "queue": queue.spec.name, "exchange": msg.exchange, "routing-keys": [msg.routing_key],
            "time": datetime.datetime.now(datetime.UTC).replace(microsecond=0),
        }
        if "expiration" in properties:
            death["original-expiration"] = properties.pop("expiration")
        headers["x-death"] = [death, *deaths]
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-queue", queue.spec.name)
        headers.setdefault("x-first-death-exchange", msg.exchange)
        properties["application_headers"] = headers
        dead = _Message(msg.body, properties, exchange, routing_key)
        for target in self._route(exchange, routing_key, properties) or []:
            if target is not queue or reason == "rejected":  # RabbitMQ drops expiry cycles
                self._enqueue(target, self._clone(dead))

    # ---------------------------------------------------------------- deadlines

    def _expire_head(self, queue: _QueueState, now: float) -> None:
        while queue.messages and queue.messages[0].expires_at is not None \
                and queue.messages[0].expires_at <= now:
            self._dead_letter(queue, queue.messages.popleft(), "expired")
        self._push_deadline(queue)

    def _push_deadline(self, queue: _QueueState) -> None:
        when = queue.expires_deadline()
        if queue.messages and queue.messages[0].expires_at is not None:
            head = queue.messages[0].expires_at
            when = head if when is None else min(when, head)
        if when is None:
            return
        if not self._deadlines or when < self._deadlines[0][0]:
            self._tell_all(("tick",))
        heapq.heappush(self._deadlines, (when, queue.spec.name))

    def next_deadline(self) -> float | None:
        with self._lock:
            return self._deadlines[0][0] if self._deadlines else None

    def sweep(self) -> None:
        """Expire messages and unused queues whose time has come."""
        with self._lock:
            self._sweep()

    def _sweep(self) -> None:
        now = monotonic()
        due: set[str] = set()
        while self._deadlines and self._deadlines[0][0] <= now:
            due.add(heapq.heappop(self._deadlines)[1])
        for name in due:
            queue = self._queues.get(name)
            if queue is None:
                continue
            expires = queue.expires_deadline()
            if expires is not None and expires <= now:
                self._delete(queue)
                continue
            self._expire_head(queue, now)
            self._dispatch(queue)

    # ---------------------------------------------------------------- admin

    def queue_info(self, session: Session, name: str) -> QueueInfo | None:
        with self._lock:
            self._sweep()
            queue = self._queues.get(name)
            if queue is None:
                return None
            self._check_owner(session, queue)
            queue.unused_since = monotonic()  # RabbitMQ: a passive declare is use (x-expires)
            self._push_deadline(queue)
            return QueueInfo(name, len(queue.messages), len(queue.consumers))

    def get(self, session: Session, name: str) -> Delivery | None:
        with self._lock:
            self._sweep()
            queue = self._queue(session, name)
            queue.unused_since = monotonic()
            self._expire_head(queue, monotonic())
            if not queue.messages:
                return None
            msg = queue.messages.popleft()
            tag = session.next_tag()
            session.unacked[tag] = (queue, msg, None)
            return self._delivery(tag, msg, no_ack=False)

    def purge(self, session: Session, name: str) -> int:
        with self._lock:
            queue = self._queue(session, name)
            count = len(queue.messages)
            queue.messages.clear()
            return count

    def delete_queue(self, session: Session, name: str) -> None:
        with self._lock:
            queue = self._queues.get(name)
            if queue is not None:
                self._check_owner(session, queue)
                self._delete(queue)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more."""
    return _match(pattern.split("."), routing_key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])
