"""JWT keys from a JWKS URL: cache, rotation, rate-limited refetch, fail closed, no alg confusion.

The identity provider is a local aiohttp server whose key set the tests change; time is a
fake clock on the bridge's ``JwksKeys`` (cache lifetime and refetch interval), so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from amqprpc import Config, ConfigError
from http_bridge import BridgeSettings, create_app
from http_bridge.app import GATEWAY
from http_bridge.jwks import JwksKeys, JwksUnavailable, parse_jwks

from .support import Clock, FakeRpc, descriptor_of, make_app
from .test_cors import Shop
from .test_end_to_end import INTERVAL, make_service, poll

ISSUER = "https://idp.test/"
AUDIENCE = "shop-api"
HS_SECRET = "h" * 40


class Idp:
    """A JWKS endpoint: serves ``jwks()`` of its keys; ``mode`` breaks it on demand."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}  # kid -> public JWK
        self.requests = 0
        self.mode = "up"  # "up" | "500" | "garbage" | "hang"
        self.app = web.Application()
        self.app.router.add_get("/jwks.json", self._serve)
        self.release = asyncio.Event()

    def add(self, kid: str, private: Any, **members: Any) -> None:
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[_alg_of(private)].to_jwk(
            private.public_key()))
        self.keys[kid] = {**jwk, "kid": kid, "use": "sig", **members}

    async def _serve(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.mode == "500":
            return web.Response(status=500, text="down for maintenance")
        if self.mode == "garbage":
            return web.Response(text="<html>login</html>", content_type="text/html")
        if self.mode == "hang":
            await self.release.wait()
        return web.json_response({"keys": list(self.keys.values())})


def _alg_of(private: Any) -> str:
    if isinstance(private, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return "ES256"
    return "EdDSA"


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "dana", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60,
            "roles": ["buyer"], **extra}


def token(private: Any, kid: str | None, algorithm: str = "RS256", **extra: Any) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**extra), private, algorithm=algorithm, headers=headers)


