"""What worker metrics cost on the call path: the same calls with them on and off.

``python -m benchmarks.metrics_cost [--broker URL] [--rounds 6] [--seconds 2]``

With metrics on (issue #12, ``amqprpc run --metrics-port``) the worker runs the metrics
extension's three hooks per call (two counter/histogram updates, the in-flight gauge) and
the client counts each call's outcome from a done callback. This measures that with the
harness of ``benchmarks.persistent_requests`` (one worker in this process, sequential p50
and 100 calls in flight, plus the process's CPU time per call in flight, which other
load on the machine disturbs less than throughput), the two modes interleaved round by
round on one client, which goes first alternating. "off" takes the extension out of the
container's dependencies and unsets the client's ``on_call``: exactly what a runner without
a metrics port leaves. The /metrics server runs throughout (nothing scrapes it).
"""

from __future__ import annotations

import argparse
import statistics

from amqprpc import ClusterRpcClient, Config, ServiceContainer
from amqprpc.metrics.extension import ATTR
from amqprpc.metrics.server import MetricsServer

from .persistent_requests import Echo, measure_round


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--side", choices=("both", "worker", "client"), default="both",
                        help="Which side's metrics to switch on and off (the other stays off).")
    args = parser.parse_args(argv)
    container = ServiceContainer(Echo, Config(broker_url=args.broker, concurrency=10))
    server = MetricsServer(0, host="127.0.0.1")
    server.install(container)
    extension = container.dependencies[ATTR]
    container.start()
    server.start()
    results: dict[str, dict[str, list[float]]] = {
        mode: {"seq_p50_ms": [], "calls_per_s": [], "cpu_us": []} for mode in ("on", "off")}
    try:
        with ClusterRpcClient(args.broker, timeout=30) as client:
            server.metrics.client_calls.watch_client(client)
            on_call = client._caller.on_call
            client.call(Echo.name, "echo", "warm-up")
            for round_ in range(args.rounds):
                for mode in ("on", "off") if round_ % 2 == 0 else ("off", "on"):  # no order bias
                    worker_on = mode == "on" and args.side in ("both", "worker")
                    client_on = mode == "on" and args.side in ("both", "client")
                    if worker_on:
                        container.dependencies[ATTR] = extension
                    else:
                        container.dependencies.pop(ATTR, None)
                    client._caller.on_call = on_call if client_on else None
                    measure_round(client, args.seconds, results[mode])
    finally:
        container.dependencies[ATTR] = extension  # so stop() unwatches it
        container.stop()
        server.stop()
    for mode, figures in results.items():
        p50 = statistics.median(figures["seq_p50_ms"])
        print(f"metrics {mode:3} ({args.side})  sequential p50 {p50:.3f} ms   "
              f"100 in flight {statistics.median(figures['calls_per_s']):,.0f} calls/s, "
              f"{statistics.median(figures['cpu_us']):.0f} us CPU/call   "
              f"(medians of {args.rounds} rounds; rounds: "
              f"{', '.join(f'{v:,.0f}' for v in figures['calls_per_s'])})")


if __name__ == "__main__":
    main()
