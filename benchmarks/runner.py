"""The machinery of a run: processes, readiness, the timed window, CPU accounting, clean-up.

One ``Bench`` per run owns every process it starts (stopped on exit, whatever happens)
and every queue and exchange its names create (deleted on exit). A measurement follows
the clients' protocol (benchmarks/agents/_common.py): wait until every client is warmed
up, read the CPU ticks of the three groups (clients, server tree, ``beam.smp``), start
all clients at once, read the ticks again when the last one's window ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import amqp

from . import procstat

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class BenchError(RuntimeError):
    """A cell could not be measured (a process died, a timeout); the run goes on without it."""


class Proc:
    """A process the run started: its log file, and (with ``pipe``) its stdout lines."""

    def __init__(self, name: str, popen: subprocess.Popen[str], log: Path,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._on_line = on_line
        self._reader: threading.Thread | None = None
        if popen.stdout is not None:
            self._reader = threading.Thread(target=self._read, args=(popen.stdout,),
                                            name=f"bench-read-{name}", daemon=True)
            self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        """This process and its children (``amqprpc run --workers N`` forks)."""
        return procstat.process_tree([self.pid])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (a graceful stop), then SIGKILL for the whole tree if it lingers."""
        if self.alive():
            tree = self.pids()
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in tree:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.popen.wait(5)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._reader is not None:
            self._reader.join(2)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                line = line.rstrip("\n")
                if self._on_line is not None:
                    self._on_line(line)
                else:
                    self.lines.put(line)
        except (OSError, ValueError):
            pass
        self.lines.put(None)


@dataclass
class Window:
    """CPU seconds per group and wall time over one timed window."""

    wall: float
    cpu: dict[str, float]
    results: list[dict[str, Any]] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0


