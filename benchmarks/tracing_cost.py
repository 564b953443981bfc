"""What tracing costs: the same calls with OpenTelemetry spans on and off, in one run.

``python -m benchmarks.tracing_cost [--broker URL] [--rounds 5] [--seconds 3]``

Two echo services in this process, one served with ``tracing=1`` (a SERVER span per call) and
one without, and a client for each (the traced one makes a CLIENT span per call and sends
``traceparent``). The SDK runs with the default sampler (parent-based always-on: every call
sampled) and a batch processor in front of an exporter that drops the spans, so the figure is
the cost of making, propagating and ending spans, not of shipping them. Sequential p50 and
100 calls in flight, the modes interleaved round by round, which goes first alternating.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from amqprpc import ClusterRpcClient, Config, rpc
from amqprpc.runner import service_container


class DropSpans(SpanExporter):
    """An exporter that exports nothing: the cost measured stops at the exporter."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def echo_service(name: str) -> type:
    class Echo:
        @rpc
        def echo(self, value: Any) -> Any:
            return value

    Echo.name = name  # type: ignore[attr-defined]
    return Echo


def sequential_p50_ms(client: ClusterRpcClient, service: str, seconds: float) -> float:
    timings = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        client.call(service, "echo", "x")
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def in_flight_rate(client: ClusterRpcClient, service: str, seconds: float, window: int = 100) -> float:
    done = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        futures = [client.call_async(service, "echo", "x") for _ in range(window)]
        for future in futures:
            future.result()
        done += window
    return done / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    trace.set_tracer_provider(provider)
    suffix = uuid.uuid4().hex[:8]
    configs = {"off": Config(broker_url=args.broker, concurrency=10),
               "on": Config(broker_url=args.broker, concurrency=10, tracing=1)}
    names = {mode: f"bench-trace-{mode}-{suffix}" for mode in configs}
    containers = [service_container(echo_service(names[mode]), configs[mode]) for mode in configs]
    for container in containers:
        container.start()
    clients = {mode: ClusterRpcClient(config=configs[mode], timeout=30).start() for mode in configs}
    results: dict[str, dict[str, list[float]]] = {
        mode: {"seq_p50_ms": [], "calls_per_s": []} for mode in configs}
    try:
        for mode, client in clients.items():
            client.call(names[mode], "echo", "warm-up")
        for round_ in range(args.rounds):
            for mode in ("on", "off") if round_ % 2 == 0 else ("off", "on"):  # no order bias
                client = clients[mode]
                results[mode]["seq_p50_ms"].append(sequential_p50_ms(client, names[mode], args.seconds))
                results[mode]["calls_per_s"].append(in_flight_rate(client, names[mode], args.seconds))
    finally:
        for client in clients.values():
            client.stop()
        for container in containers:
            container.stop()
        provider.shutdown()
    for mode, figures in results.items():
        print(f"tracing {mode:3}  sequential p50 {statistics.median(figures['seq_p50_ms']):.3f} ms   "
              f"100 in flight {statistics.median(figures['calls_per_s']):,.0f} calls/s   "
              f"(medians of {args.rounds} rounds; per round: "
              f"{', '.join(f'{x:,.0f}' for x in figures['calls_per_s'])})")


if __name__ == "__main__":
    main()
