"""The systems compared: how each starts its echo service, event handler and load clients.

* ``amqprpc``: this repository, in the project's interpreter, through its CLI
  (``amqprpc run --workers N``, ``amqprpc bridge``).
* ``nameko``: Nameko 2.14.1 from PyPI in the benchmark venv, through ``nameko run`` with
  its defaults (``max_workers`` 10), clients under eventlet as Nameko's own tools run.
* ``raw``: the raw py-amqp limit of shared/notes/hotpath.md: the inline server S1 and the
  single-threaded pipelined client C1 (benchmarks/agents/raw_*.py), in the benchmark venv.
  Requests go through the default exchange straight to the queue, with no headers.
* ``raw-wire``: the same scripts on Nameko's wire, the messages amqprpc and Nameko send:
  through the ``nameko-rpc`` topic exchange (routing key ``<service>.echo``, queue
  ``rpc-<service>``), ``mandatory``, a deadline header and a per-message TTL. The topic
  exchange alone costs ~0.09 ms per call at the broker: the floor for a Nameko-compatible
  framework.
* The peers a team would pick instead (docs/benchmarks.md, "Peers"), in the peers venv, each
  configured for its best: ``faststream`` (0.7, RabbitMQ, ``broker.request``), ``aio-pika``
  (``patterns.JsonRPC``), ``celery`` (5, RabbitMQ broker, ``rpc://`` backend, thread pool),
  and ``grpc`` / ``grpc-aio`` (unary echo on loopback, no broker: the bar of a point-to-point
  RPC stack). Events (workload 5): FastStream, aio-pika and Celery handlers on the same
  handler queue and topic exchange as amqprpc's (benchmarks/agents/*_events.py); gRPC has none.

Every name (service, queue, event source) carries the run's tag, so concurrent runs and
other test suites on the same broker never share a queue.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runner import Bench, Proc

AGENTS = Path(__file__).resolve().parent / "agents"


@dataclass(frozen=True)
class System:
    """One contender. ``venv``: where it runs: the project's interpreter (None), the benchmark
    venv (``"bench"``: Nameko, raw) or the peers venv (``"peers"``)."""

    name: str
    label: str
    venv: str | None = None

    @property
    def needs_bench_venv(self) -> bool:
        return self.venv == "bench"

    @property
    def is_peer(self) -> bool:
        return self.venv == "peers"

    @property
    def over_broker(self) -> bool:
        return not self.name.startswith("grpc")

    def python(self, bench: Bench) -> str:
        if self.venv is None:
            return sys.executable
        python = bench.bench_python if self.venv == "bench" else bench.peers_python
        assert python is not None, f"{self.name} needs the {self.venv} venv"
        return str(python)

    # ------------------------------------------------------------------ RPC echo

    def echo_queue(self, service: str) -> str:
        if self.is_peer:
            return f"{self.name}-{service}"
        return f"raw-{service}" if self.name == "raw" else f"rpc-{service}"

    @property
    def nameko_wire(self) -> bool:
        """Its requests go through the ``nameko-rpc`` exchange (all but plain ``raw``)."""
        return self.name != "raw"

    def start_echo(self, bench: Bench, service: str, workers: int = 1) -> list[Proc]:
        """Start ``workers`` worker processes of the echo service; wait until all consume."""
        if self.is_peer:
            return self._start_peer_echo(bench, service, workers)
        queue = self.echo_queue(service)
        bench.remember_queue(queue)
        if self.name == "amqprpc":
            procs = [bench.spawn(f"amqprpc-echo-{service}", [
                self.python(bench), "-m", "amqprpc", "run", "benchmarks.agents.amqprpc_echo",
                "--broker", bench.url, "--workers", str(workers), "--log-level", "WARNING",
            ], env={"BENCH_SERVICE": service})]
        elif self.name == "nameko":
            procs = [self._nameko(bench, "benchmarks.agents.nameko_echo", f"nameko-echo-{service}-{i}",
                                  {"BENCH_SERVICE": service}) for i in range(workers)]
        else:
            bind = f"{service}.*" if self.nameko_wire else None
            procs = [bench.spawn(f"{self.name}-echo-{service}-{i}", [
                self.python(bench), str(AGENTS / "raw_server.py"),
                bench.params(url=bench.url, queue=queue, prefetch=100, bind=bind),
            ]) for i in range(workers)]
        bench.wait_consumers(queue, workers, procs)
        return procs

    def _start_peer_echo(self, bench: Bench, service: str, workers: int) -> list[Proc]:
        queue = self.echo_queue(service)
        if not self.over_broker:
            port = bench.peer_port(service)
            procs = [bench.spawn(f"{self.name}-echo-{service}", [
                self.python(bench), str(AGENTS / "grpc_echo.py"),
                bench.params(port=port, aio=self.name == "grpc-aio")])]
            bench.wait_port(port, procs)
            return procs
        bench.remember_queue(queue)
        if self.name == "celery":
            procs = [bench.spawn(f"celery-echo-{service}-{i}", [
                self.python(bench), "-m", "celery", "-A", "celery_echo", "worker", "--pool", "threads",
                "--concurrency", "10", "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--loglevel", "WARNING", "--hostname", f"{service}-{i}@%h",
            ], env={"BENCH_URL": bench.url, "BENCH_QUEUE": queue, "PYTHONPATH": str(AGENTS)})
                for i in range(workers)]
        else:
            script = {"faststream": "faststream_echo.py", "aio-pika": "aiopika_echo.py"}[self.name]
            procs = [bench.spawn(f"{self.name}-echo-{service}-{i}", [
                self.python(bench), str(AGENTS / script), bench.params(url=bench.url, queue=queue),
            ]) for i in range(workers)]
        bench.wait_consumers(queue, workers, procs)
        return procs

    def client_argv(self, bench: Bench, **params: object) -> list[str]:
        if self.is_peer:
            script = {"faststream": "faststream_client.py", "aio-pika": "aiopika_client.py",
                      "celery": "celery_client.py", "grpc": "grpc_client.py",
                      "grpc-aio": "grpc_client.py"}[self.name]
            extra: dict[str, object] = {"url": bench.url}
            if not self.over_broker:
                extra = {"port": bench.peer_port(str(params["service"])), "aio": self.name == "grpc-aio"}
            return [self.python(bench), str(AGENTS / script), bench.params(**extra, **params)]
        script = {"amqprpc": "amqprpc_client.py", "nameko": "nameko_client.py",
                  "raw": "raw_client.py", "raw-wire": "raw_client.py"}[self.name]
        return [self.python(bench), str(AGENTS / script),
                bench.params(url=bench.url, nameko_wire=self.nameko_wire, **params)]

    # ------------------------------------------------------------------ events

    def start_event_sink(self, bench: Bench, service: str, source: str, instances: int) -> list[Proc]:
        """``instances`` handler processes (service pool) of ``tick`` events from ``source``,
        all consuming the one queue ``event_queue(source, service)``, bound to the topic
        exchange ``<source>.events`` (the workload remembers it for the clean-up)."""
        queue = event_queue(source, service)
        bench.remember_queue(queue)
        env = {"BENCH_SERVICE": service, "BENCH_EVENT_SOURCE": source}
        procs = []
        for i in range(instances):
            name = f"{self.name}-sink-{service}-{i}"
            if self.name == "amqprpc":
                procs.append(bench.spawn(name, [
                    self.python(bench), "-m", "amqprpc", "run", "benchmarks.agents.amqprpc_events",
                    "--broker", bench.url, "--log-level", "WARNING",
                ], env=env, pipe=True))
            elif self.name == "nameko":
                procs.append(self._nameko(bench, "benchmarks.agents.nameko_events", name, env, pipe=True))
            elif self.name == "celery":  # as the echo worker: threads x 10, prefetch 100
                procs.append(bench.spawn(name, [
                    self.python(bench), "-m", "celery", "-A", "celery_events", "worker", "--pool", "threads",
                    "--concurrency", "10", "--without-gossip", "--without-mingle", "--without-heartbeat",
                    "--loglevel", "WARNING", "--hostname", f"{service}-{i}@%h",
                ], env={**env, "BENCH_URL": bench.url, "BENCH_QUEUE": queue, "PYTHONPATH": str(AGENTS)},
                    pipe=True))
            else:
                script = {"faststream": "faststream_events.py", "aio-pika": "aiopika_events.py"}[self.name]
                procs.append(bench.spawn(name, [
                    self.python(bench), str(AGENTS / script),
                    bench.params(url=bench.url, queue=queue, source=source, prefetch=100),
                ], pipe=True))
        bench.wait_consumers(queue, instances, procs)
        return procs

    def dispatch_argv(self, bench: Bench, **params: object) -> list[str]:
        script = {"amqprpc": "amqprpc_dispatch.py", "nameko": "nameko_dispatch.py",
                  "faststream": "faststream_dispatch.py", "aio-pika": "aiopika_dispatch.py",
                  "celery": "celery_dispatch.py"}[self.name]
        return [self.python(bench), str(AGENTS / script), bench.params(url=bench.url, **params)]

    # ------------------------------------------------------------------ HTTP

    def start_http(self, bench: Bench, service: str, path: str, port: int) -> list[Proc]:
        """The echo service behind an HTTP front (the bridge, a Nameko ``@http`` gateway, or
        FastStream's FastAPI ``RabbitRouter`` under uvicorn), each in its own process; returns
        when ``POST path`` answers 200."""
        if self.name == "faststream":
            [echo] = self._start_peer_echo(bench, service, 1)
            front = bench.spawn(f"faststream-gw-{service}", [
                self.python(bench), str(AGENTS / "faststream_gateway.py"),
                bench.params(url=bench.url, queue=self.echo_queue(service), path=path, port=port),
            ])
        elif self.name == "amqprpc":
            bench.remember_queue(f"rpc-{service}")
            echo = bench.spawn(f"amqprpc-http-echo-{service}", [
                self.python(bench), "-m", "amqprpc", "run", "benchmarks.agents.amqprpc_echo",
                "--broker", bench.url, "--log-level", "WARNING",
            ], env={"BENCH_SERVICE": service, "BENCH_HTTP_ROUTE": f"POST {path}"})
            bench.wait_consumers(f"rpc-{service}", 1, [echo])
            front = bench.spawn(f"amqprpc-bridge-{service}", [
                self.python(bench), "-m", "amqprpc", "bridge", "--broker", bench.url,
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING",
            ], env={
                "AMQPRPC_BRIDGE_RATE_LIMIT": "0",  # one client IP sends everything here
                "AMQPRPC_BRIDGE_SERVICES": service,  # only this run's echo: no foreign routes
            })
        elif self.name == "nameko":
            gateway = f"{service}-gw"
            bench.remember_queue(f"rpc-{service}")
            bench.remember_queue(f"rpc-{gateway}")
            echo = self._nameko(bench, "benchmarks.agents.nameko_echo", f"nameko-http-echo-{service}",
                                {"BENCH_SERVICE": service})
            bench.wait_consumers(f"rpc-{service}", 1, [echo])
            front = self._nameko(bench, "benchmarks.agents.nameko_gateway", f"nameko-gw-{service}",
                                 {"BENCH_SERVICE": service, "BENCH_GATEWAY": gateway,
                                  "BENCH_HTTP_PATH": path}, web_port=port)
        else:
            raise ValueError(f"{self.name} has no HTTP front of its own")
        bench.wait_http(port, path, [echo, front])
        return [echo, front]

    # ------------------------------------------------------------------ helpers

    def _nameko(self, bench: Bench, module: str, name: str, env: dict[str, str], *,
                pipe: bool = False, web_port: int | None = None) -> Proc:
        config = bench.workdir / f"{name}.yaml"
        lines = [f"AMQP_URI: {bench.url}", "max_workers: 10"]
        if web_port is not None:
            lines.append(f"WEB_SERVER_ADDRESS: 127.0.0.1:{web_port}")
        config.write_text("\n".join(lines) + "\n")
        # `python -m nameko`: the venv's console scripts point at the path it was built under
        return bench.spawn(name, [self.python(bench), "-m", "nameko", "run", "--config", str(config), module],
                           env=env, pipe=pipe)


def event_queue(source: str, service: str) -> str:
    """The service-pool handler queue amqprpc and Nameko declare (Nameko's naming); the peers'
    handlers consume a queue of the same name, so the harness counts and drains them alike."""
    return f"evt-{source}-tick--{service}.on_tick"


AMQPRPC = System("amqprpc", "amqprpc")
NAMEKO = System("nameko", "Nameko 2.14.1", "bench")
RAW = System("raw", "raw py-amqp", "bench")
RAW_WIRE = System("raw-wire", "raw py-amqp, Nameko's wire", "bench")
FASTSTREAM = System("faststream", "FastStream 0.7.8", "peers")
AIO_PIKA = System("aio-pika", "aio-pika 10.2.1 JsonRPC", "peers")
CELERY = System("celery", "Celery 5.7.0 (rpc://)", "peers")
GRPC = System("grpc", "gRPC 1.85.1 sync", "peers")
GRPC_AIO = System("grpc-aio", "gRPC 1.85.1 grpc.aio", "peers")
PEERS = (FASTSTREAM, AIO_PIKA, CELERY, GRPC, GRPC_AIO)
ALL = (AMQPRPC, NAMEKO, RAW, RAW_WIRE, *PEERS)
BY_NAME = {system.name: system for system in ALL}
