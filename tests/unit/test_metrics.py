"""Worker metrics (amqprpc.metrics) on ``memory://``: exact counts after a known mix of calls.

``run_scenario`` is also what tests/integration/test_metrics.py runs on RabbitMQ.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from amqprpc import ClusterRpcClient, Config, RemoteError, RpcProxy, event_handler, rpc
from amqprpc.dependencies.events import EventDispatcher
from amqprpc.exceptions import MethodNotFound
from amqprpc.messages import build_request
from amqprpc.runner import ServiceRunner
from amqprpc.serialization import codec_named
from amqprpc.transport import create_transport

from ..waiting import wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def counter_named(service: str) -> type:
    class Counter:
        name = service
        dispatch = EventDispatcher()
        peer = RpcProxy(service)  # a nested call to itself: counted as a client call

        @rpc
        def ok(self, n: int) -> int:
            return n

        @rpc
        def fail(self) -> None:
            raise ValueError("no")

        @rpc
        def nested(self) -> int:
            result: int = self.peer.ok(7)
            return result

        @rpc
        def shout(self) -> None:
            self.dispatch("shouted", {})

    return Counter


def listener_of(source: str) -> type:
    class Listener:
        name = f"{source}-listener"

        @event_handler(source, "shouted", max_attempts=1)
        def on_shouted(self, payload: dict[str, str]) -> None:
            raise RuntimeError("cannot handle it")

    return Listener


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics`` on ``port``, by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def send_expired(config: Config, service: str, method: str) -> None:
    """A request whose caller's deadline passed before any worker took it."""
    transport = create_transport(config, name=f"expired-{uuid.uuid4().hex[:6]}")
    transport.start()
    try:
        done: list[BaseException | None] = []
        transport.publish(build_request(
            service, method, [], {}, codec=codec_named("json"), exchange=config.rpc_exchange,
            reply_to="nobody", correlation_id=str(uuid.uuid4()), timeout=5.0,
            now=time.time() - 60), on_confirm=done.append)
        wait_until(lambda: done, "the expired request's confirm", timeout=10)
    finally:
        transport.stop()


def run_scenario(config: Config, service: str, calls: int = 5, errors: int = 3) -> None:
    """``calls`` ok, ``errors`` failing, one nested, one unknown method, one expired, one
    event that dead-letters; then check every counter exactly."""
    cls = counter_named(service)
    runner = ServiceRunner(config, metrics_port=0)
    runner.add_service(cls)
    runner.add_service(listener_of(service))
    runner.start()
    try:
        assert runner.metrics is not None
        port = runner.metrics.port
        with ClusterRpcClient(config=config, timeout=10) as client:
            for n in range(calls):
                assert client.call(service, "ok", n) == n
            for _ in range(errors):
                with pytest.raises(RemoteError):
                    client.call(service, "fail")
            assert client.call(service, "nested") == 7
            with pytest.raises(MethodNotFound):
                client.call(service, "missing")
            client.call(service, "shout")
        send_expired(config, service, "ok")
        listener = f"{service}-listener"

        def settled() -> Samples | None:
            got = scrape(port)
            done = (value(got, "amqprpc_rpc_requests_total", service=service, method="ok",
                          outcome="expired") == 1
                    and value(got, "amqprpc_events_dead_lettered_total", service=listener,
                              handler="on_shouted") == 1
                    and value(got, "amqprpc_rpc_in_flight", service=service) == 0)
            return got if done else None

        got = wait_until(settled, "the expired call, the dead letter and no call in flight")
        requests = "amqprpc_rpc_requests_total"
        assert value(got, requests, service=service, method="ok", outcome="ok") == calls + 1
        assert value(got, requests, service=service, method="fail", outcome="error") == errors
        assert value(got, requests, service=service, method="nested", outcome="ok") == 1
        assert value(got, requests, service=service, method="<unknown>", outcome="rejected") == 1
        assert value(got, "amqprpc_rpc_request_duration_seconds_count", service=service,
                     method="ok") == calls + 1
        assert value(got, "amqprpc_events_handled_total", service=listener, handler="on_shouted",
                     outcome="error") == 1
        assert value(got, "amqprpc_client_calls_total", service=service, method="ok",
                     outcome="ok") == 1  # the nested call, made by the worker
        assert value(got, "amqprpc_connection_up", service=service) == 1
        assert value(got, "amqprpc_connection_reconnects_total", service=service) == 0
        assert value(got, "amqprpc_service_capacity", service=service) == config.effective_prefetch
        assert value(got, "amqprpc_service_backlog", service=service) == 0
    finally:
        runner.stop()
    with pytest.raises(OSError):
        scrape(port)  # the runner stopped its server


def test_counters_match_the_calls_exactly(request: pytest.FixtureRequest) -> None:
    run_scenario(Config(broker_url=f"memory://{request.node.name}"), "counter")


def test_metrics_port_in_config_turns_metrics_on() -> None:
    assert ServiceRunner(Config(broker_url="memory://off")).metrics is None
    runner = ServiceRunner(Config(broker_url="memory://on", metrics_port=9999))
    assert runner.metrics is not None and runner.metrics.port == 9999


def test_with_metrics_off_prometheus_client_is_not_imported() -> None:
    code = ("import sys\n"
            "from amqprpc import ClusterRpcClient, Config, rpc\n"
            "from amqprpc.runner import ServiceRunner\n"
            "class S:\n    name = 's'\n    @rpc\n    def f(self): return 1\n"
            "config = Config(broker_url='memory://off')\n"
            "runner = ServiceRunner(config); runner.add_service(S); runner.start()\n"
            "with ClusterRpcClient(config=config, timeout=5) as c: assert c.call('s', 'f') == 1\n"
            "runner.stop()\n"
            "assert 'prometheus_client' not in sys.modules, 'imported'\n"
            "assert 'amqprpc.metrics' not in sys.modules, 'imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
