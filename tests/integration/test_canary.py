"""Canary routing on the machine's RabbitMQ (issue #17 item 2): shares, stickiness, fallback,
a live rollback, and what a stopping canary leaves behind (docs/protocol.md)."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from amqprpc import ClusterRpcClient, Config, ServiceContainer, rpc
from amqprpc.cli import main
from amqprpc.testing.pytest import broker_admin

from ..waiting import wait_until


def _service(name: str) -> type:
    class Versioned:
        config = Config()

        @rpc(http=True, public=True)  # POST /rpc/<service>/which on the bridge
        def which(self) -> str:
            return self.config.service_version or "stable"

        @rpc
        def slow(self, seconds: float) -> str:
            time.sleep(seconds)  # holds the one handler, so the rest wait in the queue
            return self.config.service_version or "stable"

    Versioned.name = name  # type: ignore[attr-defined]
    return Versioned


@pytest.fixture
def service(unique_name: Any, amqp_uri: str) -> Iterator[str]:
    name = unique_name("canary")
    yield name
    with broker_admin(amqp_uri) as channel:
        for queue in (f"rpc-{name}", f"rpc-{name}@2.1.0", f"rpc-{name}@2.0.0"):
            channel.queue_delete(queue)


@pytest.fixture
def config(amqp_uri: str) -> Config:
    return Config(broker_url=amqp_uri, concurrency=10, rpc_timeout=20)


@pytest.fixture
def workers(service: str, config: Config) -> Iterator[dict[str, ServiceContainer]]:
    cls = _service(service)
    started = {"stable": ServiceContainer(cls, config.replace(service_version="2.0.0")),
               "canary": ServiceContainer(cls, config.replace(service_version="2.1.0", canary=1))}
    for container in started.values():
        container.start()
    yield started
    for container in started.values():
        container.kill()


def _routed(config: Config, service: str, **rule: Any) -> Config:
    return config.replace(extra={"routing": {service: {"canary": "2.1.0", **rule}}})


def _shares(client: ClusterRpcClient, service: str, calls: int, **kwargs: Any) -> collections.Counter[str]:
    answers: collections.Counter[str] = collections.Counter()
    for start in range(0, calls, 100):  # 100 in flight at a time
        futures = [client.call_async(service, "which", **kwargs) for _ in range(min(100, calls - start))]
        answers.update(future.result(20) for future in futures)
    return answers


def _canary_answers(client: ClusterRpcClient, service: str) -> None:
    wait_until(lambda: "2.1.0" in _shares(client, service, 20), "a call answered by the canary")


def test_ten_percent_of_5000_calls_reach_the_canary(service, config, workers):
    with ClusterRpcClient(config=_routed(config, service, weight=0.1)) as client:
        _canary_answers(client, service)
        shares = _shares(client, service, 5000)
    assert sum(shares.values()) == 5000
    assert 400 <= shares["2.1.0"] <= 600, shares  # 10 % +- 2 %


def test_sticky_by_identity_one_user_one_version(service, config, workers):
    with ClusterRpcClient(config=_routed(config, service, weight=0.5, sticky="identity")) as client:
        _canary_answers(client, service)
        seen: dict[str, set[str]] = collections.defaultdict(set)
        for user in range(40):
            client.context["user_id"] = f"user-{user}"
            seen[f"user-{user}"].update(_shares(client, service, 10))
    assert all(len(versions) == 1 for versions in seen.values()), seen
    assert {next(iter(v)) for v in seen.values()} == {"2.0.0", "2.1.0"}  # both get users


def test_a_canary_that_dies_strands_no_call(service, config, workers):
    """Killed mid-stream: what it held and what was routed to it before callers noticed
    waits at most VERSION_QUEUE_MAX_WAIT_MS in its queue, then the stable workers answer."""
    with ClusterRpcClient(config=_routed(config, service, weight=0.5)) as client:
        _canary_answers(client, service)
        futures = [client.call_async(service, "slow", 0.02) for _ in range(200)]
        workers["canary"].kill()  # its connection drops: no consumer on its queue
        answers = collections.Counter(future.result(20) for future in futures)
        assert sum(answers.values()) == 200 and answers["2.0.0"] >= 100, answers
        wait_until(lambda: _shares(client, service, 100) == {"2.0.0": 100}, "new calls to fall back")


def test_a_stopping_canary_sends_its_queued_calls_to_the_shared_queue(service, config):
    """Nothing is stranded: the last worker of a version forwards its queue's leftovers."""
    cls = _service(service)
    stable = ServiceContainer(cls, config.replace(service_version="2.0.0"))
    canary = ServiceContainer(cls, config.replace(service_version="2.1.0", canary=1, concurrency=1))
    stable.start()
    canary.start()
    try:
        with ClusterRpcClient(config=_routed(config, service, weight=1.0)) as client:
            _canary_answers(client, service)
            futures = [client.call_async(service, "slow", 0.5) for _ in range(20)]
            with broker_admin(config.broker_url) as channel:
                wait_until(lambda: channel.queue_declare(f"rpc-{service}@2.1.0", passive=True)[1] >= 15,
                           "calls to queue up for the canary")
            assert canary.stop(grace=10)
            answers = collections.Counter(future.result(20) for future in futures)
        assert sum(answers.values()) == 20 and answers["2.0.0"] >= 15, answers
    finally:
        stable.kill()
        canary.kill()


