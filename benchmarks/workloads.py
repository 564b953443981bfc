"""The workloads of issue #7, each measured for every system it applies to.

Every workload starts its servers once, then runs ``rounds`` rounds; in each round every
variant is measured for every system, the systems' order rotating from round to round, so
that a drift of the machine (other jobs, thermal, the broker's own housekeeping) hits all
of them alike. Each measurement is one round's record; the report aggregates them.
"""

from __future__ import annotations

import queue
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import procstat
from .runner import START_TIMEOUT, Bench, BenchError, Proc, Window, free_port
from .systems import AIO_PIKA, AMQPRPC, CELERY, FASTSTREAM, NAMEKO, PEERS, RAW, RAW_WIRE, System, event_queue

PAYLOADS = {"8 B": 8, "1 KiB": 1024, "64 KiB": 64 * 1024}
WINDOW = 100
EVENT_REPORT_EVERY = 20  # the handlers' reporting granularity (agents/*_events.py)


@dataclass
class Cell:
    """One (variant, system) pair: its rounds, or why it could not be measured."""

    system: str
    variant: str
    rounds: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "variant": self.variant, "rounds": self.rounds,
                "error": self.error}


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    systems: tuple[System, ...]
    run: Callable[[Bench, Sequence[System]], list[Cell]]
    needs: tuple[str, ...] = ()  # external tools: "wrk"


# ---------------------------------------------------------------------- helpers


