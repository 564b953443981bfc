"""The bridge against the real broker and real workers: routes follow the services live."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from amqprpc import Config, remote_error, rpc
from http_bridge import BridgeSettings, create_app
from http_bridge.auth import hash_key

pytestmark = pytest.mark.integration

KEY = "ak_end-to-end-admin"
READER_KEY = "ak_end-to-end-reader"
INTERVAL = 0.2  # discovery heartbeat for these tests: expiry after ~0.7 s


@remote_error
class NotFound(Exception):
    pass


def make_service(name: str, release: threading.Event) -> type:
    class Items:
        http_errors = {NotFound: 404}

        @rpc(http=f"GET /{name}/items/{{item_id}}")
        def get(self, item_id: int) -> dict[str, Any]:
            """One item."""
            if item_id == 404:
                raise NotFound(f"no item {item_id}")
            return {"id": item_id}

        @rpc(http=f"POST /{name}/items", roles=["admin"])
        async def create(self, label: str, count: int = 1) -> dict[str, Any]:
            await asyncio.sleep(0)
            return {"label": label, "count": count}

        @rpc(http=True)
        def crash(self) -> None:
            raise RuntimeError("database password is hunter2")

        @rpc(http=True)
        def slow(self) -> str:
            release.wait(5)
            return "late"

    Items.name = name
    Items.__name__ = "Items"
    return Items


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(f'[[keys]]\nsha256 = "{hash_key(KEY)}"\nprincipal = "ops"\nroles = ["admin"]\n'
                    f'[[keys]]\nsha256 = "{hash_key(READER_KEY)}"\nprincipal = "viewer"\nroles = []\n')
    return str(path)


def serve_bridge(amqp_uri: str, settings: BridgeSettings, scenario) -> None:
    config = Config(broker_url=amqp_uri, discovery_interval=INTERVAL, rpc_timeout=5)

    async def main() -> None:
        app = create_app(config, settings=settings)  # owns its client and registry
        async with TestClient(TestServer(app)) as client:
            await asyncio.wait_for(scenario(client), timeout=45)

    asyncio.run(main())


async def poll(client: TestClient, path: str, status: int, timeout: float, **kwargs: Any) -> float:
    """Seconds until ``GET path`` answers ``status`` (fails after ``timeout``)."""
    started = time.monotonic()
    while True:
        response = await client.get(path, **kwargs)
        await response.read()
        if response.status == status:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"{path} still {response.status}"
        await asyncio.sleep(0.01)


def test_route_appears_with_the_service_and_answers_503_when_it_stops(
        container_factory, unique_name, amqp_uri, keys_file):
    name = unique_name("items")
    release = threading.Event()
    settings = BridgeSettings(api_keys_file=keys_file)
    headers = {"X-API-Key": KEY}

    async def scenario(client: TestClient) -> None:
        loop = asyncio.get_running_loop()
        await poll(client, "/readyz", 200, 5)
        response = await client.get(f"/{name}/items/1", headers=headers)
        assert response.status == 404  # not running yet: no such route
        started = time.monotonic()
        container = await loop.run_in_executor(
            None, lambda: container_factory(make_service(name, release), discovery_interval=INTERVAL))
        waited = await poll(client, f"/{name}/items/1", 200, 1.0, headers=headers)
        print(f"route live {time.monotonic() - started:.3f}s after start (polled {waited:.3f}s)")
        assert await (await client.get(f"/{name}/items/7", headers=headers)).json() == {"id": 7}

        await loop.run_in_executor(None, container.stop)
        started = time.monotonic()
        response = await client.get(f"/{name}/items/1", headers=headers)
        assert response.status == 503, await response.text()
        assert time.monotonic() - started < 0.5
        spec = await (await client.get("/openapi.json")).json()
        assert f"/{name}/items/{{item_id}}" in spec["paths"]  # known, just not running

    serve_bridge(amqp_uri, settings, scenario)


def test_statuses_through_real_workers(container_factory, unique_name, amqp_uri, keys_file):
    name = unique_name("items")
    release = threading.Event()
    settings = BridgeSettings(api_keys_file=keys_file, max_body_size=2048, rate_limit=2.0, rate_burst=12,
                              deadlines={f"{name}.slow": 0.3})
    admin = {"X-API-Key": KEY}

    async def scenario(client: TestClient) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None, lambda: container_factory(make_service(name, release), discovery_interval=INTERVAL))
        await poll(client, f"/{name}/items/1", 200, 5, headers=admin)

        created = await client.post(f"/{name}/items", json={"label": "x", "count": 3}, headers=admin)
        assert created.status == 200 and await created.json() == {"label": "x", "count": 3}

        async def status_of(method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
            response = await client.request(method, path, **kwargs)
            return response.status, await response.json()

        assert (await status_of("GET", f"/{name}/items/1"))[0] == 401
        assert (await status_of("POST", f"/{name}/items", json={"label": "x"},
                                headers={"X-API-Key": READER_KEY}))[0] == 403
        status, body = await status_of("GET", f"/{name}/items/one", headers=admin)
        assert status == 422 and body["error"]["details"][0]["field"] == "path.item_id"
        assert (await status_of("GET", f"/{name}/nothing", headers=admin))[0] == 404
        status, body = await status_of("GET", f"/{name}/items/404", headers=admin)
        assert (status, body["error"]["message"]) == (404, "no item 404")
        status, body = await status_of("POST", f"/{name}/items", json={"label": "x" * 4096}, headers=admin)
        assert status == 413

        status, body = await status_of("POST", f"/rpc/{name}/crash", json={}, headers=admin)
        assert status == 500 and body["error"]["id"]
        assert "hunter2" not in str(body) and "RuntimeError" not in str(body)

        started = time.monotonic()
        status, body = await status_of("POST", f"/rpc/{name}/slow", json={}, headers=admin)
        assert status == 504, body
        assert 0.25 < time.monotonic() - started < 2
        release.set()

        statuses = [(await client.get(f"/{name}/items/1", headers=admin)).status for _ in range(15)]
        assert 429 in statuses

    serve_bridge(amqp_uri, settings, scenario)


def test_instance_that_stops_beating_expires(container_factory, unique_name, amqp_uri, keys_file):
    name = unique_name("items")
    # Calls sent before the expiry wait on the orphaned queue: a short deadline keeps them short.
    settings = BridgeSettings(api_keys_file=keys_file, default_deadline=0.2)
    headers = {"X-API-Key": KEY}

    async def scenario(client: TestClient) -> None:
        loop = asyncio.get_running_loop()
        container = await loop.run_in_executor(
            None, lambda: container_factory(make_service(name, threading.Event()),
                                            discovery_interval=INTERVAL))
        await poll(client, f"/{name}/items/1", 200, 5, headers=headers)
        # The worker vanishes without a word (as if kill -9): its heartbeats stop.
        await loop.run_in_executor(None, container.connection.stop)
        waited = await poll(client, f"/{name}/items/1", 503, 3, headers=headers)
        assert waited < INTERVAL * 3.5 + 0.5

    serve_bridge(amqp_uri, settings, scenario)