class Bench:
    """One run: options, the broker, the processes and names it owns."""

    def __init__(self, *, url: str, rounds: int, duration: float, quick: bool,
                 bench_python: Path | None, keep_logs: bool = False,
                 peers_python: Path | None = None) -> None:
        self.url = url
        self.rounds = rounds
        self.duration = duration
        self.quick = quick
        self.bench_python = bench_python
        self.peers_python = peers_python
        self._peer_ports: dict[str, int] = {}
        self.keep_logs = keep_logs
        self.tag = uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix=f"amqprpc-bench-{self.tag}-"))
        self.broker_pid = procstat.listener_pid(_port_of(url))
        self.procs: list[Proc] = []
        self.queues: set[str] = set()
        self.exchanges: set[str] = set()
        self.failed = False
        self.load_samples: list[tuple[float, float, float]] = []

    # ------------------------------------------------------------------ names

    def name(self, *parts: str) -> str:
        """A unique name: ``bench-<tag>-<parts>``."""
        return "-".join(("bench", self.tag, *parts))

    def remember_queue(self, name: str) -> None:
        self.queues.add(name)

    def remember_exchange(self, name: str) -> None:
        self.exchanges.add(name)

    @staticmethod
    def params(**values: Any) -> str:
        return json.dumps(values)

    # ------------------------------------------------------------------ processes

    def spawn(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              pipe: bool = False, stdin: bool = False,
              on_line: Callable[[str], None] | None = None) -> Proc:
        """Start a process in the repository root; stderr (and stdout unless ``pipe``) to a log."""
        log = self.workdir / f"{name}.log"
        sink = log.open("w")
        inherited = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the repo root is cwd
        environment = {**inherited, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
        try:
            popen = subprocess.Popen(
                argv, cwd=REPO, env=environment, text=True, bufsize=1,
                stdout=subprocess.PIPE if pipe else sink, stderr=sink,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            )
        finally:
            sink.close()
        proc = Proc(name, popen, log, on_line)
        self.procs.append(proc)
        return proc

    def stop(self, procs: Iterable[Proc]) -> None:
        procs = list(procs)
        for proc in procs:  # signal all first: they stop in parallel
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.stop()
            if proc in self.procs:
                self.procs.remove(proc)

    def check_alive(self, procs: Iterable[Proc]) -> None:
        for proc in procs:
            if not proc.alive():
                self.failed = True
                raise BenchError(f"{proc.name} exited with {proc.popen.returncode}; its log "
                                 f"({proc.log}) ends:\n{proc.tail()}")

    # ------------------------------------------------------------------ readiness

    @contextlib.contextmanager
    def admin(self) -> Iterator[amqp.Channel]:
        from benchmarks.agents._amqp import connect

        connection = connect(self.url)
        try:
            yield connection.channel()
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def wait_consumers(self, queue_name: str, count: int, procs: list[Proc],
                       timeout: float = START_TIMEOUT) -> None:
        """Wait until ``queue_name`` has ``count`` consumers (the workers are serving)."""
        deadline = time.monotonic() + timeout
        with self.admin() as channel:
            while True:
                self.check_alive(procs)
                try:
                    consumers = channel.queue_declare(queue_name, passive=True).consumer_count
                except amqp.exceptions.NotFound:
                    consumers = -1
                    channel = channel.connection.channel()  # the failed passive closed it
                if consumers >= count:
                    return
                if time.monotonic() > deadline:
                    raise BenchError(f"{queue_name}: {max(consumers, 0)} of {count} consumers after "
                                     f"{timeout:.0f}s; logs: {', '.join(str(p.log) for p in procs)}")
                time.sleep(0.05)

    def peer_port(self, service: str) -> int:
        """The loopback port of a broker-less peer's server (gRPC), one per service name."""
        if service not in self._peer_ports:
            self._peer_ports[service] = free_port()
        return self._peer_ports[service]

    def wait_port(self, port: int, procs: list[Proc], timeout: float = START_TIMEOUT) -> None:
        """Wait until a server accepts TCP connections on ``port`` (peers with no broker)."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive(procs)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")
            time.sleep(0.05)

    def queue_depth(self, queue_name: str) -> int:
        with self.admin() as channel:
            return int(channel.queue_declare(queue_name, passive=True).message_count)

    def wait_http(self, port: int, path: str, procs: list[Proc], timeout: float = START_TIMEOUT) -> None:
        """Wait until ``POST path`` answers 200 (the bridge learns routes from discovery)."""
        deadline = time.monotonic() + timeout
        body = json.dumps({"payload": "ping"}).encode()
        last = ""
        while time.monotonic() < deadline:
            self.check_alive(procs)
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise BenchError(f"POST :{port}{path} did not answer 200 within {timeout:.0f}s ({last})")

    # ------------------------------------------------------------------ the timed window

    def cpu_snapshot(self, clients: list[Proc], servers: list[Proc]) -> dict[str, float]:
        server_pids = procstat.process_tree(p.pid for p in servers)
        return {
            "client": procstat.group_cpu(procstat.process_tree(p.pid for p in clients)),
            "server": procstat.group_cpu(server_pids),
            "broker": procstat.cpu_seconds(self.broker_pid) if self.broker_pid else 0.0,
        }

    def measure(self, clients: list[Proc], servers: list[Proc],
                on_start: Callable[[], None] | None = None,
                on_end: Callable[[], None] | None = None,
                on_ready: Callable[[], None] | None = None,
                timeout: float | None = None) -> Window:
        """Run one timed window over already started clients (see the module docstring).

        ``on_ready`` runs once every client is warmed up, before the ticks are read;
        ``on_start``/``on_end`` run right at the window's start and end.
        """
        timeout = timeout or (START_TIMEOUT + 4 * self.duration)
        self._await_event(clients, "ready", servers, timeout)
        if on_ready is not None:
            on_ready()
        self.load_samples.append(procstat.loadavg())
        before = self.cpu_snapshot(clients, servers)
        started = time.monotonic()
        if on_start is not None:
            on_start()
        for client in clients:
            client.send("go")
        self._await_event(clients, "done", servers, timeout)
        ended = time.monotonic()
        if on_end is not None:
            on_end()
        after = self.cpu_snapshot(clients, servers)
        results = self._await_event(clients, "result", servers, timeout)
        for client in clients:
            client.popen.wait(30)
            if client in self.procs:
                self.procs.remove(client)
        return Window(wall=ended - started, cpu={k: after[k] - before[k] for k in before},
                      results=results, started=started, ended=ended)

    def _await_event(self, clients: list[Proc], event: str, servers: list[Proc],
                     timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        for client in clients:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.failed = True
                    raise BenchError(f"{client.name}: no {event!r} within {timeout:.0f}s; "
                                     f"log {client.log}:\n{client.tail()}")
                try:
                    line = client.lines.get(timeout=min(remaining, 1.0))
                except queue.Empty:
                    self.check_alive(servers)
                    continue
                if line is None:
                    client.popen.wait(5)
                    self.failed = True
                    raise BenchError(f"{client.name} exited ({client.popen.returncode}) before "
                                     f"{event!r}; log {client.log}:\n{client.tail()}")
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # not protocol (a banner): ignore
                if isinstance(message, dict) and message.get("event") == event:
                    found.append(message)
                    break
        return found

    def run_clients(self, argvs: list[list[str]], servers: list[Proc], **hooks: Any) -> Window:
        """Start one client per argv, measure one window over them, make sure they are gone."""
        clients = [self.spawn(f"client-{uuid.uuid4().hex[:6]}", argv, pipe=True, stdin=True)
                   for argv in argvs]
        try:
            return self.measure(clients, servers, **hooks)
        finally:
            self.stop(clients)

    # ------------------------------------------------------------------ clean-up

    def close(self) -> None:
        """Stop every process still running, delete every queue/exchange of this run."""
        self.stop(list(self.procs))
        self.delete_names()
        if self.failed or self.keep_logs:
            sys.stderr.write(f"[bench] logs kept in {self.workdir}\n")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def delete_names(self) -> None:
        queues = set(self.queues)
        exchanges = set(self.exchanges)
        queues.update(self._listed("list_queues"))
        exchanges.update(self._listed("list_exchanges"))
        try:
            with self.admin() as channel:
                for name in sorted(queues):
                    channel.queue_delete(name)
                for name in sorted(exchanges):
                    channel.exchange_delete(name)
        except Exception as exc:
            sys.stderr.write(f"[bench] could not delete this run's queues: {exc}\n")
        self.queues.clear()
        self.exchanges.clear()

    def _listed(self, command: str) -> list[str]:
        """Names holding this run's tag that the broker lists (retry/DLQ queues, reply
        queues of Nameko's proxies inside a service); needs rabbitmqctl, else known names only."""
        tool = shutil.which("rabbitmqctl")
        if tool is None or _port_of(self.url) != 5672 or "127.0.0.1" not in self.url:
            return []
        try:
            out = subprocess.run([tool, "-q", command, "name"], capture_output=True, text=True,
                                 timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            return []
        marker = f"bench-{self.tag}-"
        return [line.strip() for line in out.splitlines() if marker in line]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_info(url: str) -> dict[str, str]:
    """The broker's product, version and Erlang platform, from the AMQP handshake."""
    from benchmarks.agents._amqp import connect

    connection = connect(url)
    try:
        props = connection.server_properties
        return {key: _text(props.get(key)) for key in ("product", "version", "platform")}
    finally:
        connection.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _port_of(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port or 5672
