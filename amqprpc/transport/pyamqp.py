"""The one module that talks AMQP: a connection and the I/O thread that alone touches it.

Why one thread: py-amqp is not thread-safe (reads, channel state and acks are unguarded,
and ``drain_events`` flips the shared socket's timeout). So every other thread talks to
the I/O thread through an outbox plus a wake-up fd, and the I/O thread:

* ``select()``s on the socket and the wake fd (never polls), with a timeout of a quarter
  heartbeat so heartbeats are sent and checked however long handlers run;
* drains the outbox: publishes, acks, rejects and calls scheduled by other threads;
* drains every complete frame the socket holds, dispatching deliveries to consumers;
* acks in batches: one ``basic_ack(multiple=True)`` for the contiguous prefix of finished
  deliveries, single acks for finished ones behind a still-running one;
* reconnects with capped exponential backoff, re-running every ``on_connect`` callback
  (declare, consume) on the new channel. Deliveries of a dead connection are never acked:
  the broker has already requeued them.

The I/O thread holds ``_socket_lock`` except while it sleeps in ``select()``. A thread
that publishes while it sleeps takes the lock and writes the publish itself, when nothing
it queued earlier is still waiting: that saves the wake-up and a thread hand-off on each
side of a call, most of what sequential calls cost beyond the raw protocol. A busy I/O
thread keeps the lock, so under load publishes queue and go out in batches as before.

Publishes use ``send_method`` directly: py-amqp's ``basic_publish`` first drains incoming
frames when ``connection.blocked`` is negotiated, which costs ~30% throughput and
re-enters consumer callbacks. Publisher confirms are asynchronous: a publish may carry a
callback that runs when the broker confirms (or the connection dies first).

Errors from amqp/socket are translated once, here, into ``BrokerError`` subclasses.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import select
import ssl
import threading
from collections.abc import Callable
from queue import Empty, SimpleQueue
from time import monotonic as _monotonic
from typing import Any

import amqp
from amqp import spec
from amqp.transport import TCPTransport

from ..exceptions import BrokerError, BrokerUnreachable, ConnectionLost
from .address import BrokerAddress, parse_broker_urls
from .base import (
    ConfirmCallback,
    Delivery,
    DeliveryCallback,
    LostCallback,
    Outgoing,
    ReturnCallback,
)
from .framing import RECV_SIZE, Cork, has_buffered_input, read_frames
from .tls import handshake_failed, login_method, ssl_options
from .wakeup import Wakeup

_log = logging.getLogger(__name__)

# Errors that mean "this connection is gone; reconnect". Everything else is a bug.
RECOVERABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # socket errors, ConnectionResetError, socket.timeout on connect
    amqp.exceptions.AMQPError,  # channel/connection closed by the broker, heartbeat missed
    EOFError,
)

ConnectCallback = Callable[["amqp.Channel"], None]

_MAX_FRAMES_PER_WAKE = 1000
_NACK_REPLACE_INTERVAL = 5.0  # seconds: nacks for other reasons (a full queue) must not churn


class BrokerConnection:
    """One AMQP connection with one channel, owned by the I/O thread this object starts.

    Thread-safe: ``start``, ``stop``, ``publish``, ``ack``, ``reject``, ``call_soon``,
    ``call_later``. I/O thread only (from callbacks): ``channel``, ``consume``, ``cancel``.
    """

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
        self.blocked_reason: str | None = None
        self.generation = 0
        # After stop(): publishes the broker had not confirmed plus deliveries not acked when
        # the connection closed (they will be redelivered). None when the close was not
        # answered (a silent peer): then not even the acks sent before it are known to
        # have arrived.
        self.left_undone: int | None = 0

        self._outbox: SimpleQueue[tuple[Any, ...]] = SimpleQueue()
        self._socket_lock = threading.Lock()  # the I/O thread's, except while in select()
        self._recv_view = memoryview(bytearray(RECV_SIZE))  # I/O thread only
        # Why this connection must be replaced before anything else goes out on it: a direct
        # publish broke the stream, or the broker nacked a publish (see _on_confirm_nack).
        self._replace_because: BaseException | None = None
        self._stream_intact = False  # with _replace_because: the socket still carries frames
        self._replaced_for_nack_at = -_NACK_REPLACE_INTERVAL
        self._wakeup: Wakeup | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._first_attempt_done = threading.Event()
        self._first_error: BaseException | None = None
        self._fail_fast = True
        self._conn: amqp.Connection | None = None
        self._channel: amqp.Channel | None = None
        self._on_connect: list[ConnectCallback] = []
        self._on_lost: list[LostCallback] = []
        self._on_return: list[ReturnCallback] = []
        self._consumers: dict[str, tuple[DeliveryCallback, bool]] = {}
        self._unconfirmed: dict[int, ConfirmCallback | None] = {}
        self._publish_seq = 0
        self._outstanding: dict[int, bool] = {}  # tag -> finished, in delivery order
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()

    # ---------------------------------------------------------------- lifecycle

    def on_connect(self, callback: ConnectCallback) -> None:
        """Run ``callback(channel)`` on the I/O thread after every (re)connect."""
        self._on_connect.append(callback)

    def on_lost(self, callback: LostCallback) -> None:
        """Run ``callback(error)`` on the I/O thread when a connection breaks."""
        self._on_lost.append(callback)

    def on_return(self, callback: ReturnCallback) -> None:
        """Run ``callback(message, reply_text)`` when the broker returns a mandatory publish."""
        self._on_return.append(callback)

    def start(self, wait: bool = True) -> None:
        """Start the I/O thread.

        With ``wait``, block until the first connect and raise BrokerUnreachable if it
        fails; without, return at once and keep retrying until the broker answers.
        """
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._fail_fast = wait
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

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    def in_io_thread(self) -> bool:
        return self._thread is threading.current_thread()

    # ---------------------------------------------------------------- any thread

    def publish(self, message: Outgoing, on_confirm: ConfirmCallback | None = None) -> None:
        """Send or queue a publish; ``on_confirm(None)`` on broker confirm, ``on_confirm(error)`` if not."""
        if self.in_io_thread():
            if self._channel is not None:
                self._publish_now(message, on_confirm)
                return
        elif asyncio._get_running_loop() is None and self._publish_direct(message, on_confirm):
            return  # (never on an event loop: a broker that stops reading would stall it)
        self._outbox.put(("publish", message, on_confirm))
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
            if (conn is None or self._channel is None or self.blocked_reason is not None
                    or self._replace_because is not None or self._stopping.is_set()
                    or not self._outbox.empty()):
                return False
            confirm_after_write = None if self.confirms else on_confirm
            try:
                with Cork(conn.transport):
                    self._publish_now(message, on_confirm if self.confirms else None)
            except RECOVERABLE_ERRORS as exc:
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
        if self.in_io_thread():
            self._mark_finished(delivery)
        else:
            self._outbox.put(("ack", delivery))
            self._wake()

    def reject(self, delivery: Delivery, requeue: bool) -> None:
        self._outbox.put(("reject", delivery, requeue))
        self._wake()

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the I/O thread (at once if called from it)."""
        if self.in_io_thread():
            fn()
        else:
            self._outbox.put(("call", fn))
            self._wake()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the I/O thread after ``delay`` seconds (a deadline, a retry)."""
        when = _monotonic() + delay
        self.call_soon(lambda: self._schedule_at(when, fn))

    def _schedule_at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._timer_ids), fn))

    # ---------------------------------------------------------------- I/O thread only

    @property
    def channel(self) -> amqp.Channel:
        if self._channel is None:
            raise ConnectionLost(f"{self.name}: not connected to the broker")
        return self._channel

    def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> str:
        """Start consuming ``queue`` on this connection's channel; returns the consumer tag."""
        tag: str = self.channel.basic_consume(
            queue=queue,
            no_ack=no_ack,
            exclusive=exclusive,
            callback=self._deliver,
            arguments=arguments,
            on_cancel=lambda cancelled: self._on_consumer_cancelled(queue, cancelled),
        )
        self._consumers[tag] = (callback, no_ack)
        return tag

    def _on_consumer_cancelled(self, queue: str, consumer_tag: str) -> None:
        """The broker cancelled a consumer (B6: its queue was deleted): replace the connection.

        A worker that idled on, consuming nothing, would be a silent outage. Reconnecting
        re-runs every owner's declarations, so the queue, its bindings and the consumer come
        back; deliveries in flight on this connection are redelivered (at-least-once).
        """
        self._consumers.pop(consumer_tag, None)
        raise amqp.exceptions.RecoverableConnectionError(
            f"{self.name}: the broker cancelled the consumer of queue {queue!r} (was it "
            "deleted?); reconnecting to declare it again")

    def cancel_and_wait(self, consumer_tag: str | None, timeout: float = 5.0) -> None:
        """From any thread: stop a consumer, waiting (at most ``timeout``) for the broker.

        Deliveries already received still run and are acked; a connection that is gone
        has no consumer left to cancel.
        """
        if consumer_tag is None or not self.is_connected:
            return
        done = threading.Event()

        def cancel() -> None:
            try:
                self.cancel(consumer_tag)
            except (*RECOVERABLE_ERRORS, BrokerError):
                _log.debug("%s: cancel of %s failed (connection gone)", self.name, consumer_tag,
                           exc_info=True)
            finally:
                done.set()

        self.call_soon(cancel)
        done.wait(timeout)

    def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; deliveries already received still run and are acked."""
        if self._channel is not None and consumer_tag in self._consumers:
            self._channel.basic_cancel(consumer_tag)
        self._consumers.pop(consumer_tag, None)

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
            generation = self.generation
            try:
                self._connect()
            except RECOVERABLE_ERRORS as exc:
                # Owners heard of the loss when the last connection broke; a failed attempt
                # is news only if it got as far as a new channel.
                self._disconnect(exc, notify=self.generation != generation)
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
            except RECOVERABLE_ERRORS as exc:
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
        """Between reconnect attempts: keep timers (call deadlines) and calls running.

        Publishes wait in the outbox for the next connection; acks and rejects of the
        dead one are dropped (the broker has requeued those deliveries).
        """
        assert self._wakeup is not None
        until = _monotonic() + seconds
        while not self._stopping.is_set():
            self._run_timers(offline=True)
            held: list[tuple[Any, ...]] = []
            while True:
                try:
                    op = self._outbox.get_nowait()
                except Empty:
                    break
                if op[0] == "publish":
                    held.append(op)
                elif op[0] == "call":
                    try:
                        op[1]()
                    except ConnectionLost:  # it needs a channel: run it on the next connection
                        held.append(op)
                    except Exception:
                        _log.exception("%s: a call scheduled on the I/O thread failed", self.name)
            for op in held:
                self._outbox.put(op)
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
        channel = amqp.Channel(conn, auto_decode=False)
        channel.open()
        if self.confirms:
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_confirm_ack)
            channel.events["basic_nack"].add(self._on_confirm_nack)
        channel.events["basic_return"].add(self._on_basic_return)
        self._channel = channel
        self.generation += 1
        self._publish_seq = 0
        self._consumers.clear()
        self._outstanding.clear()
        for callback in self._on_connect:
            callback(channel)
        self._connected.set()
        _log.info("%s: connected to %s", self.name, address)

    def _serve(self) -> None:
        conn = self._conn
        assert conn is not None and self._wakeup is not None
        sock = conn.transport.sock
        wake_fd = self._wakeup.fileno()
        tick = self.heartbeat / 4 if self.heartbeat else 1.0
        while True:
            self._run_timers()
            with Cork(conn.transport) as cork:
                self._drain_outbox(cork)
                self._flush_acks()
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
                if self._stream_intact:  # replaced for a nack: acks decided meanwhile go first
                    self._flush_acks()
                raise self._replace_because
            conn.heartbeat_tick()

    def _drain_socket(self, conn: amqp.Connection) -> None:
        if isinstance(conn.transport, TCPTransport):
            read_frames(conn, self._recv_view)
            return
        for _ in range(_MAX_FRAMES_PER_WAKE):  # TLS: let py-amqp read frame by frame
            try:
                conn.drain_events(timeout=0)
            except TimeoutError:
                return

    def _drain_outbox(self, cork: Cork | None = None) -> None:
        while True:
            try:
                op = self._outbox.get_nowait()
            except Empty:
                return
            kind = op[0]
            if kind == "publish":
                self._publish_now(op[1], op[2])
            elif kind == "ack":
                self._mark_finished(op[1])
            elif kind == "reject":
                delivery, requeue = op[1], op[2]
                if delivery.generation == self.generation and delivery.tag in self._outstanding:
                    del self._outstanding[delivery.tag]
                    self.channel.basic_reject(delivery.tag, requeue=requeue)
            elif cork is not None:  # it may wait for a reply: its frames must go out first
                cork.flush()
                with cork.paused():
                    self._run_call(op[1])
            else:
                self._run_call(op[1])

    def _run_call(self, fn: Callable[[], None]) -> None:
        """Run a scheduled call; a broken connection propagates (reconnect), a bug is logged."""
        try:
            fn()
        except RECOVERABLE_ERRORS:
            raise
        except Exception:
            _log.exception("%s: a call scheduled on the I/O thread failed", self.name)

    def _mark_finished(self, delivery: Delivery) -> None:
        if delivery.generation == self.generation and delivery.tag in self._outstanding:
            self._outstanding[delivery.tag] = True

    def _flush_acks(self) -> None:
        """One multiple-ack for the finished prefix; single acks for finished stragglers."""
        outstanding = self._outstanding
        if not outstanding:
            return
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
            self.channel.basic_ack(last, multiple=True)
        stragglers = [tag for tag, finished in outstanding.items() if finished]
        for tag in stragglers:
            del outstanding[tag]
            self.channel.basic_ack(tag, multiple=False)

    def _publish_now(self, message: Outgoing, on_confirm: ConfirmCallback | None) -> None:
        channel = self._channel
        if channel is None:  # not connected: keep it for after the reconnect
            self._outbox.put(("publish", message, on_confirm))
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
                self._unconfirmed[self._publish_seq] = on_confirm
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

    def _deliver(self, message: amqp.Message) -> None:
        info = message.delivery_info
        callback, no_ack = self._consumers.get(info["consumer_tag"], (None, True))
        tag = info["delivery_tag"]
        delivery = Delivery(
            tag=tag,
            generation=self.generation,
            body=message.body,
            properties=message.properties,
            exchange=info["exchange"],
            routing_key=info["routing_key"],
            redelivered=info["redelivered"],
            no_ack=no_ack,
        )
        if callback is None:  # cancelled meanwhile: give it back to the queue
            if not no_ack:
                self.channel.basic_reject(tag, requeue=True)
            return
        if not no_ack:
            self._outstanding[tag] = False
        callback(delivery)

    def _on_confirm_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, None)

    def _on_confirm_nack(self, delivery_tag: int, multiple: bool) -> None:
        """Fail the nacked publishes, then replace the connection (at most every few seconds).

        RabbitMQ 3.10 nacks every later publish of a channel whose first publish to a quorum
        queue came during that queue's leader election, for the channel's lifetime: a
        failover that reconnects at once lands there (tests/cluster). A new channel is fine.
        """
        self._settle(delivery_tag, multiple, BrokerError("the broker refused (nacked) the message"))
        now = _monotonic()
        if now - self._replaced_for_nack_at >= _NACK_REPLACE_INTERVAL:
            self._replaced_for_nack_at = now
            self._stream_intact = self._replace_because is None
            self._replace_because = amqp.exceptions.RecoverableConnectionError(
                f"{self.name}: the broker nacked a publish; replacing the channel")

    def _settle(self, seq: int, multiple: bool, error: BaseException | None) -> None:
        unconfirmed = self._unconfirmed
        if not multiple:
            callback = unconfirmed.pop(seq, None)
            if callback is not None:
                callback(error)
            return
        done = [key for key in unconfirmed if key <= seq]  # keys are in publish order
        for key in done:
            callback = unconfirmed.pop(key)
            if callback is not None:
                callback(error)

    def _on_basic_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        returned = Outgoing(exchange, routing_key, message.body, dict(message.properties))
        reply_text = getattr(exc, "reply_text", str(exc))
        for callback in self._on_return:
            callback(returned, reply_text)

    def _on_blocked(self, reason: str) -> None:
        self.blocked_reason = reason or "blocked"
        _log.warning("%s: the broker blocked this connection: %s", self.name, reason)

    def _on_unblocked(self) -> None:
        self.blocked_reason = None
        _log.info("%s: the broker unblocked this connection", self.name)

    # ---------------------------------------------------------------- teardown

    def _disconnect(self, exc: BaseException, notify: bool = True) -> None:
        self._connected.clear()
        self._replace_because = None
        self._stream_intact = False
        self._channel = None
        self._outstanding.clear()
        self._consumers.clear()
        self.blocked_reason = None
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.collect()
            except Exception:  # the socket is already broken; nothing left to release
                _log.debug("%s: error while discarding a broken connection", self.name, exc_info=True)
        lost = ConnectionLost(f"{self.name}: connection to the broker lost: {exc}")
        self._fail_unconfirmed(lost)
        if self.generation and notify:
            for callback in self._on_lost:
                callback(lost)

    def _fail_unconfirmed(self, error: BaseException) -> None:
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        for callback in unconfirmed.values():
            if callback is not None:
                callback(error)

    def _shutdown(self) -> None:
        """Stop requested: flush, give outstanding confirms a moment, close cleanly."""
        conn = self._conn
        if conn is not None and self._channel is not None:
            try:
                self._drain_outbox()
                self._flush_acks()
                deadline = _monotonic() + min(2.0, self.connect_timeout)
                while self._unconfirmed and _monotonic() < deadline:
                    self._drain_socket(conn)
                    select.select([conn.transport.sock], [], [], 0.05)
                    self._drain_outbox()
                    self._flush_acks()
                undone = len(self._unconfirmed) + len(self._outstanding)
                conn.close()  # may wait for ever on a silent peer: stop() stops waiting
                self.left_undone = undone  # close-ok: the broker has every frame sent before
            except RECOVERABLE_ERRORS as exc:
                _log.debug("%s: error while closing: %r", self.name, exc)
        self._connected.clear()
        self._channel = None
        self._conn = None
        stopped = ConnectionLost(f"{self.name}: connection closed")
        never_sent = 0
        if conn is None:  # stopped while disconnected: nothing to lose in a close
            self.left_undone = len(self._unconfirmed)
        self._fail_unconfirmed(stopped)
        while True:  # publishes that never went out: tell their owners
            try:
                op = self._outbox.get_nowait()
            except Empty:
                break
            if op[0] == "publish":
                never_sent += 1
                if op[2] is not None:
                    op[2](stopped)
        if self.left_undone is not None:
            self.left_undone += never_sent
        for callback in self._on_lost:
            callback(stopped)
        self._first_attempt_done.set()

