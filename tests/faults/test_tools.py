"""The fault tools themselves: each toxic and each node fault does what fault tests rely on.

Raw py-amqp clients, no amqprpc code: if these fail, the tools are broken, not the framework.
Heartbeats are 2 s so heartbeat-based detection is bounded to a few seconds.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import amqp
import pytest

from .proxy import Direction, FaultProxy
from .rabbit_node import RabbitNode

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

HEARTBEAT = 2
# Errors a py-amqp client raises when its connection breaks (reset, EOF, missed heartbeats,
# socket timeouts are OSErrors too).
BROKEN = (OSError, amqp.ConnectionError)


@contextmanager
def connect(url: str, **kwargs: Any) -> Iterator[amqp.Connection]:
    """A connected py-amqp connection that is released however the test broke it."""
    parts = urlsplit(url)
    options: dict[str, Any] = {"connect_timeout": 5, "read_timeout": 5, "write_timeout": 5}
    options.update(kwargs)
    conn = amqp.Connection(
        host=f"{parts.hostname}:{parts.port}",
        userid=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        virtual_host=unquote(parts.path[1:]) or "/",
        **options,
    )
    try:
        conn.connect()
    except BaseException:
        conn.collect()
        raise
    try:
        yield conn
    finally:
        try:
            conn.close()
        except Exception:
            conn.collect()  # the connection is broken: just drop the socket


def wait_until_broken(conn: amqp.Connection, timeout: float) -> BaseException:
    """Drive ``conn`` (reads plus heartbeats) until it fails and return the error.

    The socket stays open: the caller looks at the proxy before dropping it with
    ``conn.collect()``, because the client's own FIN would close the proxied link."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            try:
                conn.drain_events(timeout=0.2)
            except TimeoutError:
                pass  # nothing to read: not a failure by itself
            conn.heartbeat_tick()
        except BROKEN as exc:
            return exc
    raise AssertionError(f"connection still alive after {timeout} s")


def round_trip(conn: amqp.Connection) -> None:
    """One synchronous broker round trip: declare a throw-away queue."""
    with conn.channel() as channel:
        channel.queue_declare(f"faults-{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True)


def test_proxy_forwards_amqp(rabbit_node: RabbitNode, fault_proxy: FaultProxy) -> None:
    url = fault_proxy.url_for(rabbit_node.url)
    assert url == f"amqp://guest:guest@127.0.0.1:{fault_proxy.port}/"
    with connect(url) as conn:
        fault_proxy.wait_for_connections(1, timeout=5)
        channel = conn.channel()
        queue, _, _ = channel.queue_declare("", exclusive=True)
        channel.basic_publish(amqp.Message(b"x" * 200_000), routing_key=queue)
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = channel.basic_get(queue, no_ack=True)
        assert message is not None and message.body == b"x" * 200_000
    fault_proxy.wait_for_no_connections(timeout=5)
    assert fault_proxy.accepted_count() == 1


def test_latency_delays_each_round_trip(rabbit_node: RabbitNode, fault_proxy: FaultProxy) -> None:
    with connect(fault_proxy.url_for(rabbit_node.url)) as conn:
        fault_proxy.latency(0.25)
        started = time.monotonic()
        round_trip(conn)  # channel.open, queue.declare, channel.close: 3 round trips
        delayed = time.monotonic() - started
        fault_proxy.clear()
        started = time.monotonic()
        round_trip(conn)
        clear = time.monotonic() - started
    assert delayed >= 3 * 2 * 0.25
    assert clear < 0.5


@pytest.mark.parametrize("direction", ["both", "upstream", "downstream"])
def test_blackhole_breaks_heartbeat_connection_in_bounded_time(
    rabbit_node: RabbitNode, fault_proxy: FaultProxy, direction: Direction
) -> None:
    """Each direction is noticed by someone: the client misses the broker's heartbeats
    (``downstream``, ``both``), or the broker misses the client's and closes (``upstream``)."""
    with connect(fault_proxy.url_for(rabbit_node.url), heartbeat=HEARTBEAT) as conn:
        round_trip(conn)
        fault_proxy.blackhole(direction)
        started = time.monotonic()
        error = wait_until_broken(conn, timeout=6 * HEARTBEAT)
        elapsed = time.monotonic() - started
        # The proxied link was still open when the client gave up: only heartbeats can
        # have found the fault. Look before the client drops its socket, whose FIN
        # would close the link.
        link_open = fault_proxy.connection_count() == 1
        conn.collect()  # closing politely would wait for a close-ok that never comes
        assert link_open or direction == "upstream"
    assert 1.5 * HEARTBEAT <= elapsed <= 4 * HEARTBEAT, (elapsed, error)


def test_reset_drops_every_connection(rabbit_node: RabbitNode, fault_proxy: FaultProxy) -> None:
    url = fault_proxy.url_for(rabbit_node.url)
    with connect(url) as first, connect(url) as second:
        fault_proxy.wait_for_connections(2, timeout=5)
        fault_proxy.reset()
        assert fault_proxy.connection_count() == 0
        for conn in (first, second):
            with pytest.raises(ConnectionResetError):
                conn.drain_events(timeout=2)
    with connect(url) as conn:  # the proxy keeps serving new connections
        round_trip(conn)
    assert fault_proxy.accepted_count() == 3


def test_refuse_fails_new_connections_only(rabbit_node: RabbitNode, fault_proxy: FaultProxy) -> None:
    url = fault_proxy.url_for(rabbit_node.url)
    with connect(url) as established:
        fault_proxy.refuse(True)
        started = time.monotonic()
        with pytest.raises(BROKEN), connect(url):
            pass
        assert time.monotonic() - started < 1
        round_trip(established)  # refusing leaves current connections alone
        fault_proxy.refuse(False)
        with connect(url) as conn:
            round_trip(conn)
    assert fault_proxy.accepted_count() == 2


def test_kill_and_restart_keep_confirmed_messages(rabbit_node: RabbitNode) -> None:
    queue = f"faults-durable-{uuid.uuid4().hex[:8]}"
    # confirm_publish makes basic_publish wait for the broker's ack. (A bare
    # channel.confirm_select() does not: py-amqp then returns before the ack.)
    with connect(rabbit_node.url, confirm_publish=True) as conn:
        channel = conn.channel()
        channel.queue_declare(queue, durable=True, auto_delete=False)
        channel.basic_publish(amqp.Message(b"survives", delivery_mode=2), routing_key=queue)
        old_pid = rabbit_node.beam_pid
        rabbit_node.kill()
        assert not rabbit_node.is_running()
        with pytest.raises(BROKEN):
            conn.drain_events(timeout=2)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", rabbit_node.port), timeout=2).close()

    rabbit_node.restart()
    assert rabbit_node.beam_pid != old_pid
    with connect(rabbit_node.url) as conn:
        channel = conn.channel()
        message = channel.basic_get(queue, no_ack=True)
        assert message is not None and message.body == b"survives"
        channel.queue_delete(queue)


def test_frozen_node_accepts_tcp_but_never_answers(rabbit_node: RabbitNode) -> None:
    rabbit_node.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(BROKEN), connect(rabbit_node.url, connect_timeout=1):
            pass
        assert time.monotonic() - started < 3
    finally:
        rabbit_node.thaw()
    with connect(rabbit_node.url) as conn:
        round_trip(conn)
