"""What a closed circuit breaker (and the retry path) costs per call: on and off in one run.

``python -m benchmarks.breaker_cost [--broker URL] [--rounds 4] [--seconds 1.5]``

The harness of ``benchmarks.persistent_requests`` (one echo worker in this process,
sequential p50, 100 calls in flight, CPU time per call), three modes interleaved round by
round on one client, the order rotating: ``off`` (the caller's ``resilience`` is None, what
``breaker = 0`` and ``retries = 0`` leave), ``breaker`` (a closed breaker judges every call),
``retries`` (breaker on and the method named idempotent, so every call takes the
``GuardedCall`` path: its own future, a done callback, the budget). Then, without the
broker: the CPU cost of the guard around a send that does nothing, and the time an open
breaker takes to refuse a call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import Future
from typing import Any

from amqprpc import CircuitOpen, ClusterRpcClient, Config, RpcFuture, ServiceContainer
from amqprpc.resilience.guard import Resilience

from .persistent_requests import Echo, measure_round

MODES = ("off", "breaker", "retries")


def guard_overhead_us(config: Config, calls: int = 200_000) -> dict[str, float]:
    """Microseconds per call the guard adds around a send that returns a settled future."""
    done: Future[Any] = RpcFuture("svc", "m", "id", 1.0)
    done.set_result(None)

    def send(*args: Any, **kwargs: Any) -> Any:
        return done

    figures = {}
    for mode in MODES:
        resilience = Resilience(config.replace(breaker=int(mode != "off"), retries=1,
                                               retry_idempotent="svc.m" if mode == "retries" else ""),
                                schedule=lambda delay, fn: None, make_future=RpcFuture)
        started = time.perf_counter()
        if mode == "off":
            for _ in range(calls):
                send("svc", "m", (), {}, timeout=1.0, context=None)
        else:
            for _ in range(calls):
                resilience.call(send, "svc", "m", (), {}, timeout=1.0, context=None)
        figures[mode] = (time.perf_counter() - started) / calls * 1e6
    opened = Resilience(config.replace(breaker=1, breaker_cooldown=3600.0),
                        schedule=lambda delay, fn: None, make_future=RpcFuture)
    assert opened.breakers is not None
    opened.breakers.get("svc", "m").trip("benchmark")
    started = time.perf_counter()
    for _ in range(calls // 10):
        try:
            opened.call(send, "svc", "m", (), {}, timeout=1.0, context=None)
        except CircuitOpen:
            pass
    figures["open_refusal"] = (time.perf_counter() - started) / (calls // 10) * 1e6
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.breaker_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args(argv)
    base = Config(broker_url=args.broker, concurrency=10)
    container = ServiceContainer(Echo, base)
    container.start()
    results: dict[str, dict[str, list[float]]] = {
        mode: {"seq_p50_ms": [], "calls_per_s": [], "cpu_us": []} for mode in MODES}
    try:
        config = base.replace(breaker=1, retries=1, retry_idempotent=f"{Echo.name}.echo")
        with ClusterRpcClient(config=config, timeout=30) as client:
            caller = client._caller
            guard = caller.resilience
            assert guard is not None
            client.call(Echo.name, "echo", "warm-up")
            for round_ in range(args.rounds):
                order = MODES[round_ % 3:] + MODES[:round_ % 3]  # no order bias
                for mode in order:
                    caller.resilience = None if mode == "off" else guard
                    guard.retries = mode == "retries"
                    measure_round(client, args.seconds, results[mode])
    finally:
        container.stop()
    off = statistics.median(results["off"]["calls_per_s"])
    for mode, figures in results.items():
        rate = statistics.median(figures["calls_per_s"])
        print(f"{mode:8} sequential p50 {statistics.median(figures['seq_p50_ms']):.3f} ms   "
              f"100 in flight {rate:,.0f} calls/s ({rate / off:.2f}x off), "
              f"{statistics.median(figures['cpu_us']):.0f} us CPU/call   "
              f"(medians of {args.rounds} rounds: {', '.join(f'{v:,.0f}' for v in figures['calls_per_s'])})")
    for name, value in guard_overhead_us(base).items():
        print(f"guard alone, {name:12} {value:.2f} us per call")


if __name__ == "__main__":
    main()
