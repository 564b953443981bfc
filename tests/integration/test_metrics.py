"""Worker metrics on RabbitMQ: ``/metrics`` of a real worker after a known mix of calls."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import urllib.error

import pytest

from amqprpc import ClusterRpcClient, Config, rpc
from amqprpc.runner import ServiceRunner

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


def test_the_backlog_of_a_burst_against_two_workers_sums_to_what_is_queued(broker_uri: str,
                                                                          unique_name) -> None:
    """12 calls, two workers that each hold 2 (concurrency 2) running until released.

    The broker has 8 ready and 4 unacked; each worker reports 8 / 2 + 2, so the sum is 12.
    """
    service = unique_name("burst")
    release = threading.Event()

    class Slow:
        name = service

        @rpc
        def work(self, n: int) -> int:
            release.wait(30)
            return n

    config = Config(broker_url=broker_uri, concurrency=2)
    runners = [ServiceRunner(config, metrics_port=0) for _ in range(2)]
    for runner in runners:
        runner.add_service(Slow)
        runner.start()
    try:
        with ClusterRpcClient(config=config, timeout=30) as client:
            futures = [client.call_async(service, "work", n) for n in range(12)]
            wait_until(lambda: all(r.containers[0].in_flight == 2 for r in runners),
                       "both workers holding a full prefetch")
            ports = [r.metrics.port for r in runners if r.metrics is not None]
            scraped = [scrape(port) for port in ports]
            backlog = sum(value(s, "amqprpc_service_backlog", service=service) for s in scraped)
            capacity = sum(value(s, "amqprpc_service_capacity", service=service) for s in scraped)
            assert abs(backlog - 12) <= len(runners)  # the bound docs/observability.md states
            assert capacity == 4
            release.set()
            assert sorted(f.result() for f in futures) == list(range(12))
    finally:
        release.set()
        for runner in runners:
            runner.stop()
