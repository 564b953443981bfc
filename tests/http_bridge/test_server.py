"""The header deadline against slow clients (slowloris), on a real socket."""

from __future__ import annotations

import asyncio
import time

from amqprpc import Config
from http_bridge import BridgeSettings, create_app
from http_bridge.server import HeaderTracker, start_server

from .support import FakeRpc


def test_tracker_follows_requests_bodies_and_pipelining():
    tracker = HeaderTracker(max_header_bytes=1000)
    assert tracker.in_headers  # a new connection owes us a request
    tracker.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n")
    assert tracker.in_headers
    tracker.feed(b"\r\nab")
    assert not tracker.in_headers
    tracker.feed(b"cdeGET / HTTP/1.1\r\n")  # body ends, next request starts
    assert tracker.in_headers
    tracker.feed(b"\r\nGET /x HTTP/1.1\r\n\r\n")
    assert not tracker.in_headers and not tracker.opaque
    tracker.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n")
    assert tracker.opaque
    big = HeaderTracker(max_header_bytes=10)
    big.feed(b"GET /" + b"a" * 20)
    assert big.opaque


def test_slow_headers_are_cut_and_normal_clients_still_served(fed_registry):
    settings = BridgeSettings(port=0, header_timeout=0.3, allow_anonymous=True)

    async def main() -> None:
        app = create_app(Config(), rpc_client=FakeRpc(), registry=fed_registry,  # type: ignore[arg-type]
                         settings=settings)
        runner, server = await start_server(app, settings)
        port = server.sockets[0].getsockname()[1]
        try:
            slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            slow_writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            closed = False
            for _ in range(40):  # a header byte every 50 ms: never finishes in time
                if slow_reader.at_eof() or slow_writer.is_closing():
                    closed = True
                    break
                slow_writer.write(b"X")
                await asyncio.sleep(0.05)
                # A well-behaved client meanwhile gets its answer.
                if _ == 2:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    answer = await asyncio.wait_for(reader.read(), 5)
                    assert answer.startswith(b"HTTP/1.1 200")
                    writer.close()
            data = await asyncio.wait_for(slow_reader.read(), 5)
            assert closed or data == b""
            assert time.monotonic() - started < 1.5
            assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # sent nothing: cut too
            slow_writer.close()
            idle_writer.close()
        finally:
            server.close()
            await runner.cleanup()
            await server.wait_closed()

    asyncio.run(main())
