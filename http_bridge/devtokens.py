"""Credentials for the bridge made on the command line: API key entries and development JWTs.

Both the ``python -m http_bridge new-key|token`` commands and ``amqprpc bridge new-key|token``
call these functions, so the two spellings cannot drift apart. A token made here is signed
with the HS256 secret the bridge is configured with (``jwt_hs256_secret``): good for
development and tests; in production tokens come from your identity provider.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import jwt

from amqprpc import ConfigError

from .auth import generate_key, hash_key
from .settings import BridgeSettings

MIN_SECRET_BYTES = 32  # what the bridge's JwtVerifier accepts for HS256


def split_roles(text: str) -> list[str]:
    """``"admin, billing"`` -> ``["admin", "billing"]`` (blank entries dropped)."""
    return [role.strip() for role in text.split(",") if role.strip()]


def new_key_entry(principal: str, roles: Iterable[str]) -> tuple[str, str]:
    """A new API key and its ``[[keys]]`` entry for the key file (which holds only its hash)."""
    if not principal.strip():
        raise ConfigError("the principal must not be empty")
    key = generate_key()
    entry = "\n".join([
        "[[keys]]",
        f"sha256 = {json.dumps(hash_key(key))}",
        f"principal = {json.dumps(principal)}",
        f"roles = {json.dumps(list(roles))}",
    ])
    return key, entry


def make_token(secret: str, roles: Iterable[str], *, subject: str = "dev", ttl: float = 3600.0,
               issuer: str = "", audience: str = "", roles_claim: str = "roles",
               now: float | None = None) -> str:
    """An HS256 JWT the bridge accepts with ``jwt_hs256_secret = secret`` (and the same
    ``jwt_issuer``/``jwt_audience``/``jwt_roles_claim``), valid for ``ttl`` seconds."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"the secret must be at least {MIN_SECRET_BYTES} bytes, as the bridge's "
                          "jwt_hs256_secret must be")
    if not subject:
        raise ConfigError("the subject (--sub) must not be empty")
    if ttl <= 0:
        raise ConfigError(f"the lifetime (--ttl) must be positive, got {ttl:g}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"sub": subject, roles_claim: list(roles), "iat": issued,
                                 "exp": issued + int(ttl)}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


def token_for(settings: BridgeSettings, roles: Iterable[str], *, secret: str | None = None,
              subject: str = "dev", ttl: float = 3600.0) -> str:
    """A token the bridge configured with ``settings`` accepts: its issuer, audience and
    roles claim, signed with ``secret`` or else its own ``jwt_hs256_secret``."""
    secret = secret or settings.jwt_hs256_secret
    if not secret:
        raise ConfigError("no secret: pass --secret, or set bridge.jwt_hs256_secret "
                          "(AMQPRPC_BRIDGE_JWT_HS256_SECRET) in the config the bridge uses")
    return make_token(secret, roles, subject=subject, ttl=ttl, issuer=settings.jwt_issuer,
                      audience=settings.jwt_audience, roles_claim=settings.jwt_roles_claim)
