"""The token endpoint end to end: a real bridge, the real auth service, PostgreSQL, RabbitMQ."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from amqprpc import Config
from http_bridge import BridgeSettings, create_app
from http_bridge.signing_keys import SigningKey, write_key_file
from services.auth import AuthService, Base
from tests.databases import SQL_SERVERS, _check_sql, unavailable

pytestmark = pytest.mark.integration

IDENTITY_KEY = "identity-key-for-the-token-endpoint-tests"
ADMIN_PASSWORD = "correct horse battery staple"
INTERVAL = 0.2


@pytest.fixture
def pg_url() -> Iterator[str]:
    variable, default = SQL_SERVERS["postgresql"]
    import os
    url = os.environ.get(variable) or default
    problem = _check_sql(url)
    if problem is not None:
        unavailable(f"no postgresql at {url} ({problem}); set {variable}")
    engine = sa.create_engine(url)
    Base.metadata.drop_all(engine)  # the auth tables of an earlier run
    yield url
    Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def auth_setup(container_factory: Any, unique_name: Any, pg_url: str, tmp_path: Path,
               amqp_uri: str) -> dict[str, Any]:
    name = unique_name("auth")
    password_file = tmp_path / "admin-password"
    password_file.write_text(ADMIN_PASSWORD + "\n")
    service = type("Auth", (AuthService,), {"name": name})
    container_factory(service, discovery_interval=INTERVAL, identity_key=IDENTITY_KEY,
                      extra={"DATABASE_URL": pg_url, "ADMIN_PASSWORD_FILE": str(password_file)})
    key_file = write_key_file(tmp_path / "signing.pem")
    return {"name": name, "key_file": str(key_file), "amqp_uri": amqp_uri}


def serve(setup: dict[str, Any], scenario: Callable[[TestClient], Awaitable[None]], **settings: Any) -> None:
    config = Config(broker_url=setup["amqp_uri"], discovery_interval=INTERVAL, rpc_timeout=10,
                    identity_key=IDENTITY_KEY)
    bridge = BridgeSettings(token_signing_key_file=setup["key_file"], token_service=setup["name"],
                            **settings)

    async def main() -> None:
        async with TestClient(TestServer(create_app(config, settings=bridge))) as client:
            await wait_for_route(client, "/auth/users")
            await asyncio.wait_for(scenario(client), timeout=60)

    asyncio.run(main())


async def wait_for_route(client: TestClient, path: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        response = await client.get(path)
        if response.status in (401, 403, 200):  # routed (401: no token yet)
            return
        assert time.monotonic() < deadline, f"{path} never routed: {response.status}"
        await asyncio.sleep(0.05)


async def login(client: TestClient, username: str, password: str, *, as_json: bool = False,
                headers: dict[str, str] | None = None) -> Any:
    data = {"grant_type": "password", "username": username, "password": password}
    if as_json:
        return await client.post("/auth/token", json=data, headers=headers)
    return await client.post("/auth/token", data=data, headers=headers)


async def refresh(client: TestClient, token: str) -> Any:
    return await client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": token})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_login_roles_refresh_reuse_revoke_and_jwks(auth_setup: dict[str, Any]) -> None:
    async def scenario(client: TestClient) -> None:
        response = await login(client, "admin", ADMIN_PASSWORD)
        assert response.status == 200, await response.text()
        assert response.headers["Cache-Control"] == "no-store"
        grant = await response.json()
        assert grant["token_type"] == "Bearer" and grant["expires_in"] == 300
        admin = bearer(grant["access_token"])

        # a roles route with the access token; registration is admin-only
        users = await client.get("/auth/users", headers=admin)
        assert users.status == 200 and [u["principal"] for u in await users.json()] == ["admin"]
        created = await client.post("/auth/users", headers=admin,
                                    json={"username": "ann", "password": "ann-password-1",
                                          "roles": ["clerk"]})
        assert created.status == 200, await created.text()
        ann = await (await login(client, "ann", "ann-password-1", as_json=True)).json()
        refused = await client.post("/auth/users", headers=bearer(ann["access_token"]),
                                    json={"username": "eve", "password": "eve-password-1"})
        assert refused.status == 403
        me = await (await client.get("/auth/me", headers=bearer(ann["access_token"]))).json()
        assert me == {"principal": "ann", "roles": ["clerk"], "method": "jwt"}

        # the JWKS verifies the token with PyJWT alone
        jwks = await (await client.get("/.well-known/jwks.json")).json()
        kid = jwt.get_unverified_header(ann["access_token"])["kid"]
        key = jwt.PyJWKSet.from_dict(jwks)[kid]
        claims = jwt.decode(ann["access_token"], key.key, algorithms=["EdDSA"], issuer="amqprpc-bridge")
        assert claims["sub"] == "ann" and claims["roles"] == ["clerk"]

        # refresh rotates; the old token again revokes the whole family
        first = ann["refresh_token"]
        rotated = await refresh(client, first)
        assert rotated.status == 200, await rotated.text()
        second = (await rotated.json())["refresh_token"]
        assert second != first
        reused = await refresh(client, first)
        assert reused.status == 400 and (await reused.json())["error"] == "invalid_grant"
        after = await refresh(client, second)
        assert after.status == 400, "the family was revoked: the newest token fails too"

        # RFC 7009: revoking an access token ends its family's refresh tokens at once
        fresh = await (await login(client, "ann", "ann-password-1")).json()
        revoked = await client.post("/auth/revoke", data={"token": fresh["access_token"]})
        assert revoked.status == 200
        again = await refresh(client, fresh["refresh_token"])
        assert again.status == 400
        assert (await client.post("/auth/revoke", data={"token": "rt_unknown"})).status == 200
        other = await (await login(client, "ann", "ann-password-1")).json()
        assert (await client.post("/auth/revoke", data={"token": other["refresh_token"]})).status == 200
        gone = await refresh(client, other["refresh_token"])
        assert gone.status == 400

        # an expired access token: 401
        signer = SigningKey.load(auth_setup["key_file"], issuer="amqprpc-bridge")
        old = signer.issue("admin", ["admin"], ttl=300, session="x", now=time.time() - 1000)
        assert (await client.get("/auth/users", headers=bearer(old))).status == 401

        # request shapes (RFC 6749 §5.2)
        for data, error in (({}, "invalid_request"), ({"grant_type": "client_credentials"},
                                                      "unsupported_grant_type"),
                            ({"grant_type": "password", "username": "ann"}, "invalid_request")):
            response = await client.post("/auth/token", data=data)
            assert response.status == 400 and (await response.json())["error"] == error
        assert (await client.get("/auth/token")).status == 405

    serve(auth_setup, scenario)


def test_wrong_password_and_unknown_user_look_alike_and_guessing_is_braked(
        auth_setup: dict[str, Any]) -> None:
    async def scenario(client: TestClient) -> None:
        assert (await login(client, "admin", ADMIN_PASSWORD)).status == 200  # bootstraps the admin
        timings: dict[str, list[float]] = {"wrong": [], "unknown": []}
        bodies: dict[str, set[str]] = {"wrong": set(), "unknown": set()}
        for _ in range(5):  # interleaved, so load on the machine hits both alike
            for kind, user in (("wrong", "admin"), ("unknown", "nobody-here")):
                started = time.perf_counter()
                address = {"X-Forwarded-For": f"198.51.100.{len(timings['wrong']) + len(timings['unknown'])}"}
                response = await login(client, user, "not the password", headers=address)
                timings[kind].append(time.perf_counter() - started)
                assert response.status == 400
                bodies[kind].add(await response.text())
        assert bodies["wrong"] == bodies["unknown"] and len(bodies["wrong"]) == 1
        wrong, unknown = statistics.median(timings["wrong"]), statistics.median(timings["unknown"])
        print(f"median wrong password {wrong * 1000:.1f} ms, unknown user {unknown * 1000:.1f} ms")
        # Both verify an Argon2 hash (~50 ms); without the dummy hash an unknown user would
        # answer in ~2 ms. Generous for a loaded 2-core CI machine: within 50 % of each other.
        assert abs(wrong - unknown) < 0.5 * max(wrong, unknown)

        # per account: five failures for admin from five addresses spent the limit (5 per window)
        locked = await login(client, "admin", ADMIN_PASSWORD, headers={"X-Forwarded-For": "203.0.113.9"})
        assert locked.status == 429 and "Retry-After" in locked.headers
        assert (await locked.json())["error"] == "too_many_attempts"

    serve(auth_setup, scenario, token_failure_limit=5, trusted_proxies=("127.0.0.1",))


def test_guessing_from_one_address_is_braked(auth_setup: dict[str, Any]) -> None:
    async def scenario(client: TestClient) -> None:
        statuses = [(await login(client, f"user{n}", "guess-guess")).status for n in range(5)]
        assert statuses == [400, 400, 400, 429, 429]  # limit 3 per address, whatever the account

    serve(auth_setup, scenario, token_failure_limit=3)
