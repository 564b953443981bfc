"""What canary routing costs a caller: the same calls with no router, and with a 10 % rule.

``python -m benchmarks.routing_cost [--broker URL] [--rounds 6] [--seconds 2]``

Two workers of one service run in this process, a stable one (``--version 2.0.0``) and a
canary (``--version 2.1.0 --canary``); the client calls with the harness of
``benchmarks.persistent_requests`` (sequential p50, 100 calls in flight, CPU per call), in
three modes interleaved round by round, in a rotating order: "off" (the caller's router
unset: what a caller with no rule and ``routing_updates = 0`` runs), "choice" (a rule with
weight 1e-9: the whole choice and the background liveness questions on every call, but
every call on the shared queue) and "10 %" (``[routing.<svc>] canary = "2.1.0", weight =
0.1``: a tenth of the calls on the canary's queue, served by a second container in this
process). "choice" against "off" is the caller's cost; "10 %" against "choice" adds a
second busy consumer in this process, a cost of the in-process setup more than of routing.
It also times ``Router.choose`` alone.
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit

from amqprpc import ClusterRpcClient, Config, ServiceContainer
from amqprpc.routing import Router, RouteRule

from .persistent_requests import Echo, measure_round


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.routing_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)

    router = Router({"svc": RouteRule("svc", "2.1.0", 0.1)}, lambda queue: True)
    router.choose("svc", None)
    time.sleep(0.1)  # the background answer (a benchmark, not a test)
    per_choice = min(timeit.repeat(lambda: router.choose("svc", None), number=100_000, repeat=5))
    print(f"Router.choose: {per_choice / 100_000 * 1e6:.2f} us per call (weight 0.1, not sticky)")

    config = Config(broker_url=args.broker, concurrency=10)
    stable = ServiceContainer(Echo, config.replace(service_version="2.0.0"))
    canary = ServiceContainer(Echo, config.replace(service_version="2.1.0", canary=1))
    stable.start()
    canary.start()
    routed = config.replace(extra={"routing": {Echo.name: {"canary": "2.1.0", "weight": 0.1}}})
    modes = ("off", "choice", "10 %")
    results: dict[str, dict[str, list[float]]] = {
        mode: {"seq_p50_ms": [], "calls_per_s": [], "cpu_us": []} for mode in modes}
    try:
        with ClusterRpcClient(config=routed, timeout=30) as client:
            caller = client._caller
            routers = {"off": None, "10 %": caller.router,
                       "choice": Router({Echo.name: RouteRule(Echo.name, "2.1.0", 1e-9)},
                                        lambda queue: True)}
            client.call(Echo.name, "echo", "warm-up")
            for round_ in range(args.rounds):
                for mode in modes[round_ % 3:] + modes[:round_ % 3]:  # no order bias
                    caller.router = routers[mode]
                    measure_round(client, args.seconds, results[mode])
    finally:
        stable.stop()
        canary.stop()
    for mode, figures in results.items():
        print(f"routing {mode:6}  sequential p50 {statistics.median(figures['seq_p50_ms']):.3f} ms   "
              f"100 in flight {statistics.median(figures['calls_per_s']):,.0f} calls/s, "
              f"{statistics.median(figures['cpu_us']):.0f} us CPU/call   "
              f"(medians of {args.rounds} rounds; rounds: "
              f"{', '.join(f'{v:,.0f}' for v in figures['calls_per_s'])})")
    for mode in ("choice", "10 %"):
        ratios = {name: statistics.median(results[mode][name]) / statistics.median(results["off"][name])
                  for name in ("seq_p50_ms", "calls_per_s", "cpu_us")}
        print(f"{mode}/off: sequential p50 {ratios['seq_p50_ms']:.3f}, calls/s "
              f"{ratios['calls_per_s']:.3f}, CPU/call {ratios['cpu_us']:.3f}")


if __name__ == "__main__":
    main()
