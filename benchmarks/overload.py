"""Overload: three times one worker's capacity, offered through a client and through the bridge.

``python -m benchmarks.overload [--broker URL] [--seconds 3] [--queue 2] [--rounds 4]``

One ``amqprpc run`` worker process serves ``work()`` (a fixed ``--handler-ms`` sleep,
``--concurrency`` at a time: its capacity is concurrency / handler time) from a queue
bounded by ``max_queue_length = --queue``. An open-loop generator (calls sent on a fixed
schedule, whatever the answers do) offers first a fifth of the capacity (the unloaded
latency), then three times it:

* **client**: a ``ClusterRpcClient``; a call the full queue refuses ends in
  ``ServiceOverloaded``;
* **bridge**: ``POST /rpc/<service>/work`` on a ``python -m http_bridge`` process with
  ``adaptive_concurrency`` on; refused calls are 503 (``overloaded`` from the limiter,
  ``service_overloaded`` from the queue).

It prints the accepted calls' p50/p99 against the unloaded p99, the shed calls' p50/p99
(time from sending to the refusal), and the counts: offered = accepted + shed + other, and runs (the
worker appends every run to a file) = accepted. Then the cost on the normal path:
sequential p50 and 100-in-flight throughput of an unbounded echo with the in-flight cap
off and on (a cap never reached), interleaved round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amqprpc import ClusterRpcClient, Config, ServiceContainer, ServiceOverloaded, rpc
from amqprpc.resilience.overload import InFlightLimits

from .persistent_requests import Echo, in_flight_rate, sequential_p50_ms

ROOT = Path(__file__).resolve().parents[1]
GENERATOR_CONNECTIONS = 100  # the HTTP generator's keep-alive connections (new ones cost it most)


class Slow:
    """What the worker process runs (its name, bound and service time from the environment)."""

    name = os.environ.get("OVERLOAD_BENCH_SERVICE", "bench-overload")
    max_queue_length = int(os.environ.get("OVERLOAD_BENCH_QUEUE", "2"))

    @rpc(http=True, public=True)
    def work(self, n: int) -> int:
        time.sleep(float(os.environ.get("OVERLOAD_BENCH_HANDLER_S", "0.02")))
        runs = os.environ.get("OVERLOAD_BENCH_RUNS")
        if runs:
            with open(runs, "a") as file:
                file.write(f"{n}\n")
        return n


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Tally:
    def __init__(self) -> None:
        self.accepted: list[float] = []
        self.shed: list[float] = []
        self.other: dict[str, int] = {}
        self.offered = 0

    def line(self, what: str, unloaded_p99: float | None = None) -> str:
        text = (f"{what:28} offered {self.offered:5}  accepted {len(self.accepted):5} "
                f"p50 {percentile(self.accepted, 0.5) * 1e3:6.1f} ms p99 "
                f"{percentile(self.accepted, 0.99) * 1e3:6.1f} ms")
        if unloaded_p99:
            text += f" ({percentile(self.accepted, 0.99) / unloaded_p99:.2f}x unloaded p99)"
        if self.shed:
            text += (f"  shed {len(self.shed):5} p50 {percentile(self.shed, 0.5) * 1e3:.2f} ms "
                     f"p99 {percentile(self.shed, 0.99) * 1e3:.2f} ms")
        if self.other:
            text += f"  other {self.other}"
        return text


def offer_client(client: ClusterRpcClient, service: str, rate: float, seconds: float) -> Tally:
    """Open loop: call ``rate`` times a second for ``seconds``, then collect every outcome."""
    tally = Tally()
    ended: dict[int, float] = {}
    pending: list[tuple[int, float, Any]] = []
    started = time.perf_counter()
    n = 0
    while True:
        due = started + n / rate
        now = time.perf_counter()
        if due - started >= seconds:
            break
        if due > now:
            time.sleep(min(due - now, 0.001))
            continue
        sent = time.perf_counter()
        future = client.call_async(service, "work", n)
        future.add_done_callback(lambda _, n=n: ended.__setitem__(n, time.perf_counter()))
        pending.append((n, sent, future))
        n += 1
    tally.offered = n
    for n, sent, future in pending:
        try:
            future.result(30)
            tally.accepted.append(ended[n] - sent)
        except ServiceOverloaded:
            tally.shed.append(ended[n] - sent)
        except Exception as exc:
            tally.other[type(exc).__name__] = tally.other.get(type(exc).__name__, 0) + 1
    return tally


async def offer_bridge(session: Any, url: str, rate: float, seconds: float) -> Tally:
    tally = Tally()

    in_flight = 0

    async def one(n: int) -> None:
        nonlocal in_flight
        if in_flight >= GENERATOR_CONNECTIONS:  # every keep-alive connection busy: not sent
            tally.other["not sent"] = tally.other.get("not sent", 0) + 1
            return
        in_flight += 1
        sent = time.perf_counter()
        try:
            async with session.post(url, json={"n": n}) as response:
                body = await response.read()
                took = time.perf_counter() - sent
        finally:
            in_flight -= 1
            if response.status == 200:
                tally.accepted.append(took)
            elif response.status == 503:
                tally.shed.append(took)
                code = "overloaded" if b'"overloaded"' in body else "service_overloaded"
                tally.other[code] = tally.other.get(code, 0) + 1
            else:
                tally.other[str(response.status)] = tally.other.get(str(response.status), 0) + 1

    tasks = []
    started = time.perf_counter()
    n = 0
    while n / rate < seconds:
        due = started + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(n)))
        n += 1
    tally.offered = n
    await asyncio.gather(*tasks)
    return tally


def runs_in(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def overload(args: argparse.Namespace) -> None:
    service = f"bench-overload-{uuid.uuid4().hex[:6]}"
    runs = Path(tempfile.mkdtemp()) / "runs"
    capacity = args.concurrency / (args.handler_ms / 1000)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OVERLOAD_BENCH_SERVICE": service,
           "OVERLOAD_BENCH_QUEUE": str(args.queue), "OVERLOAD_BENCH_HANDLER_S": str(args.handler_ms / 1000),
           "OVERLOAD_BENCH_RUNS": str(runs)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "amqprpc.cli", "run", "benchmarks.overload:Slow", "--broker", args.broker,
         "--concurrency", str(args.concurrency), "--log-level", "ERROR"], env=env, cwd=ROOT)
    print(f"one worker: {args.concurrency} x {args.handler_ms} ms = {capacity:.0f} calls/s; queue "
          f"bounded at {args.queue}; offered 0.2x then 3x for {args.seconds} s each")
    config = Config(broker_url=args.broker, discovery_interval=0.5, rpc_timeout=30)
    try:
        with ClusterRpcClient(config=config) as client:
            if not wait_for(lambda: _answers(client, service), 30):
                raise SystemExit("the worker did not start")
            before = runs_in(runs)
            unloaded = offer_client(client, service, capacity * 0.2, args.seconds)
            loaded = offer_client(client, service, capacity * 3, args.seconds)
            base = percentile(unloaded.accepted, 0.99)
            print(unloaded.line("client 0.2x"))
            print(loaded.line("client 3x", base))
            accepted = len(unloaded.accepted) + len(loaded.accepted)
            wait_for(lambda: runs_in(runs) - before >= accepted, 10)
            print(f"client: runs {runs_in(runs) - before} = accepted {accepted}; lost "
                  f"{unloaded.offered + loaded.offered - accepted - len(unloaded.shed) - len(loaded.shed)}")
        before = runs_in(runs)
        unloaded, loaded = asyncio.run(_through_bridge(args, config, service, capacity))
        base = percentile(unloaded.accepted, 0.99)
        print(unloaded.line("bridge 0.2x (adaptive on)"))
        print(loaded.line("bridge 3x (adaptive on)", base))
        accepted = len(unloaded.accepted) + len(loaded.accepted)
        wait_for(lambda: runs_in(runs) - before >= accepted + 1, 10)
        print(f"bridge: runs {runs_in(runs) - before - 1} = accepted {accepted} (less the probe)")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        from amqprpc.testing.broker import broker_admin
        with broker_admin(args.broker) as channel:
            channel.queue_delete(f"rpc-{service}")


def _answers(client: ClusterRpcClient, service: str) -> bool:
    try:
        return client.call(service, "work", -1, _timeout=2) == -1
    except Exception:
        return False


async def _through_bridge(args: argparse.Namespace, config: Config, service: str,
                          capacity: float) -> tuple[Tally, Tally]:
    """The bridge in a process of its own (``python -m http_bridge``), as it runs for real."""
    import socket

    import aiohttp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AMQPRPC_BRIDGE_RATE_LIMIT": "0",
           "AMQPRPC_BRIDGE_ADAPTIVE_CONCURRENCY": "1", "AMQPRPC_DISCOVERY_INTERVAL": "0.5"}
    bridge = subprocess.Popen([sys.executable, "-m", "http_bridge", "--broker", args.broker,
                               "--port", str(port), "--log-level", "ERROR"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/rpc/{service}/work"
    try:
        connector = aiohttp.TCPConnector(limit=GENERATOR_CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector) as session:
            deadline = time.monotonic() + 30
            while True:  # the route appears once the bridge's registry has heard the service
                try:
                    async with session.post(url, json={"n": -1}) as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise SystemExit("the bridge never served the service")
                await asyncio.sleep(0.1)
            unloaded = await offer_bridge(session, url, capacity * 0.2, args.seconds)
            loaded = await offer_bridge(session, url, capacity * 3, args.seconds)
            return unloaded, loaded
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)


def normal_path(args: argparse.Namespace) -> None:
    """The in-flight cap off (no limiter) and on (never reached), interleaved on one client."""
    container = ServiceContainer(Echo, Config(broker_url=args.broker, concurrency=10))
    container.start()
    results: dict[str, dict[str, list[float]]] = {m: {"p50": [], "rate": []} for m in ("off", "on")}
    try:
        with ClusterRpcClient(args.broker, timeout=30) as client:
            client.call(Echo.name, "echo", "warm-up")
            for round_ in range(args.rounds):
                for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                    client._caller._in_flight = InFlightLimits(10**6, {}) if mode == "on" else None
                    results[mode]["p50"].append(sequential_p50_ms(client, args.normal_seconds))
                    results[mode]["rate"].append(in_flight_rate(client, args.normal_seconds))
    finally:
        container.stop()
    for mode, figures in results.items():
        print(f"in-flight cap {mode:3}: sequential p50 {statistics.median(figures['p50']):.3f} ms, "
              f"100 in flight {statistics.median(figures['rate']):,.0f} calls/s "
              f"(medians of {args.rounds} rounds: {', '.join(f'{v:,.0f}' for v in figures['rate'])})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--queue", type=int, default=2, help="max_queue_length of the service")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--handler-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the normal-path check")
    parser.add_argument("--normal-seconds", type=float, default=1.5)
    parser.add_argument("--skip-normal", action="store_true")
    args = parser.parse_args(argv)
    overload(args)
    if not args.skip_normal:
        normal_path(args)


if __name__ == "__main__":
    main()
