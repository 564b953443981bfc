"""The in-memory transport: the :class:`~.base.Transport` contract on a :class:`MemoryBroker`.

Product code, not a mock: it keeps the contract exactly as :mod:`.pyamqp` does (one I/O
thread per transport running every callback, confirms in publish order, redelivery of
unacked messages when a connection dies, acks of a dead connection dropped, topology and
consumers re-established on reconnect) so code tested on ``memory://`` behaves the same
on RabbitMQ. The same behaviour suite runs on both (``tests/unit/transport``).

URLs: ``memory://`` (the unnamed broker) or ``memory://<name>``. Transports given the same
URL share one broker. The named brokers are this module's one piece of process state, and
it has to be: two containers of one test, built from the same ``Config``, must find the
same broker without being handed it. It is held weakly, so a broker nobody uses any more
(no transport, no test holding it) goes away with its queues; pass ``broker=`` to use one
you hold (an explicit broker wins over the URL).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from queue import Empty, SimpleQueue
from time import monotonic
from typing import Any

from ..exceptions import BrokerError, BrokerUnreachable, ConfigError, ConnectionLost
from .base import (
    Arguments,
    ConfirmCallback,
    Delivery,
    DeliveryCallback,
    Entity,
    LostCallback,
    Outgoing,
    QueueInfo,
    ReturnCallback,
)
from .memory_broker import MemoryBroker, PublishBlocked, Session, copy_properties

__all__ = ["MemoryBroker", "MemoryTransport", "broker_for_url"]

_log = logging.getLogger(__name__)

_SCHEME = "memory://"
_named_brokers: weakref.WeakValueDictionary[str, MemoryBroker] = weakref.WeakValueDictionary()
_named_brokers_lock = threading.Lock()


def broker_for_url(url: str) -> MemoryBroker:
    """The broker ``memory://<name>`` names, created on first use and shared while used."""
    if not url.startswith(_SCHEME):
        raise ConfigError(f"a memory broker URL must start with {_SCHEME}: {url!r}")
    name = url[len(_SCHEME):].strip("/")
    if "/" in name or ";" in name:
        raise ConfigError(f"a memory broker URL is memory:// or memory://<name>: {url!r}")
    with _named_brokers_lock:
        broker = _named_brokers.get(name)
        if broker is None:
            broker = MemoryBroker(name)
            _named_brokers[name] = broker
        return broker


class _Consumer:
    __slots__ = ("arguments", "callback", "exclusive", "no_ack", "prefetch", "queue", "tag")

    def __init__(self, tag: str, queue: str, callback: DeliveryCallback, no_ack: bool,
                 exclusive: bool, prefetch: int | None, arguments: Arguments | None) -> None:
        self.tag, self.queue, self.callback = tag, queue, callback
        self.no_ack, self.exclusive, self.prefetch, self.arguments = no_ack, exclusive, prefetch, arguments


