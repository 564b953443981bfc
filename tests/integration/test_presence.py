"""A stopped service fails calls fast with ServiceUnavailable; a never-run one with UnknownService.

Every call here has a 30 s timeout of its own and the test a much shorter pytest timeout:
a call that waited out its deadline would fail the test by the timeout, not by a clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from amqprpc import (
    AsyncRpcClient,
    ClusterRpcClient,
    Config,
    RpcProxy,
    ServiceUnavailable,
    UnknownService,
    rpc,
)
from http_bridge.errors import map_error

pytestmark = pytest.mark.integration

LONG = 30.0  # every call's own timeout: far beyond the tests' pytest timeouts


class Greeter:
    name = "greeter"

    @rpc
    def hello(self, name: str) -> str:
        return f"Hello, {name}!"

    @rpc
    def slow(self, seconds: float) -> str:
        threading.Event().wait(seconds)  # a handler that outlasts the presence grace
        return "done"


def _service(unique_name: Any, cls: type = Greeter) -> type:
    return type(cls.__name__, (cls,), {"name": unique_name("greeter")})


@pytest.fixture
def stopped(container_factory: Any, unique_name: Any, amqp_uri: str) -> str:
    """A service that ran once (answered a call) and was stopped: its durable queue stays."""
    service = _service(unique_name)
    container = container_factory(service)
    with ClusterRpcClient(amqp_uri, timeout=LONG) as client:
        assert client.call(service.name, "hello", "Ann") == "Hello, Ann!"
    container.stop()
    return str(service.name)


@pytest.mark.timeout(15)
def test_never_run_service_is_unknown_at_once(amqp_uri: str, unique_name: Any) -> None:
    with ClusterRpcClient(amqp_uri, timeout=LONG) as client, pytest.raises(UnknownService):
        client.call(unique_name("nobody"), "hello", "Ann")


@pytest.mark.timeout(15)
def test_R2_stopped_service_fails_fast_for_the_sync_client(stopped: str, amqp_uri: str) -> None:
    with ClusterRpcClient(amqp_uri, timeout=LONG) as client:
        futures = [client.call_async(stopped, "hello", str(i)) for i in range(5)]
        for future in futures:  # one question for all of them, each its own error
            with pytest.raises(ServiceUnavailable) as raised:
                future.result()
            assert raised.value.service == stopped
        assert client._caller.pending_count() == 0
    assert map_error(raised.value).status == 503  # the bridge maps it like UnknownService


@pytest.mark.timeout(15)
def test_R2_stopped_service_fails_fast_for_the_async_client(stopped: str, amqp_uri: str) -> None:
    async def main() -> None:
        async with AsyncRpcClient(amqp_uri, timeout=LONG) as client:
            with pytest.raises(ServiceUnavailable):
                await client.call(stopped, "hello", "Ann")

    asyncio.run(main())


@pytest.mark.timeout(20)
def test_a_client_that_saw_the_service_gives_it_a_moment_then_fails(
        container_factory: Any, unique_name: Any, amqp_uri: str) -> None:
    """A reply a moment ago means a restart may be under way: patience, then the error."""
    service = _service(unique_name)
    container = container_factory(service)
    patient = Config(rpc_presence_patience=3.0)  # the default 30 s would outlast the test
    with ClusterRpcClient(amqp_uri, config=patient, timeout=LONG) as client:
        assert client.call(service.name, "hello", "Ann") == "Hello, Ann!"
        container.stop()
        with pytest.raises(ServiceUnavailable):
            client.call(service.name, "hello", "Bob")


@pytest.mark.timeout(20)
def test_R2_stopped_service_fails_fast_for_rpc_proxy(stopped: str, container_factory: Any,
                                                  unique_name: Any, amqp_uri: str) -> None:
    class Front:
        name = unique_name("front")
        greeter = RpcProxy(stopped, timeout=LONG)

        @rpc
        def greet(self, name: str) -> str:
            try:
                return str(self.greeter.hello(name))
            except ServiceUnavailable as exc:
                return f"unavailable: {exc.service}"

    container_factory(Front)
    with ClusterRpcClient(amqp_uri, timeout=LONG) as client:
        assert client.call(Front.name, "greet", "Ann") == f"unavailable: {stopped}"


@pytest.mark.timeout(30)
def test_R2_cli_call_of_a_stopped_service(stopped: str, amqp_uri: str) -> None:
    env = {**os.environ, "AMQPRPC_BROKER_URL": amqp_uri}
    done = subprocess.run([sys.executable, "-m", "amqprpc.cli", "call", f"{stopped}.hello",
                           json.dumps({"name": "Ann"}), "--timeout", str(LONG)],
                          env=env, capture_output=True, text=True, timeout=25)
    assert done.returncode == 1
    assert done.stderr.startswith("ServiceUnavailable:") and "Traceback" not in done.stderr


@pytest.mark.timeout(20)
def test_a_slow_handler_is_not_taken_for_an_absent_service(container_factory: Any,
                                                           unique_name: Any, amqp_uri: str) -> None:
    service = _service(unique_name)
    container_factory(service)
    with ClusterRpcClient(amqp_uri, timeout=LONG) as client:
        assert client.call(service.name, "slow", 2.5) == "done"  # asked about, and present