def forge(header: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand: what an attacker sends (PyJWT refuses to sign some of these)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


Scenario = Callable[[TestClient, Idp, JwksKeys, FakeRpc], Awaitable[None]]


def run_with_idp(fed_registry, idp_setup: Callable[[Idp], None], scenario: Scenario,
                 **settings: Any) -> None:
    """The identity provider and the bridge on loopback ports; ``scenario`` drives both."""
    fed_registry.ingest(descriptor_of(Shop))

    async def main() -> None:
        idp = Idp()
        idp_setup(idp)
        async with TestServer(idp.app) as server:
            options = {"jwt_jwks_url": str(server.make_url("/jwks.json")), "jwt_issuer": ISSUER,
                       "jwt_audience": AUDIENCE, **settings}
            fake = FakeRpc()
            app = make_app(fed_registry, fake, **options)
            keys = app[GATEWAY].auth.jwt.jwks
            keys.clock = Clock()
            try:
                async with TestClient(TestServer(app)) as client:
                    await asyncio.wait_for(scenario(client, idp, keys, fake), timeout=30)
            finally:
                idp.release.set()

    asyncio.run(main())


async def status_of(client: TestClient, value: str) -> tuple[int, dict[str, Any], Any]:
    response = await client.get("/items/1", headers=bearer(value))
    return response.status, await response.json(), response


def test_keys_are_fetched_once_and_cached_for_their_lifetime(fed_registry, rsa_keys):
    key = rsa_keys[0]

    async def scenario(client, idp, keys, fake):
        status, body, _ = await status_of(client, token(key, "k1"))
        assert status == 200, body
        assert fake.calls[-1]["context"]["user_id"] == "dana"
        assert fake.calls[-1]["context"]["roles"] == ["buyer"]
        for _ in range(5):
            assert (await status_of(client, token(key, "k1")))[0] == 200
        assert idp.requests == 1
        keys.clock.advance(299)
        assert (await status_of(client, token(key, "k1")))[0] == 200
        assert idp.requests == 1
        keys.clock.advance(2)  # past the 300 s lifetime: fetched again when next needed
        assert (await status_of(client, token(key, "k1")))[0] == 200
        assert idp.requests == 2

    run_with_idp(fed_registry, lambda idp: idp.add("k1", key), scenario)


def test_rotation_new_kid_is_fetched_and_removed_kid_refused(fed_registry, rsa_keys, caplog):
    old, new = rsa_keys[0], rsa_keys[1]

    async def scenario(client, idp, keys, fake):
        assert (await status_of(client, token(old, "2024")))[0] == 200
        # The provider rotates: a new key appears, the old one goes.
        idp.add("2025", new)
        del idp.keys["2024"]
        keys.clock.advance(31)  # past the refetch interval, well within the cache lifetime
        status, body, _ = await status_of(client, token(new, "2025"))
        assert status == 200, body
        assert idp.requests == 2
        status, body, response = await status_of(client, token(old, "2024"))
        assert status == 401 and "2024" not in body["error"]["message"]  # the reason is logged only
        assert "invalid_token" in response.headers["WWW-Authenticate"]
        assert idp.requests == 2  # the set was fetched moments ago: not again

    with caplog.at_level(logging.INFO, logger="http_bridge.auth"):
        run_with_idp(fed_registry, lambda idp: idp.add("2024", old), scenario)
    assert "no signing key '2024'" in caplog.text


def test_unknown_kids_cannot_hammer_the_provider(fed_registry, rsa_keys):
    key, stranger = rsa_keys[0], rsa_keys[2]

    async def scenario(client, idp, keys, fake):
        assert (await status_of(client, token(key, "k1")))[0] == 200
        assert idp.requests == 1

        async def one(n: int) -> int:
            response = await client.get("/items/1", headers=bearer(token(stranger, f"bogus-{n}")))
            await response.read()
            return response.status

        async def flood(count: int) -> list[int]:
            return list(await asyncio.gather(*(one(n) for n in range(count))))

        assert await flood(30) == [401] * 30
        assert idp.requests == 1  # a fetch started less than 30 s ago: none now
        keys.clock.advance(30)
        assert await flood(30) == [401] * 30
        assert idp.requests == 2  # one fetch, shared by all 30 concurrent requests
        keys.clock.advance(10)
        assert await flood(5) == [401] * 5
        assert idp.requests == 2
        assert (await status_of(client, token(key, "k1")))[0] == 200  # known keys unaffected
        assert fake.calls and all(call["context"]["user_id"] == "dana" for call in fake.calls)
        assert len(fake.calls) == 2  # only the two valid tokens reached RPC

    # The brake on failed credentials (test_hardening.py) is off: this is about the provider.
    run_with_idp(fed_registry, lambda idp: idp.add("k1", key), scenario, auth_failure_limit=0)


def test_provider_down_is_503_for_new_keys_and_cached_keys_keep_working(fed_registry, rsa_keys):
    key, rotated = rsa_keys[0], rsa_keys[1]

    async def scenario(client, idp, keys, fake):
        assert (await status_of(client, token(key, "k1")))[0] == 200
        for mode in ("500", "garbage"):
            idp.mode = mode
            keys.clock.advance(400)  # the cache has expired: the next token triggers a fetch, which fails
            requests = idp.requests
            status, body, _ = await status_of(client, token(key, "k1"))
            assert status == 200, body  # the cached key still verifies
            assert idp.requests == requests + 1
            status, body, response = await status_of(client, token(rotated, "k2"))
            assert status == 503 and body["error"]["code"] == "auth_keys_unavailable", body
            assert 1 <= int(response.headers["Retry-After"]) <= 30
            assert idp.requests == requests + 1  # the failed fetch was moments ago: not again
        keys.clock.advance(30)
        status, body, _ = await status_of(client, token(rotated, "k2"))
        assert status == 503 and idp.requests == 4
        # Back up, with the new key: it verifies at the next allowed fetch.
        idp.mode = "up"
        idp.add("k2", rotated)
        keys.clock.advance(30)
        assert (await status_of(client, token(rotated, "k2")))[0] == 200
        assert fake.calls and len(fake.calls) == 4

    run_with_idp(fed_registry, lambda idp: idp.add("k1", key), scenario)


def test_a_slow_fetch_holds_up_only_the_request_that_needs_it(fed_registry, rsa_keys):
    key = rsa_keys[0]

    async def scenario(client, idp, keys, fake):
        assert (await status_of(client, token(key, "k1")))[0] == 200
        idp.mode = "hang"
        keys.clock.advance(400)  # expired: the next token fetches again, and the IdP is slow
        first = asyncio.create_task(status_of(client, token(key, "k1")))
        while idp.requests < 2:
            await asyncio.sleep(0.01)
        for _ in range(3):  # the key is cached: these do not wait for the fetch
            assert (await status_of(client, token(key, "k1")))[0] == 200
        assert not first.done()
        idp.mode = "up"
        idp.release.set()
        assert (await first)[0] == 200
        assert idp.requests == 2

    run_with_idp(fed_registry, lambda idp: idp.add("k1", key), scenario)


def test_provider_unreachable_or_slow_from_the_start_is_503(fed_registry, rsa_keys):
    key = rsa_keys[0]

    async def scenario(client, idp, keys, fake):
        idp.mode = "hang"
        status, body, _ = await status_of(client, token(key, "k1"))
        assert status == 503 and body["error"]["code"] == "auth_keys_unavailable"
        assert "could not be fetched" in body["error"]["message"]
        keys.url = "http://127.0.0.1:9/jwks.json"  # nothing listens on the discard port
        keys.clock.advance(30)
        status, body, _ = await status_of(client, token(key, "k1"))
        assert status == 503 and body["error"]["code"] == "auth_keys_unavailable"
        assert fake.calls == []

    run_with_idp(fed_registry, lambda idp: idp.add("k1", key), scenario, jwt_jwks_timeout=0.2)


def test_tokens_not_signed_by_the_set_are_401(fed_registry, rsa_keys):
    key, stranger = rsa_keys[0], rsa_keys[2]
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        weak_token = token(weak, "weak")

    def keys_of(idp: Idp) -> None:
        idp.add("k1", key)
        idp.add("weak", weak)

    async def scenario(client, idp, keys, fake):
        for value in (weak_token,  # a key of the set, but too short to trust
                      token(stranger, "k1"),  # a key of the set's kid, another key's signature
                      token(stranger, "stranger"),  # a kid the set never had
                      token(key, "k1", exp=int(time.time()) - 3600),
                      token(key, "k1", aud="another-api"),
                      token(key, "k1", iss="https://evil.test/"),
                      token(key, None),  # no kid: no key of the set can be chosen
                      forge({"alg": "HS256", "kid": "k1"}, HS_SECRET.encode()),  # no static secret here
                      "not.a.token"):
            status, body, response = await status_of(client, value)
            assert status == 401, (value, body)
            assert "invalid_token" in response.headers["WWW-Authenticate"]
        assert fake.calls == []

    run_with_idp(fed_registry, keys_of, scenario)


def test_algorithm_confusion_is_refused(fed_registry, rsa_keys):
    key = rsa_keys[0]
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    shared = b"a-symmetric-key-the-idp-published"

    def keys_of(idp: Idp) -> None:
        idp.add("rsa", key)
        idp.add("pss-only", key, alg="PS256")
        idp.add("ec", ec_key)
        idp.add("ed", ed_key)
        idp.keys["oct"] = {"kty": "oct", "kid": "oct", "k": base64.urlsafe_b64encode(shared).decode()}

    async def scenario(client, idp, keys, fake):
        # Keys of every asymmetric family verify their own tokens.
        for value in (token(key, "rsa"), token(key, "rsa", "RS512"), token(key, "rsa", "PS256"),
                      token(key, "pss-only", "PS256"), token(ec_key, "ec", "ES256"),
                      token(ed_key, "ed", "EdDSA"), token(HS_SECRET, None, "HS256")):
            status, body, _ = await status_of(client, value)
            assert status == 200, (value, body)
        attacks = {
            "HS256 signed with the RSA public key": forge({"alg": "HS256", "kid": "rsa", "typ": "JWT"},
                                                          public_pem),
            "HS256 with the kid of a key of the set": forge({"alg": "HS256", "kid": "rsa"}, b"x" * 40),
            "alg none": forge({"alg": "none", "kid": "rsa"}, None),
            "alg None": forge({"alg": "None", "kid": "rsa"}, None),
            "a symmetric key published in the set": forge({"alg": "HS256", "kid": "oct"}, shared),
            "RS256 on a key that declares PS256": token(key, "pss-only", "RS256"),
            "ES256 header on an RSA key": token(ec_key, "rsa", "ES256"),
            "RS256 header on an EC key": token(key, "ec", "RS256"),
            "ES384 on a P-256 key": token(ec.generate_private_key(ec.SECP384R1()), "ec", "ES384"),
            "alg as a list": forge({"alg": ["RS256"], "kid": "rsa"}, None),
        }
        for name, value in attacks.items():
            status, body, _ = await status_of(client, value)
            assert status == 401, (name, body)
        assert len(fake.calls) == 7

    run_with_idp(fed_registry, keys_of, scenario, jwt_hs256_secret=HS_SECRET)


def test_parse_jwks_keeps_only_asymmetric_signing_keys(rsa_keys):
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_keys[0].public_key()))
    body = {"keys": [
        {**rsa_jwk, "kid": "good"},
        {**rsa_jwk, "kid": "encryption", "use": "enc"},
        {**rsa_jwk},  # no kid
        {**rsa_jwk, "kid": "good"},  # the same kid twice: the first stays
        {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
        {**rsa_jwk, "kid": "wrong-alg", "alg": "HS256"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        {"kty": "EC", "kid": "odd-curve", "crv": "P-192", "x": "AA", "y": "AA"},
        "not an object",
    ]}
    keys = parse_jwks(json.dumps(body).encode())
    assert set(keys) == {"good"}
    assert "RS256" in keys["good"].algorithms and "HS256" not in keys["good"].algorithms
    for bad in (b"<html>", b"[]", b'{"keys": {}}', json.dumps({"keys": [body["keys"][4]]}).encode()):
        with pytest.raises(JwksUnavailable):
            parse_jwks(bad)


def test_jwks_settings(tmp_path):
    settings = BridgeSettings.from_config(Config.load(None, env={
        "AMQPRPC_BRIDGE_JWT_JWKS_URL": "https://idp.example.com/.well-known/jwks.json",
        "AMQPRPC_BRIDGE_JWT_JWKS_CACHE_TTL": "600", "AMQPRPC_BRIDGE_JWT_JWKS_REFETCH_INTERVAL": "60",
        "AMQPRPC_BRIDGE_JWT_JWKS_TIMEOUT": "2.5"}))
    assert settings.jwt_jwks_url.endswith("jwks.json")
    assert (settings.jwt_jwks_cache_ttl, settings.jwt_jwks_refetch_interval, settings.jwt_jwks_timeout) == (
        600.0, 60.0, 2.5)
    assert BridgeSettings().jwt_jwks_cache_ttl == 300.0
    assert BridgeSettings(jwt_jwks_url="http://localhost:8080/jwks").jwt_jwks_url  # local IdP: fine
    for changes, named in (({"jwt_jwks_url": "http://idp.example.com/jwks"}, "jwt_jwks_url"),
                           ({"jwt_jwks_url": "idp.example.com/jwks"}, "jwt_jwks_url"),
                           ({"jwt_jwks_cache_ttl": 0}, "jwt_jwks_cache_ttl"),
                           ({"jwt_jwks_refetch_interval": -1}, "jwt_jwks_refetch_interval"),
                           ({"jwt_jwks_timeout": 0}, "jwt_jwks_timeout")):
        with pytest.raises(ConfigError, match=f"bridge.{named}"):
            BridgeSettings(**changes)


@pytest.mark.integration
def test_browser_call_with_a_jwks_token_through_a_real_worker(container_factory, unique_name, amqp_uri,
                                                              rsa_keys):
    """The two together, on the real broker: a page on another origin, a token from the IdP."""
    name = unique_name("items")
    origin = "https://shop.example.com"
    release = threading.Event()
    idp = Idp()
    idp.add("live", rsa_keys[0])
    config = Config(broker_url=amqp_uri, discovery_interval=INTERVAL, rpc_timeout=5)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None, lambda: container_factory(make_service(name, release), discovery_interval=INTERVAL))
        async with TestServer(idp.app) as server:
            settings = BridgeSettings(jwt_jwks_url=str(server.make_url("/jwks.json")), jwt_issuer=ISSUER,
                                      jwt_audience=AUDIENCE, cors_allowed_origins=(origin,))
            app = create_app(config, settings=settings)  # owns its client and registry
            async with TestClient(TestServer(app)) as client:
                await poll(client, f"/{name}/items/1", 401, 5)  # the route is live
                response = await client.options(f"/{name}/items", headers={
                    "Origin": origin, "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type"})
                assert response.status == 204
                assert idp.requests == 0  # a preflight checks no credentials
                response = await client.post(f"/{name}/items", json={"label": "x"}, headers={
                    "Origin": origin, **bearer(token(rsa_keys[0], "live", roles=["admin"]))})
                assert response.status == 200, await response.text()
                assert await response.json() == {"label": "x", "count": 1}
                assert response.headers["Access-Control-Allow-Origin"] == origin
                assert idp.requests == 1
                response = await client.post(f"/{name}/items", json={"label": "x"}, headers={
                    "Origin": origin, **bearer(token(rsa_keys[0], "live"))})
                assert response.status == 403  # the token's roles reach the route check
                assert response.headers["Access-Control-Allow-Origin"] == origin

    asyncio.run(asyncio.wait_for(main(), timeout=45))
