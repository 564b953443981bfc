"""Serving the app: one process, or ``workers`` processes sharing a port (SO_REUSEPORT).

aiohttp has no deadline for reading a request's headers, so a client that sends them a
byte at a time (slowloris) would hold a connection for ever. ``HeaderDeadline`` wraps
each connection's protocol and closes the connection when a request's headers are not
complete ``header_timeout`` seconds after its first byte (or after the connection opened).
It follows the byte stream just far enough to know where each request's headers end:
to the blank line, then past a ``Content-Length`` body. A chunked request stops the
tracking, and the gateway closes such connections after answering them. Body reads have
their own deadline in the gateway; idle keep-alive connections close after
``keepalive_timeout``.

With ``workers`` > 1 the parent forks that many children, each with its own app, broker
connections and listening socket bound with SO_REUSEPORT (the kernel spreads connections
across them), supervised by amqprpc's own prefork supervisor: SIGTERM/SIGINT to the
parent stops them all, and a child that dies is restarted with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
from typing import Any

from aiohttp import web

from amqprpc import Config
from amqprpc.supervisor import Supervisor

from .app import CONNECTIONS, create_app
from .settings import BridgeSettings

_log = logging.getLogger("http_bridge.server")

_CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*(\d+)[ \t]*$", re.IGNORECASE | re.MULTILINE)
_CHUNKED = re.compile(rb"^transfer-encoding:.*chunked", re.IGNORECASE | re.MULTILINE)
_UPGRADE = re.compile(rb"^upgrade:", re.IGNORECASE | re.MULTILINE)  # a WebSocket leaves HTTP behind


class HeaderTracker:
    """Sans-I/O: where a byte stream of HTTP/1.1 requests is; ``in_headers`` drives the timer."""

    def __init__(self, max_header_bytes: int) -> None:
        self.max_header_bytes = max_header_bytes
        self.in_headers = True  # a new connection must send a request
        self.opaque = False  # a chunked body: stop following the stream
        self._head = b""
        self._body_left = 0

    def feed(self, data: bytes) -> None:
        while data and not self.opaque:
            if self._body_left:
                taken = min(self._body_left, len(data))
                self._body_left -= taken
                data = data[taken:]
                continue
            if not self.in_headers:
                self.in_headers = True  # the first byte of the next request
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > self.max_header_bytes:
                    self.opaque = True  # aiohttp's parser refuses it; nothing left to time
                return
            head, data = self._head[:end], self._head[end + 4:]
            self._head = b""
            self.in_headers = False
            if _CHUNKED.search(head) or _UPGRADE.search(head):
                self.opaque = True
                return
            found = _CONTENT_LENGTH.search(head)
            self._body_left = int(found.group(1)) if found else 0


class HeaderDeadline(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol; see the module docstring."""

    def __init__(self, inner: Any, timeout: float, max_header_bytes: int) -> None:
        self._inner = inner
        self._timeout = timeout
        self._tracker = HeaderTracker(max_header_bytes)
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        was_in_headers = self._tracker.in_headers
        self._tracker.feed(data)
        if self._tracker.opaque or not self._tracker.in_headers:
            self._disarm()
        elif not was_in_headers or self._timer is None:
            self._arm()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _arm(self) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            _log.info("closed a connection whose request headers took over %.1fs", self._timeout)
            self._transport.close()


async def start_server(app: web.Application, settings: BridgeSettings, *,
                       reuse_port: bool = False) -> tuple[web.AppRunner, asyncio.Server]:
    """Start serving ``app``; the caller stops with ``server.close()`` then ``runner.cleanup()``."""
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=settings.keepalive_timeout,
        max_line_size=settings.max_header_size,
        max_field_size=settings.max_header_size,
        handle_signals=False,
        # A client that disconnects cancels its handler: the RPC call it awaits is then
        # cancelled too, and the service told (docs/protocol.md, "Cancellation").
        handler_cancellation=True,
    )
    await runner.setup()
    handler_factory = runner.server
    assert handler_factory is not None
    loop = asyncio.get_running_loop()
    gate = app[CONNECTIONS]  # max_connections: over it, refused before aiohttp sees the connection
    server = await loop.create_server(
        lambda: gate.protocol(
            lambda: HeaderDeadline(handler_factory(), settings.header_timeout, settings.max_headers_total)),
        settings.host, settings.port, reuse_port=reuse_port, backlog=1024,
    )
    return runner, server


async def _serve_forever(config: Config, settings: BridgeSettings, reuse_port: bool) -> None:
    # Signals first: a SIGTERM while the app starts (broker connections, discovery) is a
    # graceful stop once it has started, not a kill by the default action (exit "not clean").
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app = create_app(config, settings=settings)
    runner, server = await start_server(app, settings, reuse_port=reuse_port)
    bound = ", ".join(str(sock.getsockname()) for sock in server.sockets)
    _log.info("http bridge listening on %s (pid %d)", bound, os.getpid())
    try:
        await stop.wait()
    finally:
        server.close()
        await runner.cleanup()
        await server.wait_closed()


def serve(config: Config, settings: BridgeSettings) -> int:
    """Run the bridge until SIGTERM/SIGINT and return the exit code.

    With ``settings.workers`` > 1, amqprpc's prefork :class:`~amqprpc.supervisor.Supervisor`
    (the one ``amqprpc run --workers`` uses) forks that many children: each child runs in
    its own process group with a parent-death signal, one that dies is restarted with
    capped exponential backoff, and SIGTERM/SIGINT stops them all.
    """
    if settings.workers == 1:
        asyncio.run(_serve_forever(config, settings, reuse_port=False))
        return 0
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("--workers > 1 needs SO_REUSEPORT, which this platform lacks")

    def child(index: int) -> int:  # its own loop, app and broker connections
        asyncio.run(_serve_forever(config, settings, reuse_port=True))
        return 0

    _log.info("http bridge: %d workers on %s:%d", settings.workers, settings.host, settings.port)
    return Supervisor(settings.workers, child).run()
