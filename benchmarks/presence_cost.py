"""What consumer-presence tracking costs on the normal path: the same calls with it on and off.

``python -m benchmarks.presence_cost [--broker URL] [--rounds 5] [--seconds 3]``

Since issue #20 a caller notices a stopped service (``amqprpc/presence.py``): every reply
records that its service is alive (one dict store), and every deadline sweep (each 50 ms
while calls are pending) looks for calls waiting longer than a second. This measures that
cost with the harness of ``benchmarks.persistent_requests`` (one worker in this process,
sequential p50 and 100 calls in flight), the two modes interleaved round by round on one
client, which goes first alternating; "off" detaches the client's presence tracker, nothing else changes.
"""

from __future__ import annotations

import argparse
import statistics

from amqprpc import ClusterRpcClient, Config, ServiceContainer

from .persistent_requests import Echo, in_flight_rate, sequential_p50_ms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.presence_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    container = ServiceContainer(Echo, Config(broker_url=args.broker, concurrency=10))
    container.start()
    results: dict[str, dict[str, list[float]]] = {
        mode: {"seq_p50_ms": [], "calls_per_s": []} for mode in ("on", "off")}
    try:
        with ClusterRpcClient(args.broker, timeout=30) as client:
            tracker = client._caller.presence
            client.call(Echo.name, "echo", "warm-up")
            for round_ in range(args.rounds):
                for mode in ("on", "off") if round_ % 2 == 0 else ("off", "on"):  # no order bias
                    client._caller.presence = tracker if mode == "on" else None
                    results[mode]["seq_p50_ms"].append(sequential_p50_ms(client, args.seconds))
                    results[mode]["calls_per_s"].append(in_flight_rate(client, args.seconds))
    finally:
        container.stop()
    for mode, figures in results.items():
        print(f"presence {mode:3}  sequential p50 {statistics.median(figures['seq_p50_ms']):.3f} ms   "
              f"100 in flight {statistics.median(figures['calls_per_s']):,.0f} calls/s   "
              f"(medians of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
