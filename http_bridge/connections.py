"""A cap on open HTTP connections per bridge process: past it, new ones are refused at once.

Every connection holds memory and a file descriptor from the moment it is accepted,
whether it is sending a request, waiting for an answer or idle in keep-alive, so the
cap counts all of them. A connection over the cap gets a fixed ``503`` (with
``Retry-After: 1`` and ``Connection: close``) written straight to the socket and is closed;
aiohttp never sees it, so a refusal costs no parser, no handler and no task. A slot is
freed when its connection closes, whoever closes it.

``ConnectionGate.protocol(make)`` wraps the protocol factory of ``loop.create_server``:
``make`` is called only for an admitted connection. One gate per listening process
(each ``--workers`` child has its own); single event loop, so no lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("http_bridge.connections")

_BODY = json.dumps({"error": {"status": 503, "code": "too_many_connections",
                              "message": "the bridge has too many open connections; retry shortly",
                              "id": "-"}}).encode()
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\n"
           b"Content-Type: application/json\r\n"
           b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n"
           b"Retry-After: 1\r\n"
           b"Connection: close\r\n\r\n" + _BODY)


class ConnectionGate:
    """Counts open connections (``open``) and the ones refused over ``limit`` (``refused``)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the connection limit must be at least 1, got {limit!r}")
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._saturated = False  # logged once per episode at the cap, not once per refusal

    def admit(self) -> bool:
        if self.open >= self.limit:
            self.refused += 1
            if not self._saturated:
                self._saturated = True
                _log.warning("%d connections open, the limit (max_connections): refusing new ones",
                             self.open)
            return False
        self.open += 1
        self._saturated = False
        return True

    def release(self) -> None:
        self.open -= 1

    def protocol(self, make: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        """One connection's protocol: ``make()``'s if admitted, else one that refuses it."""
        return _Counted(self, make)

    def render(self) -> str:
        """Prometheus lines for ``/metrics``."""
        return ("# HELP amqprpc_bridge_connections_open HTTP connections open in this process.\n"
                "# TYPE amqprpc_bridge_connections_open gauge\n"
                f"amqprpc_bridge_connections_open {self.open}\n"
                "# HELP amqprpc_bridge_connections_refused_total Connections refused over max_connections.\n"
                "# TYPE amqprpc_bridge_connections_refused_total counter\n"
                f"amqprpc_bridge_connections_refused_total {self.refused}\n")


class _Counted(asyncio.Protocol):
    """Holds a slot of the gate for the connection's lifetime; forwards everything to the inner one."""

    def __init__(self, gate: ConnectionGate, make: Callable[[], asyncio.Protocol]) -> None:
        self._gate = gate
        self._make = make
        self._inner: Any = None  # None: refused (or not yet connected)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._gate.admit():
            assert isinstance(transport, asyncio.Transport)
            transport.write(REFUSAL)
            transport.close()  # after the buffer is flushed
            return
        self._inner = self._make()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()  # type: ignore[no-any-return]
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            inner, self._inner = self._inner, None
            self._gate.release()
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
