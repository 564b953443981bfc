"""RabbitMQ over py-amqp: the :class:`~.base.Transport` contract, and the only importer of ``amqp``.

Why one thread: py-amqp is not thread-safe (reads, channel state and acks are unguarded,
and ``drain_events`` flips the shared socket's timeout). So every other thread talks to
the I/O thread through an :class:`~.outbox.Outbox` plus a wake-up fd, and the I/O thread:

* ``select()``s on the socket and the wake fd (never polls), with a timeout of a quarter
  heartbeat so heartbeats are sent and checked however long handlers run;
* drains the outbox by its one rule (publishes, acks, rejects, calls: see ``outbox``);
* drains every complete frame the socket holds, dispatching deliveries to consumers;
* acks in batches: one ``basic_ack(multiple=True)`` for the contiguous prefix of finished
  deliveries, single acks for finished ones behind a still-running one;
* reconnects with capped exponential backoff, declaring the remembered topology and
  consuming again before the ``on_connect`` callbacks run. Deliveries of a dead connection
  are never acked: the broker has already requeued them.

The I/O thread holds ``_socket_lock`` except while it sleeps in ``select()``. A thread
that publishes while it sleeps takes the lock and writes the publish itself, when nothing
it queued earlier is still waiting: that saves the wake-up and a thread hand-off on each
side of a call, most of what sequential calls cost beyond the raw protocol. A busy I/O
thread keeps the lock, so under load publishes queue and go out in batches as before.

Publishes use ``send_method`` directly: py-amqp's ``basic_publish`` first drains incoming
frames when ``connection.blocked`` is negotiated, which costs ~30% throughput and
re-enters consumer callbacks. Publisher confirms are asynchronous.

A refused declare or consume (PRECONDITION_FAILED, RESOURCE_LOCKED) closes the channel and
py-amqp reopens it without confirms or consumers, so the transport replaces the connection
after telling the caller. Passive declares, purges and deletes use a second channel, where
a 404 costs nothing. Errors from amqp and the socket are translated here, once, into
``BrokerError`` subclasses: nothing above this module sees an ``amqp`` exception.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import select
import ssl
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from time import monotonic as _monotonic
from typing import Any, TypeVar

import amqp
from amqp import spec
from amqp.transport import TCPTransport

from ..exceptions import BrokerError, BrokerUnreachable, ConnectionLost
from .address import BrokerAddress, parse_broker_urls
from .base import (
    Arguments,
    Binding,
    ConfirmCallback,
    Consumer,
    Delivery,
    DeliveryCallback,
    Entity,
    Exchange,
    LostCallback,
    Outgoing,
    Queue,
    QueueInfo,
    ReturnCallback,
)
from .framing import RECV_SIZE, Cork, read_frames
from .outbox import Ack, Call, Op, Outbox, Publish, Reject
from .tls import handshake_failed, login_method, ssl_options
from .wakeup import Wakeup

__all__ = ["AmqpTransport", "can_log_in"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that mean "this connection is gone; reconnect". Everything else is a bug.
_RECOVERABLE: tuple[type[BaseException], ...] = (
    OSError,  # socket errors, ConnectionResetError, socket.timeout on connect
    amqp.exceptions.AMQPError,  # channel/connection closed by the broker, heartbeat missed
    EOFError,
)

_MAX_FRAMES_PER_WAKE = 1000
_NACK_REPLACE_INTERVAL = 5.0  # seconds: nacks for other reasons (a full queue) must not churn
# Said when a declare meets a queue of the same name with other arguments (a changed
# max_queue_length, queue_type): RabbitMQ never changes an existing queue's arguments.
INEQUIVALENT_HINT = (
    "; RabbitMQ cannot change the arguments of an existing queue: declare it as it is (set "
    "max_queue_length/queue_type back), or delete it while it is empty so the next start "
    "declares it anew, or leave it as it is and set the bound with a policy "
    "(docs/resilience.md, 'Overload protection')")
_NACK_STREAK = 1.0  # seconds of nacks to one routing key, none acked, before the channel counts as broken
_NACK_STREAK_COUNT = 20  # ... and at least this many of them
_MAX_NACK_STREAKS = 1000


class AmqpTransport:
    """One AMQP connection with one channel, owned by the I/O thread this object starts."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        heartbeat: float = 20.0,
        connect_timeout: float = 5.0,
        confirms: bool = True,
        max_backoff: float = 10.0,
    ) -> None:
        self.addresses: list[BrokerAddress] = parse_broker_urls(url)
        self.address = self.addresses[0]  # the node tried next; moves on when it is unreachable
        self.name = name
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.confirms = confirms
        self.max_backoff = max_backoff
        self._blocked_reason: str | None = None
        self._generation = 0
        # After stop(): publishes the broker had not confirmed plus deliveries not acked when
        # the connection closed (they will be redelivered). None when the close was not
        # answered (a silent peer): then not even the acks sent before it are known to
        # have arrived.
        self.left_undone: int | None = 0

        self._outbox = Outbox()
        self._socket_lock = threading.Lock()  # the I/O thread's, except while in select()
        self._recv_view = memoryview(bytearray(RECV_SIZE))  # I/O thread only
        # Why this connection must be replaced before anything else goes out on it: a direct
        # publish broke the stream, the broker nacked a publish (see _on_confirm_nack) or
        # closed the channel over a refused declare.
        self._replace_because: BaseException | None = None
        self._stream_intact = False  # with _replace_because: the socket still carries frames
        self._replaced_for_nack_at = -_NACK_REPLACE_INTERVAL
        # Routing key -> when its publishes began to be nacked with none acked since (see
        # _on_confirm_nack); empty on the normal path, so an ack then costs one truth test.
        self._nack_streaks: dict[str, list[float]] = {}  # key -> [since, nacks]
        self._wakeup: Wakeup | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._first_attempt_done = threading.Event()
        self._first_error: BaseException | None = None
        self._fail_fast = True
        self._conn: amqp.Connection | None = None
        self._channel: amqp.Channel | None = None
        self._admin_channel: amqp.Channel | None = None
        self._topology_lock = threading.Lock()
        self._topology: list[Entity | Consumer] = []  # declared and consumed on every connect
        self._once: list[Entity] = []  # remember=False declares made while disconnected
        self._tags = itertools.count(1)
        self._on_connect: list[Callable[[], None]] = []
        self._on_lost: list[LostCallback] = []
        self._on_return: list[ReturnCallback] = []
        self._consumers: dict[str, tuple[DeliveryCallback, bool]] = {}
        self._unconfirmed: dict[int, tuple[ConfirmCallback, str]] = {}  # seq -> (callback, routing key)
        self._publish_seq = 0
        self._outstanding: dict[int, bool] = {}  # tag -> finished, in delivery order
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()

    def __repr__(self) -> str:
        return f"<AmqpTransport {self.name!r} to {self.address}, generation {self._generation}>"

    # ---------------------------------------------------------------- lifecycle

    def start(self, wait: bool = True) -> None:
        """Start the I/O thread. With ``wait``, raise BrokerUnreachable if the first connect
        fails; without, return at once and keep retrying until the broker answers.
        """
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._fail_fast = wait
        self._stopping.clear()
        self._wakeup = Wakeup()
        self._thread = threading.Thread(target=self._run, name=f"amqprpc-io-{self.name}", daemon=True)
        self._thread.start()
        if wait:
            self._first_attempt_done.wait()
            if self._first_error is not None:
                self.stop()
                where = ", ".join(str(address) for address in self.addresses)
                raise BrokerUnreachable(
                    f"cannot connect to the broker at {where}: {self._first_error}"
                ) from self._first_error

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what is queued (publishes, acks), wait briefly for confirms, close."""
        thread = self._thread
        if thread is None:
            return
        self.left_undone = None
        self._stopping.set()
        self._wake()
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                _log.warning("%s: I/O thread did not stop within %.1fs", self.name, timeout)
        self._thread = None
        if self._wakeup is not None and not thread.is_alive():
            self._wakeup.close()
            self._wakeup = None

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def blocked_reason(self) -> str | None:
        return self._blocked_reason

    def _in_io_thread(self) -> bool:
        return self._thread is threading.current_thread()

    # ---------------------------------------------------------------- topology

    def declare(self, *entities: Entity, remember: bool = True) -> None:
        if remember:
            with self._topology_lock:
                self._topology.extend(entities)
        if self._thread is None:
            if not remember:
                self._once.extend(entities)
            return
        self._on_io(lambda: self._declare_now(entities, remember), "declare")

    def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        prefetch: int | None = None,
        arguments: Arguments | None = None,
    ) -> str:
        consumer = Consumer(f"ctag-{self.name}-{next(self._tags)}", queue, callback, no_ack,
                             exclusive, prefetch, arguments)
        with self._topology_lock:
            self._topology.append(consumer)
        if self._thread is not None:
            self._on_io(lambda: self._consume_now(consumer), "consume")
        return consumer.tag

    def cancel(self, consumer_tag: str, timeout: float = 5.0) -> None:
        with self._topology_lock:
            self._topology = [step for step in self._topology
                              if not (isinstance(step, Consumer) and step.tag == consumer_tag)]
        if self._thread is None or not self.is_connected:
            return  # a connection that is gone has no consumer left to cancel
        try:
            self._on_io(lambda: self._cancel_now(consumer_tag), "cancel", timeout)
        except BrokerError:
            _log.debug("%s: cancel of %s failed (connection gone)", self.name, consumer_tag,
                       exc_info=True)

    def _on_io(self, fn: Callable[[], T], what: str, timeout: float | None = None) -> T | None:
        """Run ``fn`` on the I/O thread and return its result (its error, as BrokerError).

        Off the I/O thread it waits up to ``timeout`` (the connect timeout by default) and
        returns None when the connection is down: the next connect does the work.
        """
        if self._in_io_thread():
            return fn()
        future: Future[T | None] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)
                if isinstance(exc, _RECOVERABLE):
                    raise  # the connection broke meanwhile: the loop reconnects

        self._outbox.put(Call(run))
        self._wake()
        try:
            return future.result(self.connect_timeout if timeout is None else timeout)
        except FutureTimeout:
            raise ConnectionLost(f"{self.name}: {what}: no answer from the broker in time") from None
        except _RECOVERABLE as exc:
            raise ConnectionLost(f"{self.name}: {what}: connection lost: {exc}") from exc

    def _declare_now(self, entities: tuple[Entity, ...], remembered: bool) -> None:
        channel = self._channel
        if channel is None:
            if not remembered:
                self._once.extend(entities)
            return  # remembered ones are declared on connect
        for entity in entities:
            try:
                _declare(channel, entity)
            except amqp.exceptions.ChannelError as exc:
                if remembered:
                    self._forget(*entities)
                raise self._refused(exc, f"declare {entity}") from None

    def _consume_now(self, consumer: Consumer) -> None:
        channel = self._channel
        if channel is None or consumer.tag in self._consumers:
            return  # the connect that runs next (or just ran) starts it
        try:
            if not consumer.no_ack:  # per consumer (global=False): consumers made after it
                channel.basic_qos(0, consumer.prefetch or 0, False)
            channel.basic_consume(queue=consumer.queue, consumer_tag=consumer.tag,
                                  no_ack=consumer.no_ack, exclusive=consumer.exclusive,
                                  callback=self._deliver, arguments=consumer.arguments,
                                  on_cancel=lambda tag: self._on_consumer_cancelled(consumer.queue, tag))
        except amqp.exceptions.ChannelError as exc:
            self._forget(consumer)
            raise self._refused(exc, f"consume {consumer.queue!r}") from None
        self._consumers[consumer.tag] = (consumer.callback, consumer.no_ack)

    def _cancel_now(self, consumer_tag: str) -> None:
        if self._channel is not None and consumer_tag in self._consumers:
            self._channel.basic_cancel(consumer_tag)
        self._consumers.pop(consumer_tag, None)

    def _forget(self, *steps: Entity | Consumer) -> None:
        """What the broker refused is not declared again on every reconnect."""
        with self._topology_lock:
            self._topology = [s for s in self._topology if not any(s is step for step in steps)]

    def _refused(self, exc: BaseException, what: str) -> BrokerError:
        """The broker closed the channel: tell the caller, and replace the connection."""
        if self._replace_because is None:
            self._replace_because = exc
            self._stream_intact = False
        return BrokerError(f"{self.name}: the broker refused to {what}: {exc}")

    # ---------------------------------------------------------------- messages (any thread)

    def publish(self, message: Outgoing, on_confirm: ConfirmCallback | None = None) -> None:
        """Send or queue a publish; ``on_confirm(None)`` on broker confirm, ``on_confirm(error)`` if not."""
        if self._in_io_thread():
            if self._channel is not None:
                self._publish_now(message, on_confirm)
                return
        elif not _on_event_loop() and self._publish_direct(message, on_confirm):
            return  # (never on an event loop: a broker that stops reading would stall it)
        self._outbox.put(Publish(message, on_confirm))
        self._wake()

    def _publish_direct(self, message: Outgoing, on_confirm: ConfirmCallback | None) -> bool:
        """Write the publish from this thread if the I/O thread sleeps; False: queue it.

        Only when nothing is queued ahead of it (a thread's publishes keep their order),
        the connection is up and the broker has not blocked it (a blocked broker stops
        reading: the write would stall this thread, not just the I/O thread).
        """
        if not self._socket_lock.acquire(blocking=False):
            return False
        try:
            conn = self._conn
            if (conn is None or self._channel is None or self._blocked_reason is not None
                    or self._replace_because is not None or self._stopping.is_set()
                    or not self._outbox.empty()):
                return False
            confirm_after_write = None if self.confirms else on_confirm
            try:
                with Cork(conn.transport):
                    self._publish_now(message, on_confirm if self.confirms else None)
            except _RECOVERABLE as exc:
                # Maybe half a frame went out: the stream is unusable. The I/O thread raises
                # this when it next holds the lock, reconnects, and the queued copy goes
                # out on the new connection.
                if self.confirms:
                    self._unconfirmed.pop(self._publish_seq, None)
                self._replace_because = exc
                self._stream_intact = False
                return False
        finally:
            self._socket_lock.release()
        if confirm_after_write is not None:
            confirm_after_write(None)
        return True

    def ack(self, delivery: Delivery) -> None:
        """Ack once the I/O thread next flushes (batched with others)."""
        if delivery.no_ack:
            return
        if self._in_io_thread():
            self._mark_finished(delivery)
        else:
            self._outbox.put(Ack(delivery))
            self._wake()

    def reject(self, delivery: Delivery, requeue: bool) -> None:
        if delivery.no_ack:
            return
        if self._in_io_thread():
            self._reject_now(delivery, requeue)
        else:
            self._outbox.put(Reject(delivery, requeue))
            self._wake()

    def on_connect(self, callback: Callable[[], None]) -> None:
        self._on_connect.append(callback)

    def on_lost(self, callback: LostCallback) -> None:
        self._on_lost.append(callback)

    def on_return(self, callback: ReturnCallback) -> None:
        self._on_return.append(callback)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the I/O thread (at once if called from it)."""
        if self._in_io_thread():
            fn()
        else:
            self._outbox.put(Call(fn))
            self._wake()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the I/O thread after ``delay`` seconds (a deadline, a retry)."""
        when = _monotonic() + delay
        self.call_soon(lambda: heapq.heappush(self._timers, (when, next(self._timer_ids), fn)))

    # ---------------------------------------------------------------- admin (not the I/O thread)

    def queue_info(self, queue: str, timeout: float = 5.0, *,
                   detached: bool = False) -> QueueInfo | None:
        if detached:  # py-amqp waits for the answer without a deadline: not on the I/O thread
            return _queue_info_detached(self.address, queue, timeout, self.name)

        def passive() -> QueueInfo | None:
            try:
                ok = self._admin().queue_declare(queue, passive=True)
            except amqp.exceptions.NotFound:
                return None
            return QueueInfo(queue, int(ok.message_count), int(ok.consumer_count))
        return self._admin_op(passive, f"queue_info {queue!r}", timeout)

    def get(self, queue: str, timeout: float = 5.0) -> Delivery | None:
        def take() -> Delivery | None:
            try:
                message = self._main_channel().basic_get(queue, no_ack=False)
            except amqp.exceptions.ChannelError as exc:  # it closed the main channel
                raise self._refused(exc, f"get from {queue!r}") from None
            if message is None:
                return None
            self._outstanding[message.delivery_tag] = False
            return self._delivery(message, no_ack=False)
        return self._admin_op(take, f"get {queue!r}", timeout)

    def purge(self, queue: str, timeout: float = 5.0) -> int:
        def purge() -> int:
            return int(self._admin().queue_purge(queue) or 0)
        count = self._admin_op(purge, f"purge {queue!r}", timeout)
        return count or 0

    def delete_queue(self, queue: str, timeout: float = 5.0) -> None:
        def delete() -> None:
            try:
                self._admin().queue_delete(queue)
            except amqp.exceptions.NotFound:
                pass
        self._admin_op(delete, f"delete_queue {queue!r}", timeout)

    def _admin_op(self, fn: Callable[[], T], what: str, timeout: float) -> T:
        """Run ``fn`` on the I/O thread, after what this thread queued before it; wait for it.

        Queued while disconnected, it runs on the next connection (or the caller times out).
        """
        if self._in_io_thread():
            raise RuntimeError(f"{self.name}: admin operations must not run on the I/O thread")
        if self._thread is None:
            raise ConnectionLost(f"{self.name}: the transport is not started")
        future: Future[T] = Future()

        def run() -> None:
            if future.done():
                return  # its caller gave up
            if self._channel is None:
                raise ConnectionLost(f"{self.name}: not connected")  # kept for the next connection
            try:
                future.set_result(fn())
            except amqp.exceptions.ChannelError as exc:
                future.set_exception(BrokerError(f"{self.name}: {what}: {exc}"))
            except BaseException as exc:
                future.set_exception(ConnectionLost(f"{self.name}: {what}: {exc}")
                                     if isinstance(exc, _RECOVERABLE) else exc)
                if isinstance(exc, _RECOVERABLE):
                    raise

        self._outbox.put(Call(run))
        self._wake()
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise ConnectionLost(f"{self.name}: {what}: no answer from the broker within "
                                 f"{timeout}s") from None

    def _main_channel(self) -> amqp.Channel:
        if self._channel is None:
            raise ConnectionLost(f"{self.name}: not connected to the broker")
        return self._channel

    def _admin(self) -> amqp.Channel:
        """A second channel for admin operations: a 404 there leaves the main one alone."""
        channel = self._admin_channel
        if channel is None or not channel.is_open:
            assert self._conn is not None
            channel = self._admin_channel = self._conn.channel()
        return channel

    def _on_consumer_cancelled(self, queue: str, consumer_tag: str) -> None:
        """The broker cancelled a consumer (B6: its queue was deleted): replace the connection.

        A worker that idled on, consuming nothing, would be a silent outage. Reconnecting
        declares the remembered topology again, so the queue, its bindings and the consumer
        come back; deliveries in flight on this connection are redelivered (at-least-once).
        """
        self._consumers.pop(consumer_tag, None)
        raise amqp.exceptions.RecoverableConnectionError(
            f"{self.name}: the broker cancelled the consumer of queue {queue!r} (was it "
            "deleted?); reconnecting to declare it again")

    # ---------------------------------------------------------------- the loop

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.wake()

    def _run(self) -> None:
        with self._socket_lock:
            self._run_locked()

    def _run_locked(self) -> None:
        backoff = 0.1
        failed_in_a_row = 0  # nodes that could not be reached since the last connection
        while not self._stopping.is_set():
            generation = self._generation
            try:
                self._connect()
            except _RECOVERABLE as exc:
                # Owners heard of the loss when the last connection broke; a failed attempt
                # is news only if it got as far as a new channel.
                self._disconnect(exc, notify=self._generation != generation)
                failed_in_a_row += 1
                unreachable, self.address = self.address, self._next_address()
                if failed_in_a_row % len(self.addresses):  # another node left to try: at once
                    _log.warning("%s: cannot reach the broker at %s (%s); trying %s",
                                 self.name, unreachable, exc, self.address)
                    continue
                if self._fail_fast and not self._first_attempt_done.is_set():
                    self._first_error = exc
                    self._first_attempt_done.set()
                    return
                _log.warning("%s: cannot reach the broker at %s (%s); retrying in %.1fs",
                             self.name, unreachable, exc, backoff)
                self._wait_offline(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.1
            failed_in_a_row = 0
            self._first_attempt_done.set()
            try:
                self._serve()
            except _RECOVERABLE as exc:
                _log.warning("%s: connection to the broker lost: %r", self.name, exc)
                self._disconnect(exc)
                continue
            except BaseException as exc:  # a bug: say so loudly, then keep the owner informed
                _log.exception("%s: I/O thread failed", self.name)
                self._disconnect(exc)
                raise
        self._shutdown()

    def _next_address(self) -> BrokerAddress:
        """The node after the current one, in the order the URL gives (round robin)."""
        return self.addresses[(self.addresses.index(self.address) + 1) % len(self.addresses)]

    def _wait_offline(self, seconds: float) -> None:
        """Between reconnect attempts: keep timers (call deadlines) and calls running."""
        assert self._wakeup is not None
        until = _monotonic() + seconds
        while not self._stopping.is_set():
            self._run_timers(offline=True)
            self._drain_offline()
            now = _monotonic()
            if now >= until:
                return
            timeout = until - now
            if self._timers:
                timeout = max(0.0, min(timeout, self._timers[0][0] - now))
            select.select([self._wakeup.fileno()], [], [], timeout)
            self._wakeup.clear()

    def _connect(self) -> None:
        address = self.address
        conn = amqp.Connection(
            host=f"{address.host}:{address.port}",
            userid=address.userid,
            password=address.password,
            virtual_host=address.virtual_host,
            ssl=ssl_options(address),  # reads the certificate files again on each connect
            login_method=login_method(address),
            heartbeat=self.heartbeat,
            connect_timeout=self.connect_timeout,
            # A peer that stops reading (blackholed, frozen) must fail our sendall, not block
            # the I/O thread forever: heartbeats cannot be checked while it is stuck.
            write_timeout=max(10.0, 2 * self.heartbeat),
            client_properties={"connection_name": self.name, "product": "amqprpc"},
            on_blocked=self._on_blocked,
            on_unblocked=self._on_unblocked,
        )
        self._conn = conn
        try:
            conn.connect()
        except ssl.SSLError as exc:  # an OSError: retried with backoff like any unreachable node
            raise handshake_failed(address, exc) from exc
        if self._generation:  # a reconnect: the broker may still hold our last connection's queues
            self._claim_exclusive_queues(conn)
        channel = amqp.Channel(conn, auto_decode=False)
        channel.open()
        if self.confirms:
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_confirm_ack)
            channel.events["basic_nack"].add(self._on_confirm_nack)
        channel.events["basic_return"].add(self._on_basic_return)
        self._channel = channel
        self._generation += 1
        self._publish_seq = 0
        self._nack_streaks.clear()
        self._consumers.clear()
        self._outstanding.clear()
        self._declare_topology(channel)
        self._connected.set()
        for callback in self._on_connect:
            try:
                callback()
            except _RECOVERABLE:
                raise
            except Exception:
                _log.exception("%s: an on_connect callback failed", self.name)
        if self._replace_because is not None:  # a callback's declare was refused
            raise self._replace_because
        _log.info("%s: connected to %s", self.name, address)

    def _claim_exclusive_queues(self, conn: amqp.Connection) -> None:
        """Declare the remembered exclusive queues first, each on a channel of its own.

        After a link failure the broker may not yet know that our last connection is dead (a
        heartbeat away, or for ever while the node that holds it is cut off by a partition):
        it refuses the same exclusive queue with RESOURCE_LOCKED, and replaying the topology
        would fail on every reconnect until it notices, leaving a worker that serves nothing.
        The old queue is lost to us anyway (it was our dead connection's), so a locked one is
        taken under a fresh name and its bindings and consumers move with it: owners route to
        such queues by binding, never by name.
        """
        with self._topology_lock:
            queues = [step for step in self._topology if isinstance(step, Queue) and step.exclusive]
        for queue in queues:
            channel = conn.channel()
            try:
                _declare(channel, queue)
            except amqp.exceptions.ResourceLocked:
                fresh = dataclasses.replace(queue, name=_fresh_queue_name(queue.name, self._generation))
                _log.warning("%s: the broker still holds exclusive queue %r for our previous "
                             "connection; using %r instead", self.name, queue.name, fresh.name)
                self._rename_queue(queue, fresh)
                channel = conn.channel()
                _declare(channel, fresh)
            finally:
                if channel.is_open:
                    channel.close()

    def _rename_queue(self, old: Queue, new: Queue) -> None:
        """Point the remembered queue, its bindings and its consumers at ``new``."""
        with self._topology_lock:
            renamed: list[Entity | Consumer] = []
            for step in self._topology:
                if step is old:
                    step = new
                elif isinstance(step, Binding) and step.queue == old.name:
                    step = dataclasses.replace(step, queue=new.name)
                elif isinstance(step, Consumer) and step.queue == old.name:
                    step.queue = new.name
                renamed.append(step)
            self._topology = renamed

    def _declare_topology(self, channel: amqp.Channel) -> None:
        """Declare and consume what owners asked for, in their order; then the one-offs."""
        with self._topology_lock:
            steps = list(self._topology)
        once, self._once = self._once, []
        for step in steps:
            if isinstance(step, Consumer):
                try:
                    self._consume_now(step)
                except BrokerError as exc:
                    _log.error("%s: %s", self.name, exc)
                    raise self._replace_because or exc from None  # replace this connection
            else:
                try:
                    _declare(channel, step)
                except amqp.exceptions.ChannelError as exc:
                    _log.error("%s: the broker refused to declare %s: %s%s", self.name, step, exc,
                               INEQUIVALENT_HINT if "inequivalent arg" in str(exc) else "")
                    self._forget(step)
                    raise
        for entity in once:
            _declare(channel, entity)

    def _serve(self) -> None:
        conn = self._conn
        assert conn is not None and self._wakeup is not None
        sock = conn.transport.sock
        wake_fd = self._wakeup.fileno()
        tick = self.heartbeat / 4 if self.heartbeat else 1.0
        while True:
            self._run_timers()
            with Cork(conn.transport) as cork:
                self._drain_online(cork)
                self._flush_acks()
            if self._replace_because is not None:
                self._replace()
            if self._stopping.is_set():
                return
            timeout = tick
            if self._timers:
                timeout = max(0.0, min(timeout, self._timers[0][0] - _monotonic()))
            if has_buffered_input(conn):
                timeout = 0.0
            self._socket_lock.release()  # other threads may publish while we sleep
            try:
                readable, _, _ = select.select([sock, wake_fd], [], [], timeout)
            finally:
                self._socket_lock.acquire()
            if wake_fd in readable:
                self._wakeup.clear()
            if self._replace_because is None and (sock in readable or has_buffered_input(conn)):
                self._drain_socket(conn)
            if self._replace_because is not None:
                self._replace()
            conn.heartbeat_tick()

    def _replace(self) -> None:
        assert self._replace_because is not None
        if self._stream_intact:  # replaced for a nack: acks decided meanwhile go first
            self._flush_acks()
        raise self._replace_because

    def _drain_socket(self, conn: amqp.Connection) -> None:
        if isinstance(conn.transport, TCPTransport):
            read_frames(conn, self._recv_view)
            return
        for _ in range(_MAX_FRAMES_PER_WAKE):  # TLS: let py-amqp read frame by frame
            try:
                conn.drain_events(timeout=0)
            except TimeoutError:
                return

    # ---------------------------------------------------------------- the outbox's one rule

    def _drain_online(self, cork: Cork | None = None) -> None:
        """Connected: every operation runs, in order."""
        while True:
            op = self._outbox.take()
            if op is None:
                return
            if isinstance(op, Publish):
                self._publish_now(op.message, op.on_confirm)
            elif isinstance(op, Ack):
                self._mark_finished(op.delivery)
            elif isinstance(op, Reject):
                self._reject_now(op.delivery, op.requeue)
            elif cork is not None:  # it may wait for a reply: its frames must go out first
                cork.flush()
                with cork.paused():
                    self._run_call(op.fn)
            else:
                self._run_call(op.fn)

    def _drain_offline(self) -> None:
        """Not connected: publishes (and calls that need a channel) wait for the next
        connection; acks and rejects of the dead one are dropped (the broker requeued them)."""
        kept: list[Op] = []
        for op in self._outbox.take_all():
            if isinstance(op, Publish):
                kept.append(op)
            elif isinstance(op, Call):
                try:
                    op.fn()
                except ConnectionLost:
                    kept.append(op)
                except Exception:
                    _log.exception("%s: a call scheduled on the I/O thread failed", self.name)
        self._outbox.keep(kept)

    def _run_call(self, fn: Callable[[], None]) -> None:
        """Run a scheduled call; a broken connection propagates (reconnect), a bug is logged."""
        try:
            fn()
        except _RECOVERABLE:
            raise
        except Exception:
            _log.exception("%s: a call scheduled on the I/O thread failed", self.name)

    def _mark_finished(self, delivery: Delivery) -> None:
        if delivery.generation == self._generation and delivery.tag in self._outstanding:
            self._outstanding[delivery.tag] = True

    def _reject_now(self, delivery: Delivery, requeue: bool) -> None:
        if (delivery.generation == self._generation and delivery.tag in self._outstanding
                and self._channel is not None):
            del self._outstanding[delivery.tag]
            self._channel.basic_reject(delivery.tag, requeue=requeue)

    def _flush_acks(self) -> None:
        """One multiple-ack for the finished prefix; single acks for finished stragglers."""
        outstanding = self._outstanding
        if not outstanding or self._channel is None:
            return
        channel = self._channel
        last = 0
        for tag, finished in outstanding.items():
            if not finished:
                break
            last = tag
        if last:
            while outstanding:
                tag = next(iter(outstanding))
                if tag > last:
                    break
                del outstanding[tag]
            channel.basic_ack(last, multiple=True)
        stragglers = [tag for tag, finished in outstanding.items() if finished]
        for tag in stragglers:
            del outstanding[tag]
            channel.basic_ack(tag, multiple=False)

    def _publish_now(self, message: Outgoing, on_confirm: ConfirmCallback | None) -> None:
        channel = self._channel
        if channel is None:  # not connected: keep it for after the reconnect
            self._outbox.put(Publish(message, on_confirm))
            return
        msg = amqp.Message(message.body, **message.properties)
        channel.send_method(
            spec.Basic.Publish,
            "Bssbb",
            (0, message.exchange, message.routing_key, message.mandatory, False),
            msg,
        )
        if self.confirms:
            self._publish_seq += 1
            if on_confirm is not None:
                self._unconfirmed[self._publish_seq] = (on_confirm, message.routing_key)
        elif on_confirm is not None:
            on_confirm(None)

    def _run_timers(self, offline: bool = False) -> None:
        now = _monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            if not offline:
                self._run_call(fn)
                continue
            try:
                fn()
            except Exception:  # no connection to lose: whatever it is, the thread carries on
                _log.exception("%s: a timer on the I/O thread failed", self.name)

    # ---------------------------------------------------------------- py-amqp callbacks

    def _delivery(self, message: amqp.Message, no_ack: bool) -> Delivery:
        info = message.delivery_info
        return Delivery(
            tag=info["delivery_tag"],
            generation=self._generation,
            body=message.body,
            properties=message.properties,
            exchange=info["exchange"],
            routing_key=info["routing_key"],
            redelivered=info["redelivered"],
            no_ack=no_ack,
        )

    def _deliver(self, message: amqp.Message) -> None:
        info = message.delivery_info
        callback, no_ack = self._consumers.get(info["consumer_tag"], (None, True))
        tag = info["delivery_tag"]
        if callback is None:  # cancelled meanwhile: give it back to the queue
            if not no_ack and self._channel is not None:
                self._channel.basic_reject(tag, requeue=True)
            return
        if not no_ack:
            self._outstanding[tag] = False
        callback(self._delivery(message, no_ack))

    def _on_confirm_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, None)

    def _on_confirm_nack(self, delivery_tag: int, multiple: bool) -> None:
        """Fail the nacked publishes; replace the connection once the channel looks broken.

        RabbitMQ 3.10 nacks every later publish of a channel to a quorum queue whose first
        publish from that channel came during the queue's leader election, for the
        channel's lifetime: a failover that reconnects at once lands there (tests/cluster).
        A new channel is fine. A full queue with ``x-overflow: reject-publish``
        (``max_queue_length``) nacks too, but only what it has no room for: it accepts again
        as its consumers take messages. A nack carries no queue, so streaks are kept per
        routing key: a nack replaces the channel only when that key's publishes have been
        nacked for at least ``_NACK_STREAK`` and ``_NACK_STREAK_COUNT`` times, with none acked
        in between (at 3x a bounded queue's capacity, 20 nacks in a row happen with a
        chance of 0.03 %), and at most every ``_NACK_REPLACE_INTERVAL``: a broken channel,
        not a busy queue (docs/resilience.md).
        """
        nacked: dict[str, int] = {}  # routing key -> publishes this nack refused
        self._settle(delivery_tag, multiple, BrokerError("the broker refused (nacked) the message"),
                     nacked)
        now = _monotonic()
        streaks = self._nack_streaks
        if len(streaks) > _MAX_NACK_STREAKS:
            streaks.clear()  # bounded, whatever routing keys a publisher invents
        for routing_key, count in (nacked or {"": 1}).items():  # "": publishes nobody awaited
            streak = streaks.setdefault(routing_key, [now, 0.0])
            streak[1] += count
            since = streak[0]
            if (now - since >= _NACK_STREAK and streak[1] >= _NACK_STREAK_COUNT
                    and now - self._replaced_for_nack_at >= _NACK_REPLACE_INTERVAL):
                self._replaced_for_nack_at = now
                self._stream_intact = self._replace_because is None
                self._replace_because = amqp.exceptions.RecoverableConnectionError(
                    f"{self.name}: the broker nacked all {streak[1]:.0f} publishes to "
                    f"{routing_key!r} in {now - since:.1f}s; replacing the channel")

    def _settle(self, seq: int, multiple: bool, error: BaseException | None,
                nacked: dict[str, int] | None = None) -> None:
        """Run the callbacks of publish ``seq`` (and before it, if ``multiple``); an ack ends
        its routing key's nack streak, a nack adds the key to ``nacked``."""
        unconfirmed = self._unconfirmed
        if not multiple:
            entry = unconfirmed.pop(seq, None)
            if entry is not None:
                self._settle_one(entry, error, nacked)
            return
        done = [key for key in unconfirmed if key <= seq]  # keys are in publish order
        for key in done:
            self._settle_one(unconfirmed.pop(key), error, nacked)

    def _settle_one(self, entry: tuple[ConfirmCallback, str], error: BaseException | None,
                    nacked: dict[str, int] | None) -> None:
        callback, routing_key = entry
        if nacked is not None:
            nacked[routing_key] = nacked.get(routing_key, 0) + 1
        elif self._nack_streaks:
            self._nack_streaks.pop(routing_key, None)
        callback(error)

    def _on_basic_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        returned = Outgoing(exchange, routing_key, message.body, dict(message.properties))
        reply_text = getattr(exc, "reply_text", str(exc))
        for callback in self._on_return:
            callback(returned, reply_text)

    def _on_blocked(self, reason: str) -> None:
        self._blocked_reason = reason or "blocked"
        _log.warning("%s: the broker blocked this connection: %s", self.name, reason)

    def _on_unblocked(self) -> None:
        self._blocked_reason = None
        _log.info("%s: the broker unblocked this connection", self.name)

    # ---------------------------------------------------------------- teardown

    def _disconnect(self, exc: BaseException, notify: bool = True) -> None:
        self._connected.clear()
        self._replace_because = None
        self._stream_intact = False
        self._channel = None
        self._admin_channel = None
        self._outstanding.clear()
        self._consumers.clear()
        self._blocked_reason = None
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.collect()
            except Exception:  # the socket is already broken; nothing left to release
                _log.debug("%s: error while discarding a broken connection", self.name, exc_info=True)
        lost = ConnectionLost(f"{self.name}: connection to the broker lost: {exc}")
        self._fail_unconfirmed(lost)
        if self._generation and notify:
            for callback in self._on_lost:
                callback(lost)

    def _fail_unconfirmed(self, error: BaseException) -> None:
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        for callback, _ in unconfirmed.values():
            callback(error)

    def _shutdown(self) -> None:
        """Stop requested: flush, give outstanding confirms a moment, close cleanly."""
        conn = self._conn
        if conn is not None and self._channel is not None:
            try:
                self._drain_online()
                self._flush_acks()
                deadline = _monotonic() + min(2.0, self.connect_timeout)
                while self._unconfirmed and _monotonic() < deadline:
                    self._drain_socket(conn)
                    select.select([conn.transport.sock], [], [], 0.05)
                    self._drain_online()
                    self._flush_acks()
                undone = len(self._unconfirmed) + len(self._outstanding)
                conn.close()  # may wait for ever on a silent peer: stop() stops waiting
                self.left_undone = undone  # close-ok: the broker has every frame sent before
            except _RECOVERABLE as exc:
                _log.debug("%s: error while closing: %r", self.name, exc)
                try:
                    conn.collect()  # release the socket all the same
                except Exception:
                    _log.debug("%s: error while discarding the connection", self.name, exc_info=True)
        self._connected.clear()
        self._channel = None
        self._admin_channel = None
        self._conn = None
        stopped = ConnectionLost(f"{self.name}: connection closed")
        never_sent = 0
        if conn is None:  # stopped while disconnected: nothing to lose in a close
            self.left_undone = len(self._unconfirmed)
        self._fail_unconfirmed(stopped)
        for op in self._outbox.take_all():  # publishes that never went out: tell their owners
            if isinstance(op, Publish):
                never_sent += 1
                if op.on_confirm is not None:
                    op.on_confirm(stopped)
        if self.left_undone is not None:
            self.left_undone += never_sent
        for callback in self._on_lost:
            callback(stopped)
        self._first_attempt_done.set()


def can_log_in(address: BrokerAddress, vhost: str, timeout: float = 3.0) -> bool:
    """Whether ``address``'s user can open ``vhost`` over plain AMQP: a one-shot check,
    no transport (``amqprpc dev`` asks it before making a vhost again)."""
    if address.tls is not None:
        return False
    connection = amqp.Connection(host=f"[{address.host}]:{address.port}" if ":" in address.host
                                 else f"{address.host}:{address.port}", userid=address.userid,
                                 password=address.password, virtual_host=vhost,
                                 connect_timeout=timeout)
    try:
        connection.connect()
    except Exception:  # refused, no such vhost, no rights: in every case, not usable
        return False
    try:
        connection.close()
    except Exception:
        pass
    return True


def _queue_info_detached(address: BrokerAddress, queue: str, timeout: float,
                         name: str) -> QueueInfo | None:
    """``queue_info`` on a short connection of its own, from the calling thread: a broker
    that stalls holds only this thread (bounded by ``timeout``), never a transport's."""
    conn = amqp.Connection(
        host=f"{address.host}:{address.port}", userid=address.userid,
        password=address.password, virtual_host=address.virtual_host,
        ssl=ssl_options(address), login_method=login_method(address), heartbeat=0,
        connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout,
        client_properties={"connection_name": f"{name}-admin", "product": "amqprpc"},
    )
    try:
        conn.connect()
        _, messages, consumers = conn.channel().queue_declare(queue, passive=True)
        return QueueInfo(queue, int(messages), int(consumers))
    except amqp.exceptions.NotFound:
        return None
    except _RECOVERABLE as exc:
        raise ConnectionLost(f"{name}: could not ask about queue {queue!r}: {exc}") from exc
    finally:
        try:
            conn.close()
        except _RECOVERABLE:
            conn.collect()


def _on_event_loop() -> bool:
    """Is this thread running an asyncio loop? Without asyncio loaded, none can be (and a
    worker whose handlers are all plain never loads it)."""
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and asyncio._get_running_loop() is not None


def has_buffered_input(conn: amqp.Connection) -> bool:
    """Bytes py-amqp decrypted or buffered that ``select()`` cannot see (TLS only)."""
    transport = conn.transport
    if isinstance(transport, TCPTransport):
        return False  # a buffered tail is a partial frame: its rest is still in the kernel
    if transport._read_buffer:
        return True
    pending = getattr(transport.sock, "pending", None)  # TLS keeps decrypted bytes
    return bool(pending and pending())


def _fresh_queue_name(name: str, generation: int) -> str:
    """``name`` with a reconnect suffix (``.re<generation>``), replacing an earlier one."""
    root, dot, suffix = name.rpartition(".re")
    if dot and suffix.isdigit():
        name = root
    return f"{name}.re{generation}"


def _declare(channel: amqp.Channel, entity: Entity) -> None:
    """One entity, declared as given (I/O thread; waits for the broker's answer)."""
    if isinstance(entity, Exchange):
        channel.exchange_declare(entity.name, entity.type, durable=entity.durable,
                                 auto_delete=entity.auto_delete)
    elif isinstance(entity, Queue):
        channel.queue_declare(entity.name, durable=entity.durable, exclusive=entity.exclusive,
                              auto_delete=entity.auto_delete,
                              arguments=dict(entity.arguments) if entity.arguments else None)
    elif isinstance(entity, Binding):
        channel.queue_bind(entity.queue, entity.exchange, entity.routing_key)
    else:  # pragma: no cover - the type says it cannot happen
        raise TypeError(f"not a topology entity: {entity!r}")