class _Waiter:
    """A result handed from the I/O thread to a thread that waits for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def wait(self, timeout: float, what: str) -> Any:
        if not self.done.wait(timeout):
            raise ConnectionLost(f"{what}: no answer from the memory broker within {timeout}s")
        if self.error is not None:
            raise self.error
        return self.value


class MemoryTransport:
    """One connection to a :class:`MemoryBroker`, owned by the I/O thread it starts."""

    def __init__(
        self,
        url: str = _SCHEME,
        *,
        name: str,
        heartbeat: float = 20.0,
        connect_timeout: float = 5.0,
        confirms: bool = True,
        max_backoff: float = 10.0,
        broker: MemoryBroker | None = None,
    ) -> None:
        self.broker = broker if broker is not None else broker_for_url(url)
        self.name = name
        self.left_undone: int | None = 0  # see Transport.left_undone
        self.heartbeat = heartbeat  # nothing to beat in memory; kept for the same signature
        self.connect_timeout = connect_timeout
        self.confirms = confirms
        self.max_backoff = max_backoff
        self._generation = 0
        self._session: Session | None = None  # I/O thread only
        self._inbox: SimpleQueue[tuple[Any, ...]] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._first_attempt_done = threading.Event()
        self._first_error: BaseException | None = None
        self._topology_lock = threading.Lock()
        self._topology: list[Entity | _Consumer] = []  # declared and consumed again on reconnect
        self._tags = itertools.count(1)
        self._on_connect: list[Callable[[], None]] = []
        self._on_lost: list[LostCallback] = []
        self._on_return: list[ReturnCallback] = []
        self._offline: deque[tuple[Any, ...]] = deque()  # waits for the next connection
        self._blocked: deque[tuple[Outgoing, ConfirmCallback | None]] = deque()  # sent, not read
        self._after: deque[Callable[[], None]] = deque()  # returns and confirms, in order
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()
        self._retry_at: float | None = None
        self._fail_fast = True
        self._backoff = 0.05

    def __repr__(self) -> str:
        return f"<MemoryTransport {self.name!r} on {self.broker!r}, generation {self._generation}>"

    # ---------------------------------------------------------------- lifecycle

    def start(self, wait: bool = True) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._fail_fast = wait
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"amqprpc-io-{self.name}", daemon=True)
        self._thread.start()
        if wait:
            self._first_attempt_done.wait()
            if self._first_error is not None:
                error = self._first_error
                self.stop()
                raise BrokerUnreachable(f"cannot connect to the memory broker: {error}") from error

    def stop(self, timeout: float = 5.0) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._inbox.put(("stop",))
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                _log.warning("%s: I/O thread did not stop within %.1fs", self.name, timeout)
        self._thread = None

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def blocked_reason(self) -> str | None:
        return self.broker.blocked_reason if self.is_connected else None

    def simulate_connection_loss(self, reason: str = "connection lost (simulated)") -> None:
        """Break this transport's connection as a network failure would; it reconnects."""
        session = self._session
        if session is not None:
            self.broker.drop(session, reason)

    def _in_io_thread(self) -> bool:
        return self._thread is threading.current_thread()

    # ---------------------------------------------------------------- topology

    def declare(self, *entities: Entity, remember: bool = True) -> None:
        if remember:
            with self._topology_lock:
                self._topology.extend(entities)
        self._run_on_io(("declare", entities, remember), "declare")

    def consume(self, queue: str, callback: DeliveryCallback, *, no_ack: bool = False,
                exclusive: bool = False, prefetch: int | None = None,
                arguments: Arguments | None = None) -> str:
        consumer = _Consumer(f"ctag-{self.name}-{next(self._tags)}", queue, callback, no_ack,
                             exclusive, prefetch, arguments)
        with self._topology_lock:
            self._topology.append(consumer)
        self._run_on_io(("consume", consumer), "consume")
        return consumer.tag

    def cancel(self, consumer_tag: str, timeout: float = 5.0) -> None:
        with self._topology_lock:
            self._topology = [step for step in self._topology
                              if not (isinstance(step, _Consumer) and step.tag == consumer_tag)]
        self._run_on_io(("cancel", consumer_tag), "cancel", timeout)

    def _run_on_io(self, op: tuple[Any, ...], what: str, timeout: float | None = None) -> Any:
        """Run a topology op on the I/O thread; wait for it (and its error) from others."""
        if self._in_io_thread():
            return self._topology_op(op)
        if self._thread is None:
            return None  # not started: the first connect declares it
        waiter = _Waiter()
        self._inbox.put(("wait", op, waiter))
        return waiter.wait(self.connect_timeout if timeout is None else timeout, f"{self.name}: {what}")

    def _topology_op(self, op: tuple[Any, ...]) -> Any:
        session = self._session
        kind = op[0]
        if session is None:
            if kind == "declare" and not op[2]:
                self._offline.append(op)  # declared once, on the next connection
            return None
        try:
            if kind == "declare":
                for entity in op[1]:
                    self.broker.declare(session, entity)
            elif kind == "consume":
                self._start_consumer(session, op[1])
            elif kind == "cancel":
                self.broker.cancel(session, op[1])
        except BrokerError:
            self._forget(op)
            raise
        return None

    def _forget(self, op: tuple[Any, ...]) -> None:
        """A declare or consume the broker refused is not repeated on every reconnect."""
        with self._topology_lock:
            if op[0] == "declare":
                self._topology = [s for s in self._topology if not any(s is e for e in op[1])]
            elif op[0] == "consume":
                self._topology = [s for s in self._topology if s is not op[1]]

    def _start_consumer(self, session: Session, consumer: _Consumer) -> None:
        self.broker.consume(session, consumer.queue, consumer.tag, consumer.callback,
                            no_ack=consumer.no_ack, exclusive=consumer.exclusive,
                            prefetch=consumer.prefetch)

    # ---------------------------------------------------------------- messages

    def publish(self, message: Outgoing, on_confirm: ConfirmCallback | None = None) -> None:
        message = Outgoing(message.exchange, message.routing_key, bytes(message.body),
                           copy_properties(message.properties), message.mandatory)
        if self._in_io_thread() and self._session is not None and not self._blocked:
            self._publish_now(message, on_confirm)
            self._run_after()
        else:
            self._inbox.put(("publish", message, on_confirm))

    def ack(self, delivery: Delivery) -> None:
        self._settle(delivery, None)

    def reject(self, delivery: Delivery, requeue: bool) -> None:
        self._settle(delivery, requeue)

    def _settle(self, delivery: Delivery, requeue: bool | None) -> None:
        if delivery.no_ack:
            return
        if self._in_io_thread():
            self._settle_now(delivery, requeue)
        else:
            self._inbox.put(("settle", delivery, requeue))

    def _settle_now(self, delivery: Delivery, requeue: bool | None) -> None:
        session = self._session
        if session is None or delivery.generation != self._generation:
            return  # its connection died: the broker has requeued it already
        self.broker.settle(session, delivery.tag, requeue=requeue)

    def on_connect(self, callback: Callable[[], None]) -> None:
        self._on_connect.append(callback)

    def on_lost(self, callback: LostCallback) -> None:
        self._on_lost.append(callback)

    def on_return(self, callback: ReturnCallback) -> None:
        self._on_return.append(callback)

    def call_soon(self, fn: Callable[[], None]) -> None:
        if self._in_io_thread():
            fn()
        else:
            self._inbox.put(("call", fn))

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        when = monotonic() + delay
        self.call_soon(lambda: heapq.heappush(self._timers, (when, next(self._timer_ids), fn)))

    # ---------------------------------------------------------------- admin

    def queue_info(self, queue: str, timeout: float = 5.0) -> QueueInfo | None:
        info: QueueInfo | None = self._admin(lambda s: self.broker.queue_info(s, queue), timeout)
        return info

    def get(self, queue: str, timeout: float = 5.0) -> Delivery | None:
        def take(session: Session) -> Delivery | None:
            delivery = self.broker.get(session, queue)
            if delivery is not None:
                delivery.generation = self._generation
            return delivery
        got: Delivery | None = self._admin(take, timeout)
        return got

    def purge(self, queue: str, timeout: float = 5.0) -> int:
        count: int = self._admin(lambda s: self.broker.purge(s, queue), timeout)
        return count

    def delete_queue(self, queue: str, timeout: float = 5.0) -> None:
        self._admin(lambda s: self.broker.delete_queue(s, queue), timeout)

    def _admin(self, fn: Callable[[Session], Any], timeout: float) -> Any:
        """Run ``fn(session)`` on the I/O thread, after what this thread queued before it."""
        if self._in_io_thread():
            raise RuntimeError(f"{self.name}: admin operations must not run on the I/O thread")
        if self._thread is None:
            raise ConnectionLost(f"{self.name}: the transport is not started")
        waiter = _Waiter()
        self._inbox.put(("admin", fn, waiter))
        return waiter.wait(timeout, f"{self.name}: admin operation")

    # ---------------------------------------------------------------- the I/O thread

    def _sink(self, event: tuple[Any, ...]) -> None:
        """Where the broker hands this transport deliveries and events (any thread)."""
        self._inbox.put(event)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._shutdown()

    def _loop(self) -> None:
        self._connect()
        if self._session is None and self._fail_fast:
            return
        while True:
            now = monotonic()
            self._run_timers(now)
            self.broker.sweep()
            if self._session is None and self._retry_at is not None and now >= self._retry_at:
                self._connect()
            try:
                op = self._inbox.get(timeout=self._sleep_time())
            except Empty:
                continue
            if op[0] == "stop":
                return
            self._handle(op)
            self._run_after()

    def _sleep_time(self) -> float | None:
        deadlines = [when for when in (
            self._timers[0][0] if self._timers else None,
            self.broker.next_deadline(),
            self._retry_at if self._session is None else None,
        ) if when is not None]
        return max(0.0, min(deadlines) - monotonic()) if deadlines else None

    def _connect(self) -> None:
        self._retry_at = None
        try:
            session = self.broker.connect(self.name, self._sink)
        except BrokerUnreachable as exc:
            if not self._first_attempt_done.is_set():
                self._first_error = exc
                self._first_attempt_done.set()
                if self._fail_fast:
                    return
            self._retry_at = monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.max_backoff)
            return
        self._first_error = None
        self._backoff = 0.05
        self._session = session
        self._generation += 1
        with self._topology_lock:
            steps = list(self._topology)
        for step in steps:
            try:
                if isinstance(step, _Consumer):
                    self._start_consumer(session, step)
                else:
                    self.broker.declare(session, step)
            except BrokerError:
                _log.exception("%s: the broker refused %r on reconnect", self.name, step)
        self._connected.set()
        self._first_attempt_done.set()
        for callback in self._on_connect:
            self._guarded(callback)
        offline, self._offline = self._offline, deque()
        for op in offline:
            self._handle(op)
        self._run_after()

    def _handle(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        session = self._session
        if kind == "deliver":
            if op[1] is session:
                delivery: Delivery = op[3]
                delivery.generation = self._generation
                self._guarded(lambda: op[2](delivery))
        elif kind == "publish":
            if session is None:
                self._offline.append(op)
            elif self._blocked:
                self._blocked.append((op[1], op[2]))
            else:
                self._publish_now(op[1], op[2])
        elif kind == "settle":
            self._settle_now(op[1], op[2])
        elif kind == "call":
            self._guarded(op[1])
        elif kind in ("wait", "admin"):
            self._answer(op)
        elif kind == "lost":
            if op[1] is session:
                self._lose(op[2])
        elif kind == "unblocked":
            self._flush_blocked()
        elif kind == "retry" and session is None:
            self._retry_at = monotonic()
        # "tick", "blocked", "cancelled": the loop re-reads deadlines and state on its own

    def _answer(self, op: tuple[Any, ...]) -> None:
        kind, payload, waiter = op
        if kind == "admin" and self._session is None:
            self._offline.append(op)  # answered once connected (or the caller times out)
            return
        try:
            waiter.value = payload(self._session) if kind == "admin" else self._topology_op(payload)
        except BaseException as exc:
            waiter.error = exc
        waiter.done.set()

    def _publish_now(self, message: Outgoing, on_confirm: ConfirmCallback | None) -> bool:
        """Hand a publish to the broker; False (and kept, in order) while it is blocked."""
        assert self._session is not None
        try:
            returned, refused = self.broker.publish(self._session, message)
        except PublishBlocked:
            self._blocked.append((message, on_confirm))
            return False
        if refused is not None:
            _log.warning("%s: the memory broker refused a publish to %r/%r: %s", self.name,
                         message.exchange, message.routing_key, refused)
        if returned:  # basic.return comes before the confirm, as RabbitMQ sends them
            for callback in self._on_return:
                self._after.append(lambda cb=callback: cb(message, "NO_ROUTE"))  # type: ignore[misc]
        if on_confirm is not None:
            self._after.append(lambda: on_confirm(refused if self.confirms else None))
        return True

    def _flush_blocked(self) -> None:
        blocked, self._blocked = self._blocked, deque()
        while blocked and self._session is not None:
            if not self._publish_now(*blocked.popleft()):
                self._blocked.extend(blocked)  # blocked again: the rest waits behind it
                return

    def _run_after(self) -> None:
        while self._after:
            self._guarded(self._after.popleft())

    def _run_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            self._guarded(fn)

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            _log.exception("%s: a callback on the I/O thread failed", self.name)

    def _lose(self, error: BaseException) -> None:
        """The connection broke: fail what it had sent unconfirmed, tell owners, reconnect."""
        self._session = None
        self._connected.clear()
        self._run_after()
        blocked, self._blocked = self._blocked, deque()
        for _, on_confirm in blocked:
            if on_confirm is not None:
                self._guarded(lambda cb=on_confirm: cb(error))  # type: ignore[misc]
        for callback in self._on_lost:
            self._guarded(lambda cb=callback: cb(error))  # type: ignore[misc]
        if not self._stopping.is_set():
            self._connect()

    def _shutdown(self) -> None:
        """Flush what is queued, close, fail what never went out, tell owners once more."""
        while True:
            try:
                op = self._inbox.get_nowait()
            except Empty:
                break
            if op[0] not in ("deliver", "stop", "lost"):  # the broker requeues unacked ones
                self._handle(op)
        self._run_after()
        session, self._session = self._session, None
        self._connected.clear()
        undone = len(self._blocked) + sum(1 for op in self._offline if op[0] == "publish")
        if session is not None:
            undone += len(session.unacked)  # requeued by the close, as RabbitMQ would
            self.broker.close(session)
        self.left_undone = undone
        stopped = ConnectionLost(f"{self.name}: connection closed")
        for _, on_confirm in self._blocked:
            if on_confirm is not None:
                self._guarded(lambda cb=on_confirm: cb(stopped))  # type: ignore[misc]
        self._blocked.clear()
        for op in self._offline:
            if op[0] == "publish" and op[2] is not None:
                self._guarded(lambda cb=op[2]: cb(stopped))  # type: ignore[misc]
            elif op[0] in ("wait", "admin"):
                op[2].error = stopped
                op[2].done.set()
        self._offline.clear()
        self._first_attempt_done.set()
        for callback in self._on_lost:
            self._guarded(lambda cb=callback: cb(stopped))  # type: ignore[misc]
