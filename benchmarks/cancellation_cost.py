"""What cancellation costs on the normal path: the same calls with it on and off.

``python -m benchmarks.cancellation_cost [--broker URL] [--rounds 6] [--seconds 2]``

With cancellation on (the default) a call costs the caller nothing more unless it is given
up (no header, no publish), and the worker a ``CancelToken`` per request plus a dict insert
and delete (``CancelListener.track``/``untrack``). This measures that with the harness of
``benchmarks.persistent_requests`` (one worker in this process, sequential p50 and 100
calls in flight, plus the process's CPU time per call), the two modes interleaved round by
round on one client, which goes first alternating. "off" unsets the consumer's listener and
the caller's sender: exactly what ``cancellation = 0`` leaves (the cancel queue stays bound;
no cancel is sent during the run).
"""

from __future__ import annotations

import argparse
import statistics

from amqprpc import ClusterRpcClient, Config, ServiceContainer
from amqprpc.entrypoints.rpc import RpcConsumer

from .persistent_requests import Echo, measure_round


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cancellation_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    container = ServiceContainer(Echo, Config(broker_url=args.broker, concurrency=10))
    container.start()
    consumer = container.shared_extension(RpcConsumer, RpcConsumer)
    listener = consumer._cancels
    assert listener is not None, "cancellation is off in this config"
    results: dict[str, dict[str, list[float]]] = {
        mode: {"seq_p50_ms": [], "calls_per_s": [], "cpu_us": []} for mode in ("on", "off")}
    try:
        with ClusterRpcClient(args.broker, timeout=30) as client:
            sender = client._caller._cancels
            client.call(Echo.name, "echo", "warm-up")
            for round_ in range(args.rounds):
                for mode in ("on", "off") if round_ % 2 == 0 else ("off", "on"):  # no order bias
                    consumer._cancels = listener if mode == "on" else None
                    client._caller._cancels = sender if mode == "on" else None
                    measure_round(client, args.seconds, results[mode])
    finally:
        container.stop()
    for mode, figures in results.items():
        p50 = statistics.median(figures["seq_p50_ms"])
        print(f"cancellation {mode:3}  sequential p50 {p50:.3f} ms   "
              f"100 in flight {statistics.median(figures['calls_per_s']):,.0f} calls/s, "
              f"{statistics.median(figures['cpu_us']):.0f} us CPU/call   "
              f"(medians of {args.rounds} rounds; rounds: "
              f"{', '.join(f'{v:,.0f}' for v in figures['calls_per_s'])})")
    ratios = {name: statistics.median(results["on"][name]) / statistics.median(results["off"][name])
              for name in ("seq_p50_ms", "calls_per_s", "cpu_us")}
    print(f"on/off: sequential p50 {ratios['seq_p50_ms']:.3f}, calls/s {ratios['calls_per_s']:.3f}, "
          f"CPU/call {ratios['cpu_us']:.3f}")

if __name__ == "__main__":
    main()
