"""A plain ClusterRpcClient counts its calls once handed to a MetricsServer (the documented switch)."""

from __future__ import annotations

import pytest

from amqprpc import ClusterRpcClient, Config, RemoteError, ServiceContainer, rpc
from amqprpc.metrics.server import MetricsServer

from .test_metrics import scrape, value


class Sums:
    name = "client-metrics-sums"

    @rpc
    def add(self, a: int, b: int) -> int:
        return a + b

    @rpc
    def fail(self) -> None:
        raise ValueError("no")


def test_a_plain_client_counts_its_calls_by_outcome():
    config = Config(broker_url="memory://")
    container = ServiceContainer(Sums, config)
    container.start()
    server = MetricsServer(0, host="127.0.0.1")
    server.start()
    try:
        with ClusterRpcClient(config=config, timeout=5) as client:
            server.watch_client(client)
            assert client.call(Sums.name, "add", 1, 2) == 3
            assert client.call(Sums.name, "add", 2, 2) == 4
            with pytest.raises(RemoteError):
                client.call(Sums.name, "fail")
        got = scrape(server.port)
        calls = "amqprpc_client_calls_total"
        assert value(got, calls, service=Sums.name, method="add", outcome="ok") == 2
        assert value(got, calls, service=Sums.name, method="fail", outcome="error") == 1
    finally:
        server.stop()
        container.stop()
