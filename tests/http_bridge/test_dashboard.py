"""/dashboard and /dashboard/state.json on a fed registry: off by default, roles, the JSON shape."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from amqprpc import rpc
from http_bridge.auth import hash_key

from .support import FakeRpc, descriptor_of, make_app, run_app

ADMIN_KEY = "ak_dashboard-admin"
READER_KEY = "ak_dashboard-reader"


class Shop:
    name = "shop"

    @rpc(http="GET /items/{item_id}", roles=["reader"])
    def get(self, item_id: int) -> dict:
        return {}

    @rpc
    def restock(self) -> None:
        pass


def keys(tmp_path) -> str:
    path = tmp_path / "keys.toml"
    entry = '[[keys]]\nsha256 = "{}"\nprincipal = "{}"\nroles = ["{}"]\n'
    path.write_text(entry.format(hash_key(ADMIN_KEY), "ops", "admin")
                    + entry.format(hash_key(READER_KEY), "viewer", "reader"))
    return str(path)


def announced(**extras: Any) -> dict[str, Any]:
    return {**descriptor_of(Shop, instance="a" * 32), **extras}


STATS = {"window": 60.0, "methods": {
    "get": {"calls": 120, "errors": 6, "p50_ms": 1.5, "p99_ms": 9.0},
    "on_event": {"calls": 3, "errors": 0, "p50_ms": 0.2, "p99_ms": 0.3},
}}


def test_the_dashboard_is_off_unless_enabled(fed_registry, tmp_path):
    app = make_app(fed_registry, FakeRpc(), api_keys_file=keys(tmp_path))

    async def scenario(client: TestClient) -> None:
        for path in ("/dashboard", "/dashboard/state.json"):
            response = await client.get(path, headers={"X-API-Key": ADMIN_KEY})
            assert response.status == 404, path

    run_app(app, scenario)


def test_state_needs_credentials_with_a_dashboard_role(fed_registry, tmp_path):
    app = make_app(fed_registry, FakeRpc(), api_keys_file=keys(tmp_path), dashboard=True,
                   allow_anonymous=True)

    async def scenario(client: TestClient) -> None:
        response = await client.get("/dashboard/state.json")
        assert response.status == 401  # allow_anonymous never opens it
        assert "WWW-Authenticate" in response.headers
        response = await client.get("/dashboard/state.json", headers={"X-API-Key": "ak_wrong"})
        assert response.status == 401
        response = await client.get("/dashboard/state.json", headers={"X-API-Key": READER_KEY})
        assert response.status == 403
        assert "admin" in (await response.json())["error"]["message"]
        response = await client.get("/dashboard/state.json", headers={"X-API-Key": ADMIN_KEY})
        assert response.status == 200
        response = await client.post("/dashboard/state.json", headers={"X-API-Key": ADMIN_KEY})
        assert response.status == 405
        assert (await client.get("/dashboard/../etc/passwd")).status == 404

    run_app(app, scenario)


def test_the_page_and_assets_are_served_from_the_package(fed_registry, tmp_path):
    app = make_app(fed_registry, FakeRpc(), api_keys_file=keys(tmp_path), dashboard=True)

    async def scenario(client: TestClient) -> None:
        page = await client.get("/dashboard")
        assert page.status == 200 and page.content_type == "text/html"
        html = await page.text()
        assert "/dashboard/dashboard.js" in html and "http" not in html.replace("http-equiv", "")
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            asset = await client.get(f"/dashboard/{name}")
            assert asset.status == 200 and asset.content_type == kind
            assert "//cdn" not in await asset.text()
        assert (await client.get("/dashboard/nope.js")).status == 404

    run_app(app, scenario)


def test_state_json_shape(fed_registry, tmp_path):
    fed_registry.ingest(announced(
        stats=STATS, queues=["rpc-shop", "evt-x-y--shop.on_event", "evt-x-y--shop.on_event.dlq"],
        breakers=[{"name": "payments", "state": "open"}, {"name": "bad", "state": "exploded"}]))
    app = make_app(fed_registry, FakeRpc(), api_keys_file=keys(tmp_path), dashboard=True)

    async def scenario(client: TestClient) -> None:
        response = await client.get("/dashboard/state.json", headers={"X-API-Key": ADMIN_KEY})
        assert response.status == 200
        state = await response.json()
        [shop] = state["services"]
        assert shop["name"] == "shop" and shop["live"] and shop["window"] == 60.0
        [instance] = shop["instances"]
        assert instance["id"] == "a" * 32 and instance["host"] == "test" and instance["pid"] > 0
        assert set(instance) >= {"version", "since", "last_seen", "amqprpc"}
        methods = {m["name"]: m for m in shop["methods"]}
        assert methods["get"] == {"name": "get", "http": "GET /items/{item_id}", "roles": ["reader"],
                                  "public": False, "calls": 120, "errors": 6, "calls_per_s": 2.0,
                                  "error_rate": 0.05, "p50_ms": 1.5, "p99_ms": 9.0}
        assert methods["restock"]["calls"] == 0 and methods["restock"]["p50_ms"] is None
        assert methods["on_event"]["http"] is None and methods["on_event"]["calls"] == 3
        queues = {q["name"]: q for q in shop["queues"]}
        assert queues["evt-x-y--shop.on_event.dlq"]["dead_letter"] is True
        assert queues["rpc-shop"]["messages"] is None  # a registry with no broker: unknown
        # the breakers slot: what the instances announce, malformed entries dropped
        assert shop["breakers"] == [{"service": "shop", "instance": "a" * 32, "name": "payments",
                                     "state": "open"}]
        assert state["breakers"] == shop["breakers"]

    run_app(app, scenario)


def test_an_instance_without_extras_shows_an_empty_slot(fed_registry, tmp_path):
    fed_registry.ingest(announced(stats="junk", queues=[1, "../x y"], breakers={"no": "list"}))
    app = make_app(fed_registry, FakeRpc(), api_keys_file=keys(tmp_path), dashboard=True)

    async def scenario(client: TestClient) -> None:
        state = await (await client.get("/dashboard/state.json", headers={"X-API-Key": ADMIN_KEY})).json()
        [shop] = state["services"]
        assert shop["breakers"] == [] and state["breakers"] == [] and shop["queues"] == []
        assert all(m["calls"] == 0 for m in shop["methods"])

    run_app(app, scenario)
