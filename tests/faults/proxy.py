"""A TCP fault proxy for fault tests: our stand-in for Shopify's toxiproxy.

toxiproxy cannot be installed on this machine, and ``tc netem`` is not in the kernel (see
``reliability.md`` §2.1). This proxy sits between one client and the broker and breaks the
link in the ways nameko's toxiproxy tests do, switchable at runtime from the test thread:

* :meth:`FaultProxy.latency`: every chunk is held back ``seconds`` before it is forwarded
  (in both directions, pipelined: a round trip costs twice the latency);
* :meth:`FaultProxy.blackhole`: bytes in one or both directions are read and dropped while the
  sockets stay open (toxiproxy's ``timeout`` toxic with ``timeout=0``). A close from the
  blackholed side is swallowed too, as a real network would lose the FIN; only heartbeats or
  timeouts can detect this;
* :meth:`FaultProxy.reset`: every current connection is aborted with an RST on both sides
  (``SO_LINGER`` 0), like a crashed middlebox or a reset from the network;
* :meth:`FaultProxy.refuse`: new connections are accepted and reset at once, so connecting
  fails immediately (the client sees the reset on its first read or write);
* :meth:`FaultProxy.clear`: back to a clean pass-through.

The proxy owns an asyncio event loop in a thread of its own, so it works under blocking
clients (py-amqp, kombu) in the test thread. Toxics are plain attributes read by the loop
(single assignments are atomic under the GIL) plus a wake-up of the loop; :meth:`reset` runs on
the loop and returns once every connection is gone. Only the standard library is used.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Direction", "FaultProxy"]

Direction = Literal["both", "upstream", "downstream"]
"""``upstream`` is client -> server, ``downstream`` is server -> client."""

_CHUNK = 65536
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close a stream so the peer gets a TCP RST (and unsent data is discarded)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass  # already closed
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's stream, the upstream stream and their pumps."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for task in self.tasks:
            task.cancel()
        _abort_with_rst(self.client)
        _abort_with_rst(self.upstream)


class FaultProxy:
    """Forward 127.0.0.1:``port`` to ``upstream_host:upstream_port`` with switchable faults.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. All public methods are
    called from the test thread; they are safe to call while traffic flows.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, connect_timeout: float = 5.0) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.connect_timeout = connect_timeout
        self.port = 0
        """The listening port on 127.0.0.1; known once :meth:`start` returned."""
        self._latency = 0.0
        self._blackholed: set[str] = set()
        self._refusing = False
        self._links: set[_Link] = set()
        self._accepted = 0
        self._cond = threading.Condition()  # guards _links/_accepted for the test thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._toxics_changed: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start the loop thread and listen on a free port on 127.0.0.1."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        # daemon: a test that forgets stop() must not hang the interpreter at exit.
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"FaultProxy->{self.upstream_port}", daemon=True
        )
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        """Reset every connection, stop listening and join the loop thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10.0)
            loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------

    def url_for(self, amqp_url: str) -> str:
        """Rewrite ``amqp_url`` to go through this proxy.

        Host and port are replaced by 127.0.0.1 and :attr:`port`; scheme, credentials, vhost
        and query are kept. ``amqp://guest:guest@localhost:5681/%2F?heartbeat=2`` becomes
        ``amqp://guest:guest@127.0.0.1:<port>/%2F?heartbeat=2``.
        """
        parts = urlsplit(amqp_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self.port}"))

    # -- toxics ------------------------------------------------------------------------------

    def latency(self, seconds: float) -> None:
        """Delay every chunk by ``seconds`` in both directions (0 turns it off)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._latency = seconds
        self._wake()

    def blackhole(self, direction: Direction = "both") -> None:
        """Drop bytes (and closes) flowing in ``direction``; the sockets stay open."""
        if direction not in ("both", "upstream", "downstream"):
            raise ValueError(f"unknown direction {direction!r}")
        sides = {"upstream", "downstream"} if direction == "both" else {direction}
        self._blackholed = self._blackholed | sides
        self._wake()

    def refuse(self, refusing: bool = True) -> None:
        """While on, reset every new connection at once; current ones are left alone."""
        self._refusing = refusing

    def reset(self) -> None:
        """RST every current connection on both sides; returns once they are all gone."""
        self._call(self._reset_all())

    def clear(self) -> None:
        """Remove every toxic: no latency, no blackhole, accept connections again."""
        self._latency = 0.0
        self._blackholed = set()
        self._refusing = False
        self._wake()

    # -- observation -------------------------------------------------------------------------

    def connection_count(self) -> int:
        """Connections currently proxied (refused ones are never counted)."""
        with self._cond:
            return len(self._links)

    def accepted_count(self) -> int:
        """Connections proxied since start, to tell that a client reconnected."""
        with self._cond:
            return self._accepted

    def wait_for_connections(self, n: int, timeout: float = 10.0) -> None:
        """Block until at least ``n`` connections are proxied; TimeoutError after ``timeout``."""
        self._wait_until(lambda: len(self._links) >= n, timeout, f"{n} connection(s)")

    def wait_for_no_connections(self, timeout: float = 10.0) -> None:
        """Block until no connection is proxied; TimeoutError after ``timeout``."""
        self._wait_until(lambda: not self._links, timeout, "no connections")

    def _wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(
                    f"proxy :{self.port}: waited {timeout} s for {what}, have {len(self._links)}"
                )

    # -- loop side ---------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine on the proxy loop and wait for it (from the test thread)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("FaultProxy not started")
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(30.0)

    def _wake(self) -> None:
        """Tell pumps waiting on a toxic (a swallowed close) to look again."""
        if self._loop is not None and self._toxics_changed is not None:
            self._loop.call_soon_threadsafe(self._toxics_changed.set)

    async def _listen(self) -> None:
        self._toxics_changed = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all()
        if self._server is not None:
            await self._server.wait_closed()
        # Handlers still connecting upstream: cancel them so the loop closes clean.
        pending = asyncio.all_tasks() - {asyncio.current_task()}
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _reset_all(self) -> None:
        with self._cond:
            links = list(self._links)
            self._links.clear()
            self._cond.notify_all()
        for link in links:
            link.abort()
        if links:
            await asyncio.gather(*(t for link in links for t in link.tasks), return_exceptions=True)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._refusing:
            _abort_with_rst(client_w)
            return
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port),
                self.connect_timeout,
            )
        except (OSError, TimeoutError):
            _abort_with_rst(client_w)  # upstream down: the client sees a reset
            return
        link = _Link(client_w, up_w)
        link.tasks = [
            asyncio.create_task(self._pump(link, client_r, up_w, "upstream")),
            asyncio.create_task(self._pump(link, up_r, client_w, "downstream")),
        ]
        with self._cond:
            self._links.add(link)
            self._accepted += 1
            self._cond.notify_all()

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: str,
    ) -> None:
        """Copy one direction. A reader feeds a queue and a writer drains it, so latency
        delays each chunk without adding up and blackholing never stalls reading."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        try:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except OSError:
                    data = b""
                if not data:
                    await self._while_blackholed(direction)
                    queue.put_nowait(None)  # tells the sender to finish
                    break
                if direction not in self._blackholed:
                    queue.put_nowait((time.monotonic() + self._latency, data))
            await sender
        finally:
            sender.cancel()
            self._close_link(link)

    async def _while_blackholed(self, direction: str) -> None:
        """Hold a close back while its direction is blackholed, as a lost FIN would be."""
        while direction in self._blackholed:
            assert self._toxics_changed is not None
            self._toxics_changed.clear()
            if direction not in self._blackholed:
                break
            await self._toxics_changed.wait()

    @staticmethod
    async def _send(queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter) -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                writer.write(data)
                await writer.drain()
            except OSError:
                return

    def _close_link(self, link: _Link) -> None:
        """One side closed: close both gracefully (FIN) and forget the link."""
        with self._cond:
            if link not in self._links:
                return  # reset() or the other pump got here first
            self._links.discard(link)
            self._cond.notify_all()
        for task in link.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        link.client.close()
        link.upstream.close()
