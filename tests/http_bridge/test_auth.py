"""Credentials: API key files, HS256 and RS256 tokens, role checks."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import CIMultiDict, CIMultiDictProxy

from amqprpc import ConfigError
from http_bridge.auth import ApiKeyStore, Authenticator, JwtVerifier, generate_key, hash_key
from http_bridge.errors import ApiError


def headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({key.replace("_", "-"): value for key, value in values.items()}))


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def test_rs256_tokens_and_no_algorithm_confusion(rsa_keys):
    private, public = rsa_keys
    verifier = JwtVerifier(rs256_public_key=public, issuer="idp", audience="api")
    claims = {"sub": "dana", "iss": "idp", "aud": "api", "exp": time.time() + 60, "roles": "admin ops"}
    identity = verifier.verify(jwt.encode(claims, private, algorithm="RS256"))
    assert identity.principal == "dana" and identity.roles == {"admin", "ops"}
    # HS256 signed with the public key as the secret: the classic confusion attack.
    forged = jwt.encode(claims, "x" * 64, algorithm="HS256")
    with pytest.raises(ApiError) as info:
        verifier.verify(forged)
    assert info.value.status == 401
    for missing in ("exp", "sub", "iss", "aud"):
        token = jwt.encode({k: v for k, v in claims.items() if k != missing}, private, algorithm="RS256")
        with pytest.raises(ApiError):
            verifier.verify(token)
    with pytest.raises(ConfigError):
        JwtVerifier(rs256_public_key="not a key")
    with pytest.raises(ConfigError):
        JwtVerifier(hs256_secret="short")


def test_api_key_file(tmp_path):
    key = generate_key()
    path = tmp_path / "keys.toml"
    path.write_text(f'[[keys]]\nsha256 = "{hash_key(key)}"\nprincipal = "ci"\nroles = ["deploy"]\n')
    store = ApiKeyStore.load(path)
    assert store.lookup(key).principal == "ci" and store.lookup(key + "x") is None
    assert key not in path.read_text()
    for bad in ('[[keys]]\nsha256 = "abc"\nprincipal = "x"\n',
                f'[[keys]]\nsha256 = "{hash_key(key)}"\n',
                f'[[keys]]\nsha256 = "{hash_key(key)}"\nprincipal = "a"\n[[keys]]\n'
                f'sha256 = "{hash_key(key)}"\nprincipal = "b"\n',
                "not toml ["):
        path.write_text(bad)
        with pytest.raises(ConfigError):
            ApiKeyStore.load(path)
    with pytest.raises(ConfigError):
        ApiKeyStore.load(tmp_path / "missing.toml")


def test_authorize_roles_public_and_fail_closed():
    auth = Authenticator(None, None)
    assert asyncio.run(auth.identify(headers(), client="192.0.2.1")) is None
    with pytest.raises(ApiError) as info:
        auth.authorize(None, public=False, roles=())
    assert info.value.status == 401 and "WWW-Authenticate" in info.value.headers
    with pytest.raises(ApiError):  # credentials nobody can check are refused, not ignored
        asyncio.run(auth.identify(headers(X_API_Key="anything"), client="192.0.2.1"))
    assert auth.authorize(None, public=True, roles=("admin",)).method == "anonymous"
    anonymous_ok = Authenticator(None, None, allow_anonymous=True)
    assert anonymous_ok.authorize(None, public=False, roles=()).method == "anonymous"
    with pytest.raises(ApiError) as info:
        anonymous_ok.authorize(None, public=False, roles=("admin",))
    assert info.value.status == 401

    class Broken:
        def lookup(self, key: str) -> None:
            raise RuntimeError("corrupt store")

    broken = Authenticator(Broken(), None)  # type: ignore[arg-type]
    with pytest.raises(ApiError) as info:
        asyncio.run(broken.identify(headers(X_API_Key="k"), client="192.0.2.1"))
    assert info.value.status == 401
