"""What persistent RPC requests cost: the same calls with ``delivery_mode`` 2 and 1, one run.

``python -m benchmarks.persistent_requests [--broker URL] [--rounds 5] [--seconds 3]``

Requests are persistent since issue #19 (a queued call survives a broker restart, as
Nameko's do). This measures what that costs on the normal path, interleaving the two
modes round by round against one worker in this process: sequential calls (p50 latency)
and 100 calls in flight (calls/s). The transient mode patches the request builder of this
process only; nothing else changes.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from amqprpc import ClusterRpcClient, Config, ServiceContainer, calls, messages, rpc


class Echo:
    name = f"bench-persist-{uuid.uuid4().hex[:8]}"

    @rpc
    def echo(self, value: Any) -> Any:
        return value


@contextmanager
def transient_requests() -> Iterator[None]:
    """Requests built by this process go out with ``delivery_mode`` 1, as before #19."""
    original = messages.build_request

    def build(*args: Any, **kwargs: Any) -> messages.Outgoing:
        message = original(*args, **kwargs)
        message.properties["delivery_mode"] = 1
        return message

    calls.build_request = build  # type: ignore[attr-defined]
    try:
        yield
    finally:
        calls.build_request = original  # type: ignore[attr-defined]


def sequential_p50_ms(client: ClusterRpcClient, seconds: float) -> float:
    samples: list[float] = []
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        started = time.perf_counter()
        client.call(Echo.name, "echo", "x")
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def in_flight_rate(client: ClusterRpcClient, seconds: float, window: int = 100) -> float:
    done = 0
    started = time.perf_counter()
    until = started + seconds
    while time.perf_counter() < until:
        futures = [client.call_async(Echo.name, "echo", "x") for _ in range(window)]
        for future in futures:
            future.result()
        done += window
    return done / (time.perf_counter() - started)


def measure_round(client: ClusterRpcClient, seconds: float, figures: dict[str, list[float]]) -> None:
    """One round of a mode: appends ``seq_p50_ms``, ``calls_per_s`` (100 in flight) and
    ``cpu_us`` (this process's CPU per call while they were in flight) to ``figures``."""
    figures["seq_p50_ms"].append(sequential_p50_ms(client, seconds))
    cpu, wall = time.process_time(), time.perf_counter()
    rate = in_flight_rate(client, seconds)
    calls = rate * (time.perf_counter() - wall)
    figures["calls_per_s"].append(rate)
    figures["cpu_us"].append((time.process_time() - cpu) / calls * 1e6)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.persistent_requests",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    container = ServiceContainer(Echo, Config(broker_url=args.broker, concurrency=10))
    container.start()
    results: dict[str, dict[str, list[float]]] = {
        mode: {"seq_p50_ms": [], "calls_per_s": []} for mode in ("persistent", "transient")}
    modes: dict[str, Callable[[], Any]] = {"persistent": nullcontext, "transient": transient_requests}
    try:
        with ClusterRpcClient(args.broker, timeout=30) as client:
            client.call(Echo.name, "echo", "warm-up")
            for _ in range(args.rounds):
                for mode, patch in modes.items():
                    with patch():
                        results[mode]["seq_p50_ms"].append(sequential_p50_ms(client, args.seconds))
                        results[mode]["calls_per_s"].append(in_flight_rate(client, args.seconds))
    finally:
        container.stop()
    for mode, figures in results.items():
        print(f"{mode:10}  sequential p50 {statistics.median(figures['seq_p50_ms']):.3f} ms   "
              f"100 in flight {statistics.median(figures['calls_per_s']):,.0f} calls/s   "
              f"(medians of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
