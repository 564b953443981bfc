"""Worker metrics on RabbitMQ: ``/metrics`` of a real worker after a known mix of calls."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error

import pytest

from amqprpc import ClusterRpcClient, Config

from ..unit.test_metrics import run_scenario, scrape, value
from ..waiting import wait_until

pytestmark = pytest.mark.integration


def test_counters_match_the_calls_exactly_on_rabbitmq(broker_uri: str, unique_name) -> None:
    run_scenario(Config(broker_url=broker_uri), unique_name("metered"), calls=7, errors=4)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_amqprpc_run_serves_metrics_on_its_port(broker_uri: str, unique_name, tmp_path) -> None:
    service = unique_name("runmetered")
    (tmp_path / "metered_app.py").write_text(
        "from amqprpc import rpc\n"
        f"class S:\n    name = {service!r}\n    @rpc\n    def f(self, n): return n\n")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    worker = subprocess.Popen([sys.executable, "-m", "amqprpc", "run", "metered_app",
                               "--broker", broker_uri, "--metrics-port", str(port)],
                              env=env, cwd=tmp_path)
    try:
        def serving() -> bool:
            try:
                return value(scrape(port), "amqprpc_connection_up", service=service) == 1
            except (urllib.error.URLError, ConnectionError):
                return False

        wait_until(serving, "the worker's /metrics", timeout=30)
        with ClusterRpcClient(config=Config(broker_url=broker_uri), timeout=10) as client:
            for n in range(3):
                assert client.call(service, "f", n) == n
        got = scrape(port)
        assert value(got, "amqprpc_rpc_requests_total", service=service, method="f", outcome="ok") == 3
    finally:
        worker.terminate()
        assert worker.wait(30) == 0
