"""The server: the header deadline against slow clients (slowloris), on a real socket, and
``--workers N`` under amqprpc's supervisor."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from amqprpc import Config
from http_bridge import BridgeSettings, create_app
from http_bridge.server import HeaderTracker, start_server
from tests.waiting import wait_until

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


def _children(pid: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return {int(child) for child in found.stdout.split()}


def _serving(log_path, pid: int) -> bool:
    """Whether worker ``pid`` logged that it listens (its signal handlers are installed)."""
    return re.search(rf"listening on .* \(pid {pid}\)$", log_path.read_text(), re.MULTILINE) is not None


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_workers_are_restarted_with_backoff_after_a_kill(amqp_uri, tmp_path):
    """`--workers 2` runs amqprpc's Supervisor: a killed child comes back, later each time."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = tmp_path / "bridge.log"
    env = {**os.environ, "AMQPRPC_BROKER_URL": amqp_uri}
    with log_path.open("w") as log:  # a file, not a pipe: a full pipe would block the bridge
        process = subprocess.Popen(
            [sys.executable, "-m", "http_bridge", "--port", str(port), "--workers", "2",
             "--log-level", "INFO"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        pids = wait_until(lambda: len(_children(process.pid)) == 2 and _children(process.pid),
                          "two bridge workers", timeout=30)
        wait_until(lambda: all(_serving(log_path, pid) for pid in pids), "both workers serving",
                   timeout=30)
        victim = min(pids)
        for attempt, backoff in enumerate(("0.5s", "1.0s"), start=1):  # the same slot twice
            os.kill(victim, signal.SIGKILL)
            before = pids
            pids = wait_until(lambda v=victim: (now := _children(process.pid)) and len(now) == 2
                              and v not in now and now, f"a replacement for worker {victim}",
                              timeout=30)
            (victim,) = pids - before
            wait_until(lambda v=victim: _serving(log_path, v), f"worker {victim} serving",
                       timeout=30)  # a SIGTERM before its handler is installed is not a clean stop
            restarts = re.findall(r"exited with -9 after [\d.]+s; restarting in ([\d.]+s)",
                                  log_path.read_text())
            assert len(restarts) == attempt and restarts[-1] == backoff  # doubled: backoff
        assert all(os.getpgid(pid) == pid for pid in pids)  # each leads its own process group
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
