"""Circuit breakers against the real broker and real `amqprpc run` workers, and at the bridge.

The breaker opens on timeouts, then answers without publishing (counted on the queue by the
broker), closes once a worker is back; no consumer at all opens it at once; the bridge
answers 503 with Retry-After while it is open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import threading
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from amqprpc import CircuitOpen, ClusterRpcClient, Config, RpcTimeout, ServiceUnavailable, rpc
from amqprpc.resilience.breaker import State
from amqprpc.testing.pytest import broker_admin
from amqprpc.transport import Outgoing
from http_bridge import BridgeSettings, create_app
from http_bridge.auth import hash_key
from tests.waiting import wait_until

from .worker_processes import call_when_ready, workers  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

BREAKER = {"breaker": 1, "breaker_min_calls": 3, "breaker_failure_ratio": 0.5,
           "breaker_cooldown": 1.0, "breaker_half_open_calls": 1}


def queue_counts(amqp_uri: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``, by a passive declare."""
    with broker_admin(amqp_uri) as channel:
        _, messages, consumers = channel.queue_declare(queue, passive=True)
    return messages, consumers


def test_opens_on_timeouts_fails_fast_without_publishing_and_closes_when_a_worker_is_back(
        workers, amqp_uri, caplog):  # noqa: F811
    service, queue = workers.service, f"rpc-{workers.service}"
    worker = workers("--concurrency", "1")
    config = Config(broker_url=amqp_uri, **BREAKER)
    caplog.set_level(logging.INFO, "amqprpc.resilience.breaker")
    with ClusterRpcClient(amqp_uri) as plain:  # UnknownService until the queue is there
        call_when_ready(plain, service, "echo", 1)
    with ClusterRpcClient(config=config) as client:
        assert client.call(service, "echo", 1) == 1
        worker.stop(signal.SIGTERM)
        wait_until(lambda: queue_counts(amqp_uri, queue)[1] == 0, "the worker to stop consuming")
        # Seen alive a moment ago: presence gives it its patience, so the calls time out.
        futures = [client.call_async(service, "echo", n, _timeout=0.3) for n in range(3)]
        for future in futures:
            with pytest.raises(RpcTimeout):
                future.result()
        assert client.resilience is not None and client.resilience.breakers is not None
        breaker = client.resilience.breakers.get(service, "echo")
        assert breaker.state is State.OPEN

        with broker_admin(amqp_uri) as channel:
            channel.queue_purge(queue)
        durations = []
        for n in range(200):
            started = time.perf_counter()
            with pytest.raises(CircuitOpen):
                client.call(service, "echo", n)
            durations.append(time.perf_counter() - started)
        durations.sort()
        print(f"open-state calls: p50 {durations[100] * 1e6:.1f} us, max {durations[-1] * 1e6:.1f} us")
        assert durations[100] < 0.001  # well under a millisecond (a few microseconds here)
        # A sentinel after them on the same channel: once it is in the queue, any request
        # published before it would be there too.
        client._connection.publish(Outgoing("", queue, b"{}", {"content_type": "application/json"}))
        wait_until(lambda: queue_counts(amqp_uri, queue)[0] >= 1, "the sentinel to arrive")
        assert queue_counts(amqp_uri, queue)[0] == 1, "a request was published while open"
        with broker_admin(amqp_uri) as channel:
            channel.queue_purge(queue)

        workers("--concurrency", "1")
        wait_until(lambda: queue_counts(amqp_uri, queue)[1] == 1, "the new worker to consume")

        def answered() -> bool:
            try:
                return client.call(service, "echo", "back", _timeout=5) == "back"
            except CircuitOpen:
                return False

        wait_until(answered, "the breaker to let a trial through and close", timeout=15, poll=0.1)
        assert breaker.state is State.CLOSED
    transitions = [r.getMessage() for r in caplog.records if "circuit breaker" in r.getMessage()]
    assert any("from=closed to=open" in line for line in transitions)
    assert any("from=open to=half_open" in line for line in transitions)
    assert any("from=half_open to=closed" in line for line in transitions)


