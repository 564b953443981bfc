"""The bridge's metrics on prometheus-client: its names as before, plus the client calls."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from amqprpc import ClusterRpcClient, Config, UnknownService, rpc
from amqprpc.runner import ServiceRunner
from http_bridge.metrics import BridgeMetrics


class Echo:
    name = "echo"

    @rpc
    def back(self, value: str) -> str:
        return value


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_requests_latency_and_in_flight_keep_their_names() -> None:
    metrics = BridgeMetrics(lambda: 3)
    metrics.observe("GET /users/{user_id}", 200, 0.002)
    metrics.observe("GET /users/{user_id}", 200, 0.2)
    metrics.observe("unmatched", 404, 0.0001)
    got = samples(metrics.render())
    route = (("route", "GET /users/{user_id}"),)
    assert got[("amqprpc_bridge_requests_total", (*route, ("status", "200")))] == 2
    assert got[("amqprpc_bridge_requests_total", (("route", "unmatched"), ("status", "404")))] == 1
    assert got[("amqprpc_bridge_request_duration_seconds_count", route)] == 2
    assert got[("amqprpc_bridge_request_duration_seconds_bucket", (("le", "0.0025"), *route))] == 1
    assert got[("amqprpc_bridge_calls_in_flight", ())] == 3


def test_the_calls_a_client_makes_are_counted_by_outcome(request: pytest.FixtureRequest) -> None:
    config = Config(broker_url=f"memory://{request.node.name}")
    runner = ServiceRunner(config)
    runner.add_service(Echo)
    runner.start()
    metrics = BridgeMetrics(lambda: 0)
    try:
        with ClusterRpcClient(config=config, timeout=5) as client:
            metrics.watch_client(client)
            assert client.call("echo", "back", "a") == "a"
            assert client.call("echo", "back", "b") == "b"
            with pytest.raises(UnknownService):
                client.call("nobody", "back", "c")
    finally:
        runner.stop()
    got = samples(metrics.render())
    labels = (("method", "back"), ("outcome", "ok"), ("service", "echo"))
    assert got[("amqprpc_client_calls_total", labels)] == 2
    unavailable = (("method", "back"), ("outcome", "unavailable"), ("service", "nobody"))
    assert got[("amqprpc_client_calls_total", unavailable)] == 1
