"""The bridge's adaptive concurrency limit with a real service (RabbitMQ, a real container):
calls past the limit are shed with a fast 503 ``overloaded`` and no publish; /metrics shows it."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from aiohttp.test_utils import TestClient

from amqprpc.testing.pytest import broker_admin
from http_bridge import BridgeSettings
from http_bridge.app import GATEWAY

from .support import wait_until_async
from .test_overload import INTERVAL, SHED_WITHIN, bounded_service, serve, until_live

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

LIMIT = 2


def test_calls_past_the_adaptive_limit_are_shed_at_once(container_factory, unique_name, amqp_uri):
    name = unique_name("adaptive")
    release, runs = threading.Event(), []
    container_factory(bounded_service(name, release, runs), discovery_interval=INTERVAL,
                      concurrency=10)
    release.set()
    path = f"/rpc/{name}/work"
    # Pinned (floor = ceiling): which calls pass is then certain, whatever the latencies.
    settings = BridgeSettings(rate_limit=0, adaptive_concurrency=True, adaptive_min_limit=LIMIT,
                              adaptive_max_limit=LIMIT, adaptive_min_rtt_requests=1)

    async def scenario(client: TestClient) -> None:
        await until_live(client, path)
        release.clear()
        held = [asyncio.ensure_future(client.post(path, json={"n": n})) for n in range(LIMIT)]
        limiter = client.server.app[GATEWAY].adaptive
        assert limiter is not None
        await wait_until_async(lambda: limiter.in_flight == LIMIT, "the held calls to be admitted",
                               timeout=10)
        for n in range(LIMIT, LIMIT + 5):
            started = time.monotonic()
            response = await client.post(path, json={"n": n})
            body = await response.json()
            assert response.status == 503 and body["error"]["code"] == "overloaded", body
            assert response.headers["Retry-After"] == "1"
            assert time.monotonic() - started < SHED_WITHIN
        release.set()
        assert [(await h).status for h in held] == [200] * LIMIT
        metrics = await (await client.get("/metrics")).text()
        assert f"amqprpc_bridge_adaptive_limit {LIMIT:.1f}" in metrics
        assert "amqprpc_bridge_adaptive_shed_calls 5.0" in metrics

    try:
        serve(amqp_uri, settings, scenario)
    finally:
        release.set()
        with broker_admin(amqp_uri) as channel:
            channel.queue_delete(f"rpc-{name}")
    assert sorted(n for n in runs if n >= 0) == list(range(LIMIT))  # shed calls never published