def test_no_consumer_opens_it_at_once(workers, amqp_uri):  # noqa: F811
    service, queue = workers.service, f"rpc-{workers.service}"
    worker = workers()
    with ClusterRpcClient(amqp_uri) as plain:
        call_when_ready(plain, service, "echo", 1)
    worker.stop(signal.SIGTERM)
    wait_until(lambda: queue_counts(amqp_uri, queue)[1] == 0, "the worker to stop consuming")
    config = Config(broker_url=amqp_uri, discovery_interval=0.3,
                    **{**BREAKER, "breaker_cooldown": 30.0})
    with ClusterRpcClient(config=config, name="breaker-cli-test") as client:  # never saw it alive
        with pytest.raises(ServiceUnavailable) as first:
            client.call(service, "echo", 1, _timeout=10)
        assert not isinstance(first.value, CircuitOpen)
        assert client.resilience is not None and client.resilience.breakers is not None
        assert client.resilience.breakers.get(service, "echo").state is State.OPEN  # after 1 call
        started = time.perf_counter()
        with pytest.raises(CircuitOpen):
            client.call(service, "echo", 2)
        assert time.perf_counter() - started < 0.05
        # Another process sees it: `amqprpc services` hears the client's announcements.
        done = subprocess.run([sys.executable, "-m", "amqprpc.cli", "services", "--broker", amqp_uri,
                               "--json", "--wait", "1"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr[-2000:]
        [listed] = [entry for entry in json.loads(done.stdout) if entry["service"] == service]
        [breaker] = [b for b in listed["breakers"] if b["owner"] == "breaker-cli-test"]
        assert (breaker["state"], breaker["method"]) == ("open", "*")
        assert "no consumer" in breaker["reason"]


# ---------------------------------------------------------------------- the bridge

KEY = "ak_breaker-admin"
INTERVAL = 0.2


def make_service(name: str, release: threading.Event) -> type:
    class Slow:
        @rpc(http=True)
        def slow(self) -> str:
            release.wait(5)
            return "late"

    Slow.name = name
    return Slow


def test_the_bridge_answers_503_with_retry_after_while_open(container_factory, unique_name,
                                                             amqp_uri, tmp_path):
    name = unique_name("slowpoke")
    release = threading.Event()
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[keys]]\nsha256 = "{hash_key(KEY)}"\nprincipal = "ops"\nroles = []\n')
    settings = BridgeSettings(api_keys_file=str(keys), deadlines={f"{name}.slow": 0.2})
    config = Config(broker_url=amqp_uri, discovery_interval=INTERVAL, rpc_timeout=5,
                    **{**BREAKER, "breaker_cooldown": 7.0})
    headers = {"X-API-Key": KEY}

    async def scenario(client: TestClient) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: container_factory(
            make_service(name, release), discovery_interval=INTERVAL, concurrency=1))
        path = f"/rpc/{name}/slow"
        deadline = time.monotonic() + 10
        statuses: list[int] = []
        while time.monotonic() < deadline:
            response = await client.post(path, json={}, headers=headers)
            await response.read()
            statuses.append(response.status)
            if response.status == 503 and response.headers.get("Retry-After"):
                break
            await asyncio.sleep(0.05)  # the route is not live yet (404), or a 504 timeout
        assert statuses[-1] == 503, statuses
        assert 504 in statuses
        body = await response.json()
        assert body["error"]["code"] == "circuit_open", body
        assert 1 <= int(response.headers["Retry-After"]) <= 7
        started = time.monotonic()
        again = await client.post(path, json={}, headers=headers)
        assert again.status == 503 and time.monotonic() - started < 0.5
        release.set()

    async def main() -> None:
        app = create_app(config, settings=settings)
        async with TestClient(TestServer(app)) as client:
            await asyncio.wait_for(scenario(client), timeout=40)

    asyncio.run(main())
