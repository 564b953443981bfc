"""The gateway against create_app() with an in-memory RPC client: every status it decides."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest

from amqprpc import IncorrectSignature, MethodNotFound, RemoteError, RpcTimeout, UnknownService, rpc
from http_bridge.auth import hash_key
from http_bridge.idempotency import service_key

from .support import FakeRpc, descriptor_of, make_app, run_app

SECRET = "s" * 40
ADMIN_KEY = "ak_admin-key-for-tests"
READER_KEY = "ak_reader-key-for-tests"


class NotFound(Exception):
    pass


class Users:
    name = "users"
    http_errors = {NotFound: 404}

    @rpc(http="GET /users/{user_id}")
    def get(self, user_id: int, verbose: bool = False) -> dict[str, Any]:
        """Get one user."""
        return {}

    @rpc(http="POST /users", roles=["admin"], expected_exceptions=ValueError)
    def create(self, name: str, tags: list[str] | None = None) -> dict[str, Any]:
        return {}

    @rpc(http="GET /status", public=True)
    def status(self) -> str:
        return "ok"

    @rpc(http=True)
    def ping(self, text: str = "pong") -> str:
        return text

    @rpc
    def internal(self) -> None:
        """Not exposed over HTTP."""


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(f"""
[[keys]]
sha256 = "{hash_key(ADMIN_KEY)}"
principal = "alice"
roles = ["admin"]

