"""What the dashboard's per-method call stats cost on the call path: the same calls with them on and off.

``python -m benchmarks.stats_cost [--broker URL] [--rounds 6] [--seconds 1.5]``

Every container the runner builds has the discovery announcer, whose worker observer puts
each finished call into a rolling window (``amqprpc.discovery.stats.CallStats.record``) that
the heartbeat sends to the bridge's dashboard. This measures it three ways: ``record`` alone in a
tight loop (ns per call), ``spawn_worker`` of an echo on ``memory://`` (the whole worker
path, no broker: µs per call), and end to end with the harness of
``benchmarks.persistent_requests`` (one worker in this process, sequential p50 and 100 calls
in flight, CPU time per call), on and off interleaved round by round, which goes first
alternating. "off" takes the observer out of the container's ``worker_observers``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from amqprpc import ClusterRpcClient, Config, ServiceContainer
from amqprpc.discovery import ServiceAnnouncer
from amqprpc.discovery.stats import CallStats

from .persistent_requests import Echo, measure_round


def record_ns(calls: int = 200_000) -> float:
    stats = CallStats()
    started = time.perf_counter()
    for _ in range(calls):
        stats.record("echo", 0.0012, True)
    return (time.perf_counter() - started) / calls * 1e9


def spawn_worker_us(rounds: int = 10, calls: int = 20_000) -> dict[str, float]:
    """``spawn_worker`` of an echo on ``memory://``, observer on and off interleaved (µs/call)."""
    container = ServiceContainer(Echo, Config(broker_url="memory://"), extensions=[ServiceAnnouncer])
    container.start()
    entrypoint = container.entrypoints[0]
    observer = _observer(container)
    times: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for round_ in range(rounds):
            for mode in ("on", "off") if round_ % 2 == 0 else ("off", "on"):
                _switch(container, observer, mode == "on")
                started = time.perf_counter()
                for _ in range(calls):
                    container.spawn_worker(entrypoint, ("x",), {})
                times[mode].append((time.perf_counter() - started) / calls * 1e6)
    finally:
        container.stop()
    return {mode: statistics.median(values) for mode, values in times.items()}


def _observer(container: ServiceContainer) -> Any:
    [observer] = [o for o in container.worker_observers
                  if isinstance(getattr(o, "__self__", None), ServiceAnnouncer)]
    return observer


def _switch(container: ServiceContainer, observer: Any, on: bool) -> None:
    if observer in container.worker_observers:
        container.worker_observers.remove(observer)
    if on:
        container.worker_observers.append(observer)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stats_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args(argv)
    print(f"CallStats.record alone: {statistics.median(record_ns() for _ in range(5)):.0f} ns/call")
    spawn = spawn_worker_us()
    print(f"spawn_worker of an echo (memory://): on {spawn['on']:.2f} us, off {spawn['off']:.2f} us, "
          f"+{spawn['on'] - spawn['off']:.2f} us per call")
    container = ServiceContainer(Echo, Config(broker_url=args.broker, concurrency=10),
                                 extensions=[ServiceAnnouncer])
    container.start()
    observer = _observer(container)
    results: dict[str, dict[str, list[float]]] = {
        mode: {"seq_p50_ms": [], "calls_per_s": [], "cpu_us": []} for mode in ("on", "off")}
    try:
        with ClusterRpcClient(args.broker, timeout=30) as client:
            client.call(Echo.name, "echo", "warm-up")
            for round_ in range(args.rounds):
                for mode in ("on", "off") if round_ % 2 == 0 else ("off", "on"):  # no order bias
                    _switch(container, observer, mode == "on")
                    measure_round(client, args.seconds, results[mode])
    finally:
        container.stop()
    for mode, figures in results.items():
        print(f"call stats {mode:3}  sequential p50 {statistics.median(figures['seq_p50_ms']):.3f} ms   "
              f"100 in flight {statistics.median(figures['calls_per_s']):,.0f} calls/s, "
              f"{statistics.median(figures['cpu_us']):.0f} us CPU/call   "
              f"(medians of {args.rounds} rounds; rounds: "
              f"{', '.join(f'{v:,.0f}' for v in figures['calls_per_s'])})")
    on, off = (statistics.median(results[m]["calls_per_s"]) for m in ("on", "off"))
    print(f"throughput on/off: {on / off:.3f}")


if __name__ == "__main__":
    main()