def test_amqprpc_route_sends_a_share_live_and_off_rolls_back(service, config, workers):
    runner = CliRunner()
    with ClusterRpcClient(config=config) as client:
        assert _shares(client, service, 50) == {"2.0.0": 50}  # no rule: the canary gets nothing
        result = runner.invoke(main, ["route", service, "--canary", "2.1.0", "--weight", "1",
                                      "--broker", config.broker_url])
        assert result.exit_code == 0, result.output
        assert "100% of calls to 2.1.0" in result.output
        _canary_answers(client, service)
        result = runner.invoke(main, ["route", service, "--off", "--broker", config.broker_url])
        assert result.exit_code == 0, result.output
        router = client._caller.router
        assert router is not None
        wait_until(lambda: service not in router.rules, "the rollback to reach the caller", timeout=1.0)
        assert _shares(client, service, 100) == {"2.0.0": 100}


def test_a_bad_route_command_names_the_problem(service, config):
    result = CliRunner().invoke(main, ["route", service, "--canary", "2.1.0", "--weight", "0.1",
                                       "--sticky", "cookie", "--broker", config.broker_url])
    assert result.exit_code != 0 and "sticky must be 'identity' or 'context:<key>'" in result.output
    result = CliRunner().invoke(main, ["route", service, "--broker", config.broker_url])
    assert result.exit_code != 0 and "--canary VERSION --weight W, or --off" in result.output


def test_nameko_style_calls_keep_reaching_the_shared_queue(service, config, workers):
    """A caller that knows nothing of versions (no routing) publishes <service>.<method>."""
    with ClusterRpcClient(config=config.replace(routing_updates=0)) as client:
        assert client._caller.router is None
        assert _shares(client, service, 50) == {"2.0.0": 50}


def test_the_bridge_routes_by_a_header_and_keeps_a_session_on_one_version(service, config):
    """Through the bridge, sticky by an HTTP header: ``[bridge.context_headers]`` makes it a
    context value, the rule ``sticky = "context:session"`` hashes it (docs/protocol.md)."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from amqprpc.runner import service_container
    from http_bridge import BridgeSettings, create_app

    cls = _service(service)  # announced, as `amqprpc run` serves them: the bridge learns the route
    workers = [service_container(cls, config.replace(service_version="2.0.0")),
               service_container(cls, config.replace(service_version="2.1.0", canary=1))]
    for worker in workers:
        worker.start()

    routed = _routed(config, service, weight=0.5, sticky="context:session")
    settings = BridgeSettings(allow_anonymous=True, rate_limit=0, services=(service,),
                              context_headers={"X-Session-Id": "session"})

    async def scenario() -> dict[str, set[str]]:
        app = create_app(routed, settings=settings)
        seen: dict[str, set[str]] = collections.defaultdict(set)
        async with TestClient(TestServer(app)) as client:
            async def which(session: str) -> str:
                response = await client.post(f"/rpc/{service}/which", json={},
                                             headers={"X-Session-Id": session})
                assert response.status == 200, await response.text()
                return str(await response.json())

            deadline = time.monotonic() + 20
            while (await client.post(f"/rpc/{service}/which", json={})).status == 404:
                assert time.monotonic() < deadline, "the bridge never learnt the service's route"
                await asyncio.sleep(0.05)
            while "2.1.0" not in {await which(f"probe-{n}") for n in range(20)}:
                assert time.monotonic() < deadline, "no call through the bridge reached the canary"
            for session in range(30):
                for _ in range(5):
                    seen[f"s-{session}"].add(await which(f"s-{session}"))
        return seen

    try:
        seen = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    finally:
        for worker in workers:
            worker.kill()
    assert all(len(versions) == 1 for versions in seen.values()), seen
    assert {next(iter(v)) for v in seen.values()} == {"2.0.0", "2.1.0"}