def log(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def interleave(bench: Bench, systems: Sequence[System], variants: Sequence[str],
               measure: Callable[[System, str], dict[str, Any]], label: str,
               cells: dict[tuple[str, str], Cell] | None = None) -> list[Cell]:
    """``rounds`` x variants x systems (order rotated per round); a cell that fails once is
    not retried (its server may be gone) and keeps its error."""
    cells = cells if cells is not None else {}
    for variant in variants:
        for system in systems:
            cells.setdefault((variant, system.name), Cell(system.name, variant))
    for round_no in range(bench.rounds):
        shift = round_no % len(systems)
        order = list(systems[shift:]) + list(systems[:shift])
        for variant in variants:
            for system in order:
                cell = cells[(variant, system.name)]
                if cell.error is not None:
                    continue
                try:
                    record = measure(system, variant)
                except BenchError as exc:
                    cell.error = str(exc).splitlines()[0]
                    log(f"{label} {variant} {system.name}: FAILED: {exc}")
                    continue
                record["round"] = round_no + 1
                record["load1"] = procstat.loadavg()[0]
                cell.rounds.append(record)
                log(f"{label} {variant} {system.name} round {round_no + 1}: {summary(record)}")
    return list(cells.values())


def summary(record: dict[str, Any]) -> str:
    parts = []
    for key, fmt in (("calls_per_s", "{:.0f}/s"), ("p50_ms", "p50 {:.2f} ms"), ("p99_ms", "p99 {:.2f} ms"),
                     ("idle_rss_mib", "idle {:.1f} MiB"), ("loaded_rss_mib", "loaded {:.1f} MiB")):
        if record.get(key) is not None:
            parts.append(fmt.format(record[key]))
    cpu = record.get("cpu_ms_per_call")
    if cpu:
        parts.append("cpu-ms/call c/s/b {client:.2f}/{server:.2f}/{broker:.2f}".format(**cpu))
    if record.get("errors"):
        parts.append(f"{record['errors']} errors")
    return ", ".join(parts)


def cpu_figures(window: Window, calls: float) -> dict[str, Any]:
    """CPU% per group over the window, and CPU-ms per call (calls counted over the window)."""
    pct = {group: 100.0 * seconds / window.wall for group, seconds in window.cpu.items()}
    per_call = ({group: 1000.0 * seconds / calls for group, seconds in window.cpu.items()}
                if calls else {})
    if per_call:
        per_call["total"] = sum(per_call.values())
    return {"cpu_pct": pct, "cpu_ms_per_call": per_call}


def rpc_record(window: Window) -> dict[str, Any]:
    """Calls/s (all clients), latency percentiles (median over clients), CPU."""
    results = window.results
    rate = sum(r["calls"] / r["seconds"] for r in results)
    record: dict[str, Any] = {
        "calls_per_s": rate,
        "p50_ms": _median([r["p50"] for r in results if r.get("p50") is not None]),
        "p99_ms": _median([r["p99"] for r in results if r.get("p99") is not None]),
        "errors": sum(r.get("errors", 0) for r in results),
        "clients": len(results),
    }
    record.update(cpu_figures(window, rate * window.wall))
    return record


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def stop_all(bench: Bench, servers: dict[str, list[Proc]]) -> None:
    for procs in servers.values():
        bench.stop(procs)


# ---------------------------------------------------------------------- 1-3: RPC


def _rpc_workload(bench: Bench, systems: Sequence[System], label: str, variants: dict[str, dict[str, Any]],
                  workers: int = 1, clients: int = 1) -> list[Cell]:
    services = {s.name: bench.name(label, s.name, f"w{workers}") for s in systems}
    servers: dict[str, list[Proc]] = {}
    try:
        for system in systems:
            servers[system.name] = system.start_echo(bench, services[system.name], workers)

        def measure(system: System, variant: str) -> dict[str, Any]:
            spec = variants[variant]
            argv = system.client_argv(bench, service=services[system.name],
                                      queue=system.echo_queue(services[system.name]),
                                      payload=spec["payload"], window=spec["window"],
                                      warmup=spec["warmup"], duration=bench.duration, mode="window")
            window = bench.run_clients([argv] * clients, servers[system.name])
            return rpc_record(window)

        return interleave(bench, systems, list(variants), measure, label)
    finally:
        stop_all(bench, servers)


def sequential(bench: Bench, systems: Sequence[System]) -> list[Cell]:
    """1: one caller, one call at a time, 8 B: the latency floor."""
    warmup = 20 if bench.quick else 200
    return _rpc_workload(bench, systems, "seq",
                         {"8 B": {"payload": 8, "window": 1, "warmup": warmup}})


def pipelined(bench: Bench, systems: Sequence[System]) -> list[Cell]:
    """2: one client process, 100 calls in flight, 8 B / 1 KiB / 64 KiB."""
    warmup = 50 if bench.quick else 300
    variants = {name: {"payload": size, "window": WINDOW, "warmup": warmup}
                for name, size in PAYLOADS.items()}
    return _rpc_workload(bench, systems, "window", variants)


def scaling(bench: Bench, systems: Sequence[System]) -> list[Cell]:
    """3: four client processes x 25 in flight, against 1, 2 and 4 worker processes."""
    warmup = 25 if bench.quick else 100
    cells: list[Cell] = []
    for workers in (1, 2, 4):
        variant = f"{workers} worker{'s' if workers > 1 else ''}"
        cells += _rpc_workload(bench, systems, "scale",
                               {variant: {"payload": 8, "window": 25, "warmup": warmup}},
                               workers=workers, clients=4)
    return cells


# ---------------------------------------------------------------------- 4: HTTP

_WRK_LATENCY = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/s, latency percentiles, and failures from ``wrk --latency`` output."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rate is None:
        raise BenchError(f"wrk printed no Requests/sec:\n{text[-1500:]}")
    latency = {f"p{m[0]}_ms": float(m[1]) * _UNIT_MS[m[2]] for m in _WRK_LATENCY.findall(text)}
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    requests = re.search(r"(\d+) requests in", text)
    return {
        "calls_per_s": float(rate[1]),
        "requests": int(requests[1]) if requests else None,
        "errors": (int(non_2xx[1]) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0),
        **latency,
    }


def http(bench: Bench, systems: Sequence[System]) -> list[Cell]:
    """4: wrk, 2 threads, 50 connections: HTTP front -> RPC -> echo service, 8 B payload."""
    systems = [s for s in systems if s is not RAW]
    script = bench.workdir / "post.lua"
    script.write_text('wrk.method = "POST"\n'
                      'wrk.body = \'{"payload": "xxxxxxxx"}\'\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    fronts: dict[str, tuple[int, str]] = {}
    servers: dict[str, list[Proc]] = {}
    try:
        for system in systems:
            service = bench.name("http", system.name)
            port, path = free_port(), f"/{service}/echo"
            servers[system.name] = system.start_http(bench, service, path, port)
            fronts[system.name] = (port, path)

        def run_wrk(system: System, seconds: int, measured: bool) -> dict[str, Any]:
            port, path = fronts[system.name]
            argv = ["wrk", "-t2", "-c50", f"-d{seconds}s", "--latency", "-s", str(script),
                    f"http://127.0.0.1:{port}{path}"]
            started = time.monotonic()
            wrk = bench.spawn(f"wrk-{system.name}", argv, pipe=True)
            before = bench.cpu_snapshot([wrk], servers[system.name])
            load = procstat.loadavg()
            output: list[str] = []
            while True:
                try:
                    line = wrk.lines.get(timeout=seconds + 60)
                except queue.Empty:
                    raise BenchError(f"wrk did not finish within {seconds + 60}s") from None
                if line is None:
                    break
                output.append(line)
            after = bench.cpu_snapshot([wrk], servers[system.name])
            wall = time.monotonic() - started
            bench.stop([wrk])
            bench.check_alive(servers[system.name])
            if wrk.popen.returncode:
                raise BenchError(f"wrk exited {wrk.popen.returncode}: {wrk.tail()}")
            record = parse_wrk("\n".join(output))
            if measured:
                bench.load_samples.append(load)
                window = Window(wall=wall, cpu={k: after[k] - before[k] for k in after})
                record.update(cpu_figures(window, record["calls_per_s"] * wall))
            return record

        def measure(system: System, variant: str) -> dict[str, Any]:
            run_wrk(system, 1, measured=False)  # warm-up: connections, JIT-less caches, routes
            return run_wrk(system, max(1, round(bench.duration)), measured=True)

        return interleave(bench, systems, ["50 connections"], measure, "http")
    finally:
        stop_all(bench, servers)


# ---------------------------------------------------------------------- 5: events


class EventCounts:
    """The handlers' running counts, from their ``H <n>`` lines."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs
        self.latest = [0] * len(procs)

    def total(self) -> int:
        for index, proc in enumerate(self.procs):
            while True:
                try:
                    line = proc.lines.get_nowait()
                except queue.Empty:
                    break
                if line and line.startswith("H "):
                    self.latest[index] = int(line[2:])
        return sum(self.latest)


def events(bench: Bench, systems: Sequence[System]) -> list[Cell]:
    """5: dispatch -> handled throughput, one and two handler processes (service pool)."""
    systems = [s for s in systems if s is not RAW]
    cells: dict[tuple[str, str], Cell] = {}
    for instances in (1, 2):
        _events_variant(bench, systems, instances, cells)
    return list(cells.values())


def _events_variant(bench: Bench, systems: Sequence[System], instances: int,
                    cells: dict[tuple[str, str], Cell]) -> None:
    warmup = 50 if bench.quick else 300
    variant = f"{instances} handler{'s' if instances > 1 else ''}"
    sinks: dict[str, list[Proc]] = {}
    names: dict[str, tuple[str, str]] = {}
    try:
        for system in systems:
            source = bench.name("evsrc", system.name, str(instances))
            service = bench.name("evsink", system.name, str(instances))
            bench.remember_exchange(f"{source}.events")
            names[system.name] = (source, service)
            sinks[system.name] = system.start_event_sink(bench, service, source, instances)

        def measure(system: System, variant: str) -> dict[str, Any]:
            source, service = names[system.name]
            queue_name = event_queue(source, service)
            procs = sinks[system.name]
            counts = EventCounts(procs)
            marks: dict[str, int] = {}
            base = counts.total()

            def ready() -> None:  # the warm-up's events handled, nothing queued
                wait_drained(bench, queue_name, procs)
                deadline = time.monotonic() + 10
                slack = EVENT_REPORT_EVERY * instances
                while counts.total() + slack < base + warmup and time.monotonic() < deadline:
                    time.sleep(0.02)

            argv = system.dispatch_argv(bench, source=source, queue=queue_name, payload=8,
                                        warmup=warmup, duration=bench.duration, confirm_window=500,
                                        max_backlog=1000, check_every=100)
            window = bench.run_clients([argv], procs, on_ready=ready,
                                       on_start=lambda: marks.__setitem__("start", counts.total()),
                                       on_end=lambda: marks.__setitem__("end", counts.total()))
            handled = marks["end"] - marks["start"]
            result = window.results[0]
            record: dict[str, Any] = {"calls_per_s": handled / window.wall, "handled": handled,
                                      "dispatched_per_s": result["dispatched"] / result["seconds"],
                                      "backlog_pauses": result.get("pauses", 0), "errors": 0}
            record.update(cpu_figures(window, handled))
            wait_drained(bench, queue_name, procs)  # leave nothing for the next system's round
            return record

        interleave(bench, systems, [variant], measure, "events", cells)
    finally:
        stop_all(bench, sinks)


def wait_drained(bench: Bench, queue_name: str, procs: list[Proc], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while bench.queue_depth(queue_name) > 0:
        bench.check_alive(procs)
        if time.monotonic() > deadline:
            raise BenchError(f"{queue_name} still holds events after {timeout:.0f}s")
        time.sleep(0.05)


# ---------------------------------------------------------------------- 6: memory


def memory(bench: Bench, systems: Sequence[System]) -> list[Cell]:
    """6a: RSS of one fresh worker process: idle (2 s after it consumes), then after a
    pipelined load (100 in flight, 8 B), with its high-water mark."""
    settle = 0.5 if bench.quick else 2.0

    def measure(system: System, variant: str) -> dict[str, Any]:
        service = bench.name("mem", system.name, uuid.uuid4().hex[:4])
        procs = system.start_echo(bench, service, 1)
        try:
            worker = procs[0].pid
            time.sleep(settle)  # "idle": after start-up settles, as in performance.md
            idle = procstat.rss_mib(worker)
            argv = system.client_argv(bench, service=service, queue=system.echo_queue(service),
                                      payload=8, window=WINDOW, warmup=100, duration=bench.duration,
                                      mode="window")
            window = bench.run_clients([argv], procs)
            record = rpc_record(window)
            record.update(idle_rss_mib=idle, loaded_rss_mib=procstat.rss_mib(worker),
                          hwm_mib=procstat.hwm_mib(worker))
            return record
        finally:
            bench.stop(procs)

    return interleave(bench, systems, ["one worker"], measure, "memory")


def inflight(bench: Bench, systems: Sequence[System]) -> list[Cell]:
    """6b: one amqprpc client with 10,000 calls in flight, in waves: memory stays bounded.

    The waves go on for 45 s (at most 20 waves), past the default 30 s call timeout, so
    whatever a call leaves behind until its deadline shows up, and so does whether it is
    freed then."""
    calls, min_seconds, max_waves = (2_000, 0.0, 2) if bench.quick else (10_000, 45.0, 20)
    systems = [s for s in systems if s is AMQPRPC]
    service = bench.name("inflight", "amqprpc")
    servers: dict[str, list[Proc]] = {}
    try:
        servers["amqprpc"] = AMQPRPC.start_echo(bench, service, 1)

        def measure(system: System, variant: str) -> dict[str, Any]:
            argv = system.client_argv(bench, service=service, payload=8, warmup=100, mode="inflight",
                                      calls=calls, min_seconds=min_seconds, max_waves=max_waves)
            window = bench.run_clients([argv], servers["amqprpc"], timeout=START_TIMEOUT + 3 * min_seconds)
            result = window.results[0]
            record = {"calls_per_s": result["calls"] / result["seconds"], "errors": result["errors"],
                      "in_flight": calls, "waves": result["waves"],
                      "baseline_rss_mib": result["baseline_rss_mib"], "hwm_mib": result["hwm_mib"]}
            record.update(cpu_figures(window, result["calls"]))
            return record

        return interleave(bench, systems, [f"{calls:,} in flight"], measure, "inflight")
    finally:
        stop_all(bench, servers)


WORKLOADS = (
    Workload("seq", "1. Sequential calls, 8 B", (AMQPRPC, NAMEKO, RAW, RAW_WIRE, *PEERS), sequential),
    Workload("window", "2. One client, 100 calls in flight", (AMQPRPC, NAMEKO, RAW, RAW_WIRE, *PEERS),
             pipelined),
    Workload("scaling", "3. Four client processes x 25 in flight; 1, 2, 4 worker processes",
             (AMQPRPC, NAMEKO, RAW), scaling),
    Workload("http", "4. HTTP: wrk -t2 -c50 -> front -> RPC -> echo", (AMQPRPC, NAMEKO, FASTSTREAM), http,
             needs=("wrk",)),
    # gRPC has no broker and so no events: left out
    Workload("events", "5. Events: dispatch -> handled", (AMQPRPC, NAMEKO, FASTSTREAM, AIO_PIKA, CELERY),
             events),
    Workload("memory", "6a. Worker RSS, idle and after load", (AMQPRPC, NAMEKO, RAW), memory),
    Workload("inflight", "6b. Client memory with 10,000 calls in flight", (AMQPRPC,), inflight),
)
BY_NAME = {workload.name: workload for workload in WORKLOADS}


def tool_available(name: str) -> bool:
    return shutil.which(name) is not None
