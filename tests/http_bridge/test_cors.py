"""CORS: preflights answered before auth and without RPC, headers on every answer, off by default."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from amqprpc import Config, ConfigError, RemoteError, rpc
from http_bridge import BridgeSettings
from http_bridge.auth import hash_key

from .support import FakeRpc, descriptor_of, make_app, run_app

APP = "https://app.example.com"
EVIL = "https://evil.example.net"
KEY = "ak_cors-tests-key"


class Shop:
    name = "shop"

    @rpc(http="GET /items/{item_id}")
    def get(self, item_id: int) -> dict[str, Any]:
        return {}

    @rpc(http="POST /items")
    def create(self, label: str) -> dict[str, Any]:
        return {}

    @rpc(http="GET /ping", public=True)
    def ping(self) -> str:
        return "pong"


@pytest.fixture
def setup(fed_registry, tmp_path):
    fed_registry.ingest(descriptor_of(Shop))
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[keys]]\nsha256 = "{hash_key(KEY)}"\nprincipal = "web"\nroles = []\n')

    def build(rpc: FakeRpc | None = None, **settings: Any):
        rpc = rpc or FakeRpc()
        return make_app(fed_registry, rpc, api_keys_file=str(keys), **settings), rpc

    return build


def preflight(origin: str, method: str, headers: str = "") -> dict[str, str]:
    out = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        out["Access-Control-Request-Headers"] = headers
    return out


def cors_headers(response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items()
            if name.lower().startswith("access-control-")}


def test_cors_off_answers_exactly_as_before(setup):
    app, fake = setup()

    async def scenario(client):
        response = await client.options("/items/1", headers=preflight(APP, "GET", "x-api-key"))
        assert response.status == 405 and response.headers["Allow"] == "GET"
        assert cors_headers(response) == {} and "Vary" not in response.headers
        response = await client.get("/items/1", headers={"Origin": APP, "X-API-Key": KEY})
        assert response.status == 200
        assert cors_headers(response) == {} and "Vary" not in response.headers
        assert len(fake.calls) == 1

    run_app(app, scenario)


def test_preflight_is_204_without_credentials_or_rpc(setup):
    app, fake = setup(cors_allowed_origins=(APP, "http://localhost:3000"), cors_max_age=120,
                      cors_allowed_headers=("X-Trace-Id",))

    async def scenario(client):
        response = await client.options("/items/1", headers=preflight(
            APP, "GET", "authorization, x-api-key, idempotency-key, content-type, x-trace-id"))
        assert response.status == 204, await response.text()
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert response.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
        allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type", "idempotency-key", "x-api-key", "soapaction",
                "x-trace-id"} <= allowed
        assert response.headers["Access-Control-Max-Age"] == "120"
        assert "Origin" in response.headers["Vary"]
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert response.headers["X-Request-Id"]

        response = await client.options("/items", headers=preflight("http://localhost:3000", "POST",
                                                                   "content-type"))
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert response.headers["Access-Control-Allow-Methods"] == "POST"
        # The bridge's own paths and the SOAP front end answer preflights too.
        response = await client.options("/openapi.json", headers=preflight(APP, "GET"))
        assert response.status == 204 and response.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
        response = await client.options("/soap/shop", headers=preflight(APP, "POST", "soapaction"))
        assert response.status == 204 and "POST" in response.headers["Access-Control-Allow-Methods"]
        assert fake.calls == []

    run_app(app, scenario)


def test_refused_preflights_are_403_in_the_error_shape(setup):
    app, fake = setup(cors_allowed_origins=(APP,))

    async def scenario(client):
        async def refused(path: str, headers: dict[str, str], status: int, code: str) -> Any:
            response = await client.options(path, headers=headers)
            body = await response.json()
            assert response.status == status, body
            assert body["error"]["code"] == code and body["error"]["id"] == response.headers["X-Request-Id"]
            assert "Origin" in response.headers["Vary"]
            assert "Access-Control-Allow-Methods" not in response.headers
            return response, body

        response, body = await refused("/items/1", preflight(EVIL, "GET"), 403, "cors_origin_not_allowed")
        assert EVIL in body["error"]["message"]
        assert "Access-Control-Allow-Origin" not in response.headers
        # Same origin on another port or scheme is another origin.
        await refused("/items/1", preflight("http://app.example.com", "GET"), 403, "cors_origin_not_allowed")
        await refused("/items/1", preflight(APP + ":8443", "GET"), 403, "cors_origin_not_allowed")
        await refused("/items/1", preflight("null", "GET"), 403, "cors_origin_not_allowed")

        response, body = await refused("/items/1", preflight(APP, "DELETE"), 403, "cors_method_not_allowed")
        assert "DELETE" in body["error"]["message"] and "GET" in body["error"]["message"]
        assert response.headers["Access-Control-Allow-Origin"] == APP  # the page may read why
        await refused("/items", preflight(APP, "GET"), 403, "cors_method_not_allowed")
        await refused("/healthz", preflight(APP, "POST"), 403, "cors_method_not_allowed")
        response, body = await refused("/items/1", preflight(APP, "GET", "x-api-key, x-secret-sauce"), 403,
                                       "cors_header_not_allowed")
        assert "x-secret-sauce" in body["error"]["message"]
        await refused("/nothing/here", preflight(APP, "GET"), 404, "not_found")
        assert fake.calls == []

    run_app(app, scenario)


def test_answers_to_an_allowed_origin_carry_cors_headers_errors_included(setup):
    state = {"fail": None}

    async def answer(service, method, kwargs, context):
        if state["fail"] is not None:
            raise state["fail"]
        return {"id": kwargs.get("item_id")}

    fake = FakeRpc(answer)
    app, _ = setup(fake, cors_allowed_origins=(APP,), rate_limit=1.0, rate_burst=3)
    auth = {"Origin": APP, "X-API-Key": KEY}

    async def scenario(client):
        async def check(response, status: int) -> None:
            assert response.status == status, await response.text()
            assert response.headers["Access-Control-Allow-Origin"] == APP
            assert "Origin" in response.headers["Vary"]
            exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
            assert {"Retry-After", "X-Request-Id", "WWW-Authenticate"} <= exposed

        await check(await client.get("/items/1", headers=auth), 200)
        await check(await client.get("/items/1", headers={"Origin": APP}), 401)
        await check(await client.get("/nothing", headers=auth), 404)
        await check(await client.delete("/items/1", headers=auth), 405)
        await check(await client.options("/items/1", headers=auth), 405)  # OPTIONS, but no preflight
        await check(await client.get("/healthz", headers={"Origin": APP}), 200)
        state["fail"] = RemoteError("KeyError", "internals")
        await check(await client.get("/items/1", headers=auth), 500)
        state["fail"] = None
        fake.is_connected = False
        response = await client.get("/items/1", headers=auth)
        await check(response, 503)
        assert response.headers["Retry-After"] == "1"
        fake.is_connected = True
        for _ in range(3):
            await client.get("/items/1", headers=auth)
        response = await client.get("/items/1", headers=auth)
        await check(response, 429)
        assert int(response.headers["Retry-After"]) >= 1

        # Another origin is served as before (the browser hides the answer), without CORS headers.
        response = await client.get("/ping", headers={"Origin": EVIL})
        assert response.status == 200 and "Access-Control-Allow-Origin" not in response.headers
        assert response.headers["Vary"] == "Origin"
        response = await client.get("/ping")  # no Origin at all: not a CORS request
        assert response.status == 200 and cors_headers(response) == {}
        assert response.headers["Vary"] == "Origin"

    run_app(app, scenario)


def test_any_origin_and_credentials(setup):
    any_app, _ = setup(cors_allowed_origins=("*",))

    async def any_origin(client):
        response = await client.options("/items/1", headers=preflight(EVIL, "GET", "authorization"))
        assert response.status == 204 and response.headers["Access-Control-Allow-Origin"] == "*"
        response = await client.get("/ping", headers={"Origin": EVIL})
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in response.headers

    run_app(any_app, any_origin)
    app, _ = setup(cors_allowed_origins=(APP,), cors_allow_credentials=True)

    async def credentials(client):
        response = await client.options("/items/1", headers=preflight(APP, "GET"))
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        response = await client.get("/items/1", headers={"Origin": APP, "X-API-Key": KEY})
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert response.headers["Access-Control-Allow-Origin"] == APP

    run_app(app, credentials)


def test_cors_settings_from_file_and_environment(tmp_path):
    path = tmp_path / "amqprpc.toml"
    path.write_text('[bridge]\ncors_allowed_origins = ["HTTPS://App.Example.com:443"]\ncors_max_age = 60\n')
    settings = BridgeSettings.from_config(Config.load(path, env={
        "AMQPRPC_BRIDGE_CORS_ALLOWED_HEADERS": "X-Trace-Id, traceparent",
        "AMQPRPC_BRIDGE_CORS_ALLOW_CREDENTIALS": "true"}))
    assert settings.cors_allowed_origins == (APP,)  # as a browser sends it
    assert settings.cors_allowed_headers == ("X-Trace-Id", "traceparent")
    assert settings.cors_max_age == 60 and settings.cors_allow_credentials
    env = {"AMQPRPC_BRIDGE_CORS_ALLOWED_ORIGINS": "https://a.example, http://localhost:5173"}
    settings = BridgeSettings.from_config(Config.load(None, env=env))
    assert settings.cors_allowed_origins == ("https://a.example", "http://localhost:5173")


@pytest.mark.parametrize(("changes", "named"), [
    ({"cors_allowed_origins": ("*",), "cors_allow_credentials": True}, "cors_allow_credentials"),
    ({"cors_allowed_origins": ("app.example.com",)}, "cors_allowed_origins"),
    ({"cors_allowed_origins": ("localhost:3000",)}, "cors_allowed_origins"),
    ({"cors_allowed_origins": ("https://app.example.com/",)}, None),  # a trailing slash is fine
    ({"cors_allowed_origins": ("https://app.example.com/api",)}, "cors_allowed_origins"),
    ({"cors_allowed_origins": ("https://*.example.com",)}, "cors_allowed_origins"),
    ({"cors_allowed_origins": ("*", APP)}, "cors_allowed_origins"),
    ({"cors_allowed_origins": ("null",)}, "cors_allowed_origins"),
    ({"cors_allowed_headers": ("X_Custom",)}, "cors_allowed_headers"),
    ({"cors_allowed_headers": ("*",)}, "cors_allowed_headers"),
    ({"cors_max_age": -1}, "cors_max_age"),
])
def test_bad_cors_settings_fail_naming_the_setting(changes, named):
    if named is None:
        assert BridgeSettings(**changes).cors_allowed_origins == (APP,)
        return
    with pytest.raises(ConfigError, match=f"bridge.{named}"):
        BridgeSettings(**changes)


def test_bridge_refuses_to_start_with_bad_cors_settings(tmp_path):
    path = tmp_path / "amqprpc.toml"
    path.write_text('[bridge]\ncors_allowed_origins = ["*"]\ncors_allow_credentials = true\n')
    env = {key: value for key, value in os.environ.items() if not key.startswith("AMQPRPC_")}
    done = subprocess.run([sys.executable, "-m", "http_bridge", "--config", str(path)], env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2, done
    assert done.stderr.startswith("error: bridge.cors_allowed_origins") and done.stderr.count("\n") == 1