[[keys]]
sha256 = "{hash_key(READER_KEY)}"
principal = "bob"
roles = ["reader"]
""")
    return str(path)


@pytest.fixture
def setup(fed_registry, keys_file):
    fed_registry.ingest(descriptor_of(Users))

    def build(rpc: FakeRpc | None = None, **settings: Any):
        rpc = rpc or FakeRpc()
        settings = {"api_keys_file": keys_file, "jwt_hs256_secret": SECRET, "jwt_issuer": "tests",
                    "jwt_audience": "bridge", **settings}
        return make_app(fed_registry, rpc, **settings), rpc

    return build


def token(sub: str = "carol", roles: list[str] | None = None, exp: float | None = None,
          **claims: Any) -> str:
    payload = {"sub": sub, "roles": roles or [], "iss": "tests", "aud": "bridge",
               "exp": int(exp if exp is not None else time.time() + 60), **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


ADMIN = {"X-API-Key": ADMIN_KEY}
JSON_ADMIN = {**ADMIN, "Content-Type": "application/json"}
READER = {"X-API-Key": READER_KEY}


def test_routing_conversion_and_identity(setup):
    app, fake = setup()

    async def scenario(client):
        response = await client.get("/users/42?verbose=true", headers={**READER, "X-User-Id": "mallory",
                                                                        "X-Roles": "admin"})
        assert response.status == 200, await response.text()
        call = fake.calls[-1]
        assert (call["service"], call["method"], call["kwargs"]) == ("users", "get",
                                                                     {"user_id": 42, "verbose": True})
        assert call["context"]["user_id"] == "bob" and call["context"]["roles"] == ["reader"]
        assert call["timeout"] == 10.0
        assert response.headers["X-Request-Id"]

        response = await client.post("/users", json={"name": "Ann", "tags": ["a"]}, headers=ADMIN)
        assert response.status == 200
        assert fake.calls[-1]["kwargs"] == {"name": "Ann", "tags": ["a"]}

        response = await client.post("/rpc/users/ping", json={}, headers=READER)
        assert response.status == 200 and fake.calls[-1]["kwargs"] == {}

    run_app(app, scenario)


def test_invalid_requests_are_refused_naming_the_field_and_nothing_is_sent(setup):
    app, fake = setup()

    async def scenario(client):
        cases = [
            (client.get("/users/abc", headers=READER), "path.user_id", 422),
            (client.get("/users/1?verbose=maybe", headers=READER), "query.verbose", 422),
            (client.get("/users/1?extra=1", headers=READER), "query.extra", 422),
            (client.post("/users", json={"tags": ["a"]}, headers=ADMIN), "body.name", 422),
            (client.post("/users", json={"name": 5}, headers=ADMIN), "body.name", 422),
            (client.post("/users", json={"name": "x", "tags": ["a", 3]}, headers=ADMIN), "body.tags[1]", 422),
            (client.post("/users", data=b"{nope", headers=JSON_ADMIN), None, 400),
            (client.post("/users", json=[1, 2], headers=ADMIN), None, 400),
            (client.post("/users", data=b'{"name": NaN}', headers=JSON_ADMIN), None, 400),
            (client.post("/users", data=b"[" * 100_000, headers=JSON_ADMIN), None, 400),
        ]
        for request, field, status in cases:
            response = await request
            body = await response.json()
            assert response.status == status, body
            assert body["error"]["id"] and body["error"]["code"]
            if field is not None:
                assert body["error"]["details"][0]["field"] == field, body
        response = await client.post("/users", json={"name": 5, "tags": ["a", 3], "x": 1}, headers=ADMIN)
        error = (await response.json())["error"]
        assert [d["field"] for d in error["details"]] == ["body.name", "body.tags[1]", "body.x"], error
        assert error["message"].startswith("3 invalid fields: body.name: expected string")
        response = await client.post("/users", data=b"name=x",
                                     headers={**ADMIN, "Content-Type": "application/x-www-form-urlencoded"})
        assert response.status == 415
        assert fake.calls == []

    run_app(app, scenario)


def test_auth_401_403_public_and_fail_closed(setup):
    app, fake = setup()

    async def scenario(client):
        response = await client.get("/users/1")
        assert response.status == 401
        assert "Bearer" in response.headers["WWW-Authenticate"]
        for headers in ({"X-API-Key": "ak_wrong"},
                        {"Authorization": "Bearer " + token(exp=time.time() - 3600)},
                        {"Authorization": "Bearer " + token(aud="other")},
                        {"Authorization": "Bearer " + token(iss="other")},
                        {"Authorization": "Bearer " + jwt.encode({"sub": "x", "exp": time.time() + 60},
                                                                 "another-secret-of-32-bytes-or-more!",
                                                                 algorithm="HS256")},
                        {"Authorization": "Bearer " + jwt.encode({"sub": "x", "iss": "tests", "aud": "bridge",
                                                                  "exp": time.time() + 60}, None,
                                                                 algorithm="none")},
                        {"Authorization": "Basic YWxpY2U6cHc="},
                        {**READER, "Authorization": "Bearer " + token()}):
            response = await client.get("/users/1", headers=headers)
            assert response.status == 401, (headers, await response.text())
            assert "error=" in response.headers["WWW-Authenticate"]
        response = await client.post("/users", json={"name": "x"}, headers=READER)
        assert response.status == 403
        response = await client.post("/users", json={"name": "x"},
                                     headers={"Authorization": "Bearer " + token(roles=["admin"])})
        assert response.status == 200
        assert fake.calls[-1]["context"]["user_id"] == "carol"
        response = await client.get("/status")
        assert response.status == 200
        assert fake.calls[-1]["context"].get("user_id") is None
        assert len(fake.calls) == 2

    run_app(app, scenario)


def test_routes_404_405_and_unexposed_methods(setup):
    app, fake = setup()

    async def scenario(client):
        for path in ("/nothing", "/rpc/users/internal", "/rpc/users/_private", "/users/1/extra"):
            response = await client.post(path, json={}, headers=ADMIN)
            assert response.status == 404, path
        response = await client.delete("/users/1", headers=ADMIN)
        assert response.status == 405 and response.headers["Allow"] == "GET"
        response = await client.get("/users", headers=ADMIN)
        assert response.status == 405 and response.headers["Allow"] == "POST"
        assert fake.calls == []

    run_app(app, scenario)


@pytest.mark.parametrize(("error", "status", "code"), [
    (MethodNotFound("users.get: gone"), 404, "method_not_found"),
    (IncorrectSignature("bad"), 400, "incorrect_signature"),
    (UnknownService("users"), 503, "service_unavailable"),
    (RpcTimeout("slow"), 504, "deadline_exceeded"),
    (RemoteError("NotFound", "no user 7"), 404, "not_found"),
    (RemoteError("ValueError", "name taken"), 422, "value_error"),
    (RemoteError("KeyError", "secret internals"), 500, "internal_error"),
])
def test_call_errors_map_to_statuses(setup, error, status, code):
    async def fail(service, method, kwargs, context):
        raise error

    app, _fake = setup(FakeRpc(fail))

    async def scenario(client):
        response = await client.post("/users", json={"name": "x"}, headers=ADMIN)
        body = await response.json()
        assert response.status == status, body
        assert body["error"]["code"] == code
        assert body["error"]["id"] == response.headers["X-Request-Id"]
        if status == 500:
            assert "secret" not in await response.text() and "Traceback" not in await response.text()

    run_app(app, scenario)


def test_no_live_instance_or_broker_down_is_503_at_once(setup, fed_registry):
    fake = FakeRpc()
    app, _ = setup(fake)

    async def scenario(client):
        fake.is_connected = False
        response = await client.get("/users/1", headers=READER)
        assert response.status == 503 and (await response.json())["error"]["code"] == "broker_unavailable"
        fake.is_connected, fake.blocked_reason = True, "low on memory"
        response = await client.get("/users/1", headers=READER)
        assert response.status == 503 and (await response.json())["error"]["code"] == "broker_blocked"
        fake.blocked_reason = None
        instance = fed_registry.service("users").instances[0].instance
        fed_registry.ingest({**descriptor_of(Users, event="down", instance=instance)})
        response = await client.get("/users/1", headers=READER)
        assert response.status == 503 and (await response.json())["error"]["code"] == "service_unavailable"
        assert fake.calls == []

    run_app(app, scenario)


def test_body_limit_413_and_header_limits(setup):
    app, fake = setup(max_body_size=1000, max_headers_total=2000)

    async def scenario(client):
        response = await client.post("/users", json={"name": "x" * 2000}, headers=ADMIN)
        assert response.status == 413

        async def chunks():
            for _ in range(10):
                yield b'{"name": "' + b"x" * 500

        response = await client.post("/users", data=chunks(),
                                     headers={**ADMIN, "Content-Type": "application/json"})
        assert response.status == 413
        response = await client.get("/users/1", headers={**READER, "X-Big": "y" * 3000})
        assert response.status == 431
        response = await client.get("/users/1", headers={**READER, "X_User": "z"})
        assert response.status == 400
        assert fake.calls == []

    run_app(app, scenario)


def test_rate_limit_429_per_principal(setup):
    app, _fake = setup(rate_limit=1.0, rate_burst=3)

    async def scenario(client):
        statuses = [(await client.get("/users/1", headers=READER)).status for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        response = await client.get("/users/1", headers=READER)
        assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
        response = await client.get("/users/1", headers=ADMIN)  # another principal: unaffected
        assert response.status == 200

    run_app(app, scenario)


def test_inflight_cap_503(setup):
    release = asyncio.Event()

    async def slow(service, method, kwargs, context):
        await release.wait()
        return "done"

    app, fake = setup(FakeRpc(slow), max_inflight=2)

    async def scenario(client):
        first = [asyncio.create_task(client.get("/users/1", headers=READER)) for _ in range(2)]
        while len(fake.calls) < 2:
            await asyncio.sleep(0.01)
        response = await client.get("/users/1", headers=READER)
        assert response.status == 503 and (await response.json())["error"]["code"] == "overloaded"
        release.set()
        assert [(await task).status for task in first] == [200, 200]

    run_app(app, scenario)


def test_idempotency_key_replays_and_guards(setup):
    counter = {"n": 0}

    async def create(service, method, kwargs, context):
        counter["n"] += 1
        assert context["idempotency_key"] == service_key("principal:alice", "k-1")  # never the raw key
        return {"id": counter["n"]}

    app, _fake = setup(FakeRpc(create))

    async def scenario(client):
        headers = {**ADMIN, "Idempotency-Key": "k-1"}
        first = await client.post("/users", json={"name": "x"}, headers=headers)
        again = await client.post("/users", json={"name": "x"}, headers=headers)
        assert first.status == again.status == 200
        assert await first.json() == await again.json() == {"id": 1}
        assert again.headers["Idempotent-Replayed"] == "true" and counter["n"] == 1
        other = await client.post("/users", json={"name": "y"}, headers=headers)
        assert other.status == 422

    run_app(app, scenario)


def test_ops_endpoints_and_openapi(setup):
    app, _fake = setup()

    async def scenario(client):
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 503  # the fed registry never connected
        await client.get("/users/1", headers=READER)
        metrics = await (await client.get("/metrics")).text()
        assert 'amqprpc_bridge_requests_total{route="GET /users/{user_id}",status="200"} 1' in metrics
        assert "amqprpc_bridge_calls_in_flight 0" in metrics
        spec = await (await client.get("/openapi.json")).json()
        assert spec["openapi"] == "3.1.0"
        assert set(spec["paths"]) == {"/users/{user_id}", "/users", "/status", "/rpc/users/ping"}
        get = spec["paths"]["/users/{user_id}"]["get"]
        assert get["operationId"] == "users.get" and get["summary"] == "Get one user."
        assert {p["name"]: p["in"] for p in get["parameters"]} == {"user_id": "path", "verbose": "query"}
        create = spec["paths"]["/users"]["post"]
        assert create["x-roles"] == ["admin"]
        assert create["requestBody"]["content"]["application/json"]["schema"]["required"] == ["name"]
        assert spec["paths"]["/status"]["get"]["security"] == []
        page = await client.get("/docs")
        assert page.status == 200 and "openapi.json" in await page.text()
        assert (await client.post("/healthz")).status == 405

    run_app(app, scenario)


def test_context_headers_travel_as_context_and_nothing_else_does(setup):
    """A listed header becomes its context key (sticky canary routing by a header); unlisted
    ones and the identity keys never come from the client."""
    app, fake = setup(context_headers={"X-Session-Id": "session", "Accept-Language": "language"})

    async def scenario(client):
        response = await client.get("/users/1", headers={**READER, "X-Session-Id": "s-42",
                                                          "Accept-Language": "de", "X-Other": "x"})
        assert response.status == 200, await response.text()
        context = fake.calls[-1]["context"]
        assert context["session"] == "s-42" and context["language"] == "de"
        assert context["user_id"] == "bob" and "X-Other" not in context and "other" not in context

        response = await client.get("/users/1", headers=READER)  # absent: no key at all
        assert response.status == 200 and "session" not in fake.calls[-1]["context"]

        calls = len(fake.calls)
        for bad in ("x" * 257, "tab\there"):
            response = await client.get("/users/1", headers={**READER, "X-Session-Id": bad})
            assert response.status == 400
            body = await response.json()
            assert "X-Session-Id" in body["error"]["message"] and "'session'" in body["error"]["message"]
        assert len(fake.calls) == calls  # refused before anything was sent

    run_app(app, scenario)


def test_without_context_headers_no_client_header_reaches_the_context(setup):
    app, fake = setup()

    async def scenario(client):
        response = await client.get("/users/1", headers={**READER, "X-Session-Id": "s-42"})
        assert response.status == 200
        assert set(fake.calls[-1]["context"]) == {"user_id", "roles", "call_id_stack"}

    run_app(app, scenario)
