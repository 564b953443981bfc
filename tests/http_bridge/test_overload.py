"""The bridge in front of a bounded service (RabbitMQ, a real container): a full queue is a
503 ``service_overloaded`` with ``Retry-After``, answered at once, never a 504 later."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from amqprpc import Config, rpc
from amqprpc.testing.pytest import broker_admin
from http_bridge import BridgeSettings, create_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

INTERVAL = 0.2
QUEUE = 5
SHED_WITHIN = 1.0  # seconds per refused request; a few ms here, generous for CI under load


def bounded_service(name: str, release: threading.Event, runs: list[int]) -> type:
    class Bounded:
        max_queue_length = QUEUE

        @rpc(http=True, public=True)
        def work(self, n: int) -> int:
            assert release.wait(20)
            runs.append(n)
            return n

    Bounded.name = name
    return Bounded


async def until_live(client: TestClient, path: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        response = await client.post(path, json={"n": -1})
        if response.status == 200:
            return
        assert time.monotonic() < deadline, await response.text()
        await asyncio.sleep(0.05)


def serve(amqp_uri: str, settings: BridgeSettings, scenario: Any) -> None:
    config = Config(broker_url=amqp_uri, discovery_interval=INTERVAL, rpc_timeout=20)

    async def main() -> None:
        async with TestClient(TestServer(create_app(config, settings=settings))) as client:
            await asyncio.wait_for(scenario(client), timeout=60)

    asyncio.run(main())


def test_a_full_queue_is_a_fast_503_with_retry_after(container_factory, unique_name, amqp_uri):
    name = unique_name("bounded")
    release, runs = threading.Event(), []
    container_factory(bounded_service(name, release, runs), discovery_interval=INTERVAL,
                      concurrency=1)
    release.set()
    path = f"/rpc/{name}/work"

    async def scenario(client: TestClient) -> None:
        await until_live(client, path)
        release.clear()

        async def post(n: int) -> tuple[int, float, Any]:
            started = time.monotonic()
            response = await client.post(path, json={"n": n})
            return response.status, time.monotonic() - started, (await response.json(), response.headers)

        calls = [asyncio.ensure_future(post(n)) for n in range(3 * (QUEUE + 1))]
        for _ in range(200):  # the refused ones answer while the accepted ones still wait
            if sum(call.done() for call in calls) >= len(calls) - (QUEUE + 1):
                break
            await asyncio.sleep(0.05)
        refused = [n for n, call in enumerate(calls) if call.done()]
        assert len(refused) == len(calls) - (QUEUE + 1), [calls[n].result()[:2] for n in refused]
        for n in refused:
            status, seconds, (body, headers) = calls[n].result()
            assert status == 503 and body["error"]["code"] == "service_overloaded"
            assert headers["Retry-After"] == "1"
            assert seconds < SHED_WITHIN
        release.set()
        accepted = [n for n in range(len(calls)) if n not in refused]
        assert [(await calls[n])[0] for n in accepted] == [200] * len(accepted)
        assert sorted(n for n in runs if n >= 0) == accepted  # each ran once; no refused one ran

    try:
        serve(amqp_uri, BridgeSettings(rate_limit=0), scenario)
    finally:
        release.set()
        with broker_admin(amqp_uri) as channel:
            channel.queue_delete(f"rpc-{name}")
