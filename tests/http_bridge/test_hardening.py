"""The bridge treats every client as hostile: scoped idempotency keys, a brake on failed
credentials, a connection cap, and one 401 body whatever PyJWT's reason (issue #19, 7-8).

Different client addresses are real ones: loopback sockets bound to 127.0.0.2, 127.0.0.3...
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer

from amqprpc import Config, ConfigError, rpc
from http_bridge import BridgeSettings, create_app
from http_bridge.app import CONNECTIONS, GATEWAY
from http_bridge.auth import hash_key
from http_bridge.auth_failures import AuthFailureBrake
from http_bridge.errors import ApiError
from http_bridge.idempotency import service_key
from http_bridge.server import start_server

from .support import Clock, FakeRpc, descriptor_of, make_app, wait_until_async

SECRET = "h" * 40
KEY = "ak_hardening-key-for-tests"


class Notes:
    name = "notes"

    @rpc(http="POST /notes")
    def add(self, text: str) -> dict[str, Any]:
        return {}


def echo() -> FakeRpc:
    """Answers each call with its text and the order it ran in."""
    counter = {"n": 0}

    async def handler(service: str, method: str, kwargs: dict[str, Any], context: dict[str, Any]) -> Any:
        counter["n"] += 1
        return {"text": kwargs["text"], "run": counter["n"]}

    return FakeRpc(handler)


@pytest.fixture
def app_for(fed_registry, tmp_path):
    fed_registry.ingest(descriptor_of(Notes))
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[keys]]\nsha256 = "{hash_key(KEY)}"\nprincipal = "erin"\nroles = []\n')

    def build(fake: FakeRpc, **settings: Any):
        options = {"api_keys_file": str(keys), "jwt_hs256_secret": SECRET, "jwt_issuer": "tests",
                   "jwt_audience": "bridge", **settings}
        return make_app(fed_registry, fake, **options)

    return build


Scenario = Callable[[Callable[[str], aiohttp.ClientSession], str], Awaitable[None]]


def serve(app, scenario: Scenario) -> None:
    """``scenario(session_from, base_url)``: ``session_from("127.0.0.2")`` connects from that address."""

    async def main() -> None:
        sessions: list[aiohttp.ClientSession] = []

        def session_from(address: str) -> aiohttp.ClientSession:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))
            sessions.append(session)
            return session

        async with TestServer(app, host="127.0.0.1") as server:
            try:
                await asyncio.wait_for(scenario(session_from, str(server.make_url(""))), timeout=30)
            finally:
                for session in sessions:
                    await session.close()

    asyncio.run(main())


async def post_note(session: aiohttp.ClientSession, url: str, text: str,
                    headers: dict[str, str]) -> tuple[int, Any, Any]:
    async with session.post(url + "/notes", json={"text": text}, headers=headers) as response:
        return response.status, await response.json(), response.headers


# ---------------------------------------------------------------- idempotency keys


def test_anonymous_callers_from_two_addresses_never_share_a_key(app_for):
    fake = echo()
    app = app_for(fake, allow_anonymous=True)

    async def scenario(session_from, url):
        alice, bob = session_from("127.0.0.2"), session_from("127.0.0.3")
        key = {"Idempotency-Key": "order-1"}
        status, body, _ = await post_note(alice, url, "alice's", key)
        assert status == 200 and body == {"text": "alice's", "run": 1}
        # The same key from another address: its own call, neither a replay of alice's nor a 422.
        status, body, headers = await post_note(bob, url, "alice's", key)
        assert status == 200 and body == {"text": "alice's", "run": 2}
        assert "Idempotent-Replayed" not in headers
        status, body, _ = await post_note(bob, url, "bob's", {"Idempotency-Key": "order-2"})
        assert (status, body["run"]) == (200, 3)
        # Each still replays its own, and a different body under one's own key is 422.
        status, body, headers = await post_note(alice, url, "alice's", key)
        assert status == 200 and body["run"] == 1 and headers["Idempotent-Replayed"] == "true"
        status, body, _ = await post_note(alice, url, "something else", key)
        assert status == 422 and body["error"]["code"] == "idempotency_key_reused"
        status, body, headers = await post_note(bob, url, "alice's", key)
        assert body["run"] == 2 and headers["Idempotent-Replayed"] == "true"

        contexts = [call["context"] for call in fake.calls]
        assert len(contexts) == 3
        assert contexts[0]["idempotency_key"] == service_key("anonymous:127.0.0.2", "order-1")
        assert contexts[1]["idempotency_key"] == service_key("anonymous:127.0.0.3", "order-1")
        assert contexts[0]["idempotency_key"] != contexts[1]["idempotency_key"]
        assert all("order-" not in json.dumps(context) for context in contexts)  # never the raw key

    serve(app, scenario)


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(app_for):
    async def scenario(session_from, url):
        proxy = session_from("127.0.0.2")
        key = "order-9"
        first = await post_note(proxy, url, "one", {"Idempotency-Key": key,
                                                    "X-Forwarded-For": "198.51.100.7"})
        other = await post_note(proxy, url, "two", {"Idempotency-Key": key,
                                                    "X-Forwarded-For": "198.51.100.8, 127.0.0.2"})
        return first, other

    results: dict[str, Any] = {}

    def run(name: str, **settings: Any) -> FakeRpc:
        fake = echo()

        async def keep(session_from, url):
            results[name] = await scenario(session_from, url)

        serve(app_for(fake, allow_anonymous=True, **settings), keep)
        return fake

    trusted = run("trusted", trusted_proxies=("127.0.0.0/29",))
    (status_one, _, _), (status_two, body_two, _) = results["trusted"]
    assert status_one == status_two == 200 and body_two["text"] == "two"  # two clients behind the proxy
    assert [call["context"]["idempotency_key"] for call in trusted.calls] == [
        service_key("anonymous:198.51.100.7", "order-9"), service_key("anonymous:198.51.100.8", "order-9")]

    untrusted = run("untrusted")  # a peer that is no trusted proxy: its header is ignored
    (status_one, _, _), (status_two, body_two, _) = results["untrusted"]
    assert (status_one, status_two) == (200, 422) and body_two["error"]["code"] == "idempotency_key_reused"
    assert [call["context"]["idempotency_key"] for call in untrusted.calls] == [
        service_key("anonymous:127.0.0.2", "order-9")]


def test_service_key_is_a_digest_of_scope_and_key():
    digest = service_key("principal:erin", "k")
    assert len(digest) == 64 and int(digest, 16) >= 0 and "k" != digest
    assert digest == service_key("principal:erin", "k")  # every worker, every restart: the same
    assert digest != service_key("principal:erin", "k2") != service_key("principal:eri", "nk")
    assert service_key("a:b", "c") != service_key("a", "b:c")  # length-prefixed, not joined


# ---------------------------------------------------------------- failed credentials


def test_a_401_flood_from_one_address_gets_429_while_another_authenticates(app_for):
    app = app_for(echo(), auth_failure_limit=5, auth_failure_window=60.0)
    store = app[GATEWAY].auth.api_keys
    lookups = {"n": 0}
    real_lookup = store.lookup

    def counting_lookup(key: str):
        lookups["n"] += 1
        return real_lookup(key)

    store.lookup = counting_lookup  # type: ignore[method-assign]

    async def scenario(session_from, url):
        attacker, user = session_from("127.0.0.2"), session_from("127.0.0.3")
        for n in range(5):
            status, _, _ = await post_note(attacker, url, "x", {"X-API-Key": f"ak_guess-{n}"})
            assert status == 401
        assert lookups["n"] == 5
        status, body, headers = await post_note(attacker, url, "x", {"X-API-Key": "ak_guess-5"})
        assert status == 429 and body["error"]["code"] == "too_many_auth_failures"
        assert int(headers["Retry-After"]) >= 1
        # Refused before any verification work, even with a good key or a token.
        status, _, _ = await post_note(attacker, url, "x", {"X-API-Key": KEY})
        assert status == 429
        status, _, _ = await post_note(attacker, url, "x", {"Authorization": "Bearer a.b.c"})
        assert status == 429
        assert lookups["n"] == 5
        # Another address is not affected.
        status, body, _ = await post_note(user, url, "fine", {"X-API-Key": KEY})
        assert status == 200 and body["text"] == "fine"

    serve(app, scenario)


def test_the_brake_drains_refunds_successes_and_reports_when_to_retry():
    clock = Clock()
    brake = AuthFailureBrake(limit=3, window=30.0, max_addresses=100, clock=clock)
    for _ in range(3):
        brake.charge("192.0.2.1")
    with pytest.raises(ApiError) as info:
        brake.charge("192.0.2.1")
    assert info.value.status == 429 and info.value.headers["Retry-After"] == "10"  # 30 s / 3
    clock.advance(10)
    brake.charge("192.0.2.1")  # one failure has drained away: one more attempt
    with pytest.raises(ApiError):
        brake.charge("192.0.2.1")
    # Attempts that verify are refunded: a busy good client never trips it.
    for _ in range(50):
        brake.charge("192.0.2.2")
        brake.refund("192.0.2.2")
    assert len(brake) == 1  # and leaves nothing behind
    # One IPv6 customer line (a /64) is one address; another /64 is another.
    for host in range(3):
        brake.charge(f"2001:db8:1:2::{host + 1}")
    with pytest.raises(ApiError):
        brake.charge("2001:db8:1:2:ffff::9")
    brake.charge("2001:db8:1:3::1")


def test_the_failure_table_is_bounded_under_many_addresses():
    brake = AuthFailureBrake(limit=5, window=60.0, max_addresses=1000, clock=Clock())
    for n in range(50_000):
        brake.charge(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
        assert len(brake) <= 1000
    assert len(brake) == 1000
    # The hottest addresses stay: the last ones seen are still tracked.
    for _ in range(4):
        brake.charge("10.0.195.79")  # n = 49_999
    with pytest.raises(ApiError):
        brake.charge("10.0.195.79")


# ---------------------------------------------------------------- one 401 body


def token(**claims: Any) -> str:
    payload = {"sub": "carol", "iss": "tests", "aud": "bridge", "exp": int(time.time()) + 60, **claims}
    secret = payload.pop("secret", SECRET)
    return jwt.encode(payload, secret, algorithm="HS256")


def test_jwt_failures_give_one_client_body_and_the_log_names_the_reason(app_for, caplog):
    app = app_for(echo())
    cases = {
        "bad signature": (token(secret="x" * 40), "Signature verification failed"),
        "expired": (token(exp=int(time.time()) - 3600), "expired"),
        "wrong audience": (token(aud="another-api"), "InvalidAudienceError"),
        "unknown API key": (None, "unknown API key"),
    }
    answers: dict[str, Any] = {}

    async def scenario(session_from, url):
        session = session_from("127.0.0.2")
        for name, (value, _reason) in cases.items():
            headers = {"X-API-Key": "ak_nobody"} if value is None else {"Authorization": f"Bearer {value}"}
            status, body, response_headers = await post_note(session, url, "x", headers)
            body["error"].pop("id")  # the request id differs, by design
            answers[name] = (status, body, response_headers["WWW-Authenticate"])
        status, _, _ = await post_note(session, url, "x", {"Authorization": f"Bearer {token()}"})
        assert status == 200

    with caplog.at_level(logging.INFO, logger="http_bridge.auth"):
        serve(app, scenario)
    first = answers["bad signature"]
    assert first[0] == 401 and first[1]["error"]["code"] == "unauthorized"
    assert 'error="invalid_token"' in first[2]
    assert all(answer == first for answer in answers.values()), answers
    log = [record for record in caplog.records if record.name == "http_bridge.auth"]
    for name, (value, reason) in cases.items():
        assert any(reason in record.getMessage() for record in log), (name, caplog.text)
        if value is not None:
            assert value not in caplog.text  # the token itself is never logged
    assert all(record.levelno == logging.INFO for record in log)


# ---------------------------------------------------------------- the connection cap


async def request_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One keep-alive GET /healthz on an open connection; its status line."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await asyncio.wait_for(reader.readexactly(length), 5)
    return head.split(b"\r\n")[0]


def test_connections_over_the_cap_are_refused_and_freed_slots_reused(fed_registry):
    settings = BridgeSettings(host="127.0.0.1", port=0, max_connections=3, allow_anonymous=True)

    async def main() -> None:
        app = create_app(Config(), rpc_client=FakeRpc(), registry=fed_registry,  # type: ignore[arg-type]
                         settings=settings)
        gate = app[CONNECTIONS]
        runner, server = await start_server(app, settings)
        port = server.sockets[0].getsockname()[1]
        opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            for _ in range(3):  # keep-alive connections, each served once and left open
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                opened.append((reader, writer))
                assert await request_on(reader, writer) == b"HTTP/1.1 200 OK"
            assert gate.open == 3
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            refused = await asyncio.wait_for(reader.read(), 5)  # answered and closed without a request
            writer.close()
            assert refused.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in refused
            assert json.loads(refused.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "too_many_connections"
            assert gate.refused == 1 and gate.open == 3
            for reader, writer in opened:  # the three still work
                assert await request_on(reader, writer) == b"HTTP/1.1 200 OK"
            _, closing = opened.pop()
            closing.close()
            await wait_until_async(lambda: gate.open == 2, "the closed connection's slot to free")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened.append((reader, writer))
            assert await request_on(reader, writer) == b"HTTP/1.1 200 OK"
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            metrics = (await asyncio.wait_for(reader.readexactly(length), 5)).decode()
            assert "amqprpc_bridge_connections_refused_total 1\n" in metrics
            assert "amqprpc_bridge_connections_open 3\n" in metrics
        finally:
            for _, writer in opened:
                writer.close()
            server.close()
            await runner.cleanup()
            await server.wait_closed()
        assert gate.open == 0

    asyncio.run(main())


# ---------------------------------------------------------------- settings


def test_hardening_settings_are_validated_and_read_from_the_environment():
    config = Config.load(None, env={"AMQPRPC_BRIDGE_MAX_CONNECTIONS": "64",
                                    "AMQPRPC_BRIDGE_AUTH_FAILURE_LIMIT": "7",
                                    "AMQPRPC_BRIDGE_AUTH_FAILURE_WINDOW": "120",
                                    "AMQPRPC_BRIDGE_AUTH_FAILURE_MAX_ADDRESSES": "500",
                                    "AMQPRPC_BRIDGE_TRUSTED_PROXIES": "10.0.0.5, 10.1.0.0/16"})
    settings = BridgeSettings.from_config(config)
    assert (settings.max_connections, settings.auth_failure_limit, settings.auth_failure_window,
            settings.auth_failure_max_addresses) == (64, 7, 120.0, 500)
    assert settings.trusted_proxies == ("10.0.0.5", "10.1.0.0/16")
    defaults = BridgeSettings()
    assert (defaults.max_connections, defaults.auth_failure_limit,
            defaults.auth_failure_window) == (1024, 20, 60.0)
    for bad, named in (({"max_connections": 0}, "max_connections"),
                       ({"auth_failure_limit": -1}, "auth_failure_limit"),
                       ({"auth_failure_window": 0.0}, "auth_failure_window"),
                       ({"auth_failure_max_addresses": 0}, "auth_failure_max_addresses"),
                       ({"trusted_proxies": ("proxy.internal",)}, "'proxy.internal'"),
                       ({"trusted_proxies": ("10.0.0.300",)}, "'10.0.0.300'")):
        with pytest.raises(ConfigError, match=named):
            BridgeSettings(**bad)
    assert BridgeSettings(auth_failure_limit=0).auth_failure_limit == 0  # 0: the brake is off
