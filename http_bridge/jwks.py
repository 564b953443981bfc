"""Token signing keys from the identity provider's JWKS URL, fetched and cached. Fails closed.

A token names its key by ``kid``; ``JwksKeys.key_for(kid, alg)`` answers the key, which
``auth.JwtVerifier`` then verifies the token with:

* The key set is fetched with aiohttp's client (never a blocking call on the event loop),
  kept ``cache_ttl`` seconds, then fetched again when a token next needs it; while that
  fetch runs, other tokens whose key is cached do not wait for it.
* A ``kid`` not in the set triggers a fetch (the provider rotated its keys), but at most
  one fetch starts per ``refetch_interval`` whatever the reason, and concurrent requests
  share it: a flood of tokens with made-up kids costs the provider one request per
  interval. A kid still unknown after a fetch is 401.
* The provider unreachable, slow (``timeout``), answering non-200, a redirect, or a body
  that is not a key set: the fetch failed. Keys already cached keep working (the old set
  stays, past its lifetime); a token that needs a key the bridge does not have answers
  503 ``auth_keys_unavailable`` with ``Retry-After``: never 200 on an unverified token.
* Only signature keys for asymmetric algorithms are kept: RSA (RS*/PS*), EC (ES* by
  curve), OKP Ed25519 (EdDSA). Symmetric (``kty: oct``) keys, keys with ``use`` other than
  ``sig``, keys without a ``kid`` and keys that do not parse are skipped (and logged).
  A key's ``alg``, when it has one, is the only algorithm accepted with it; a token whose
  ``alg`` is ``none``, ``HS*`` or does not fit the key is refused.

Each bridge process (``--workers N``) keeps its own cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from .errors import ApiError, CredentialsRefused

_log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1024 * 1024
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
ASYMMETRIC_ALGORITHMS = _RSA | frozenset(_EC_BY_CURVE.values()) | {"EdDSA"}


@dataclass(frozen=True)
class SigningKey:
    """One usable key of the set: the public key and the algorithms it verifies."""

    kid: str
    key: Any  # a cryptography public key object
    algorithms: frozenset[str]


class JwksUnavailable(Exception):
    """A fetch of the key set failed: unreachable, timed out, or an answer that is no key set."""


class JwksKeys:
    """The cached key set of one JWKS URL; owned by the app's Authenticator (one per process)."""

    def __init__(self, url: str, *, cache_ttl: float = 300.0, refetch_interval: float = 30.0,
                 timeout: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.cache_ttl = cache_ttl
        self.refetch_interval = refetch_interval
        self.timeout = timeout
        self.clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch started
        self._failure: str | None = None  # why the last fetch failed; None if it worked
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str, algorithm: str) -> Any:
        """The public key to verify a token of ``kid``/``algorithm``; CredentialsRefused (401) or 503."""
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise CredentialsRefused(f"algorithm {algorithm!r} is not accepted with the key set")
        key = self._keys.get(kid)
        # A known key does not wait for a fetch another request already runs (the IdP may be slow).
        if key is None or (self._stale() and not self._lock.locked()):
            await self._refresh()
            key = self._keys.get(kid)
        if key is None:
            if self._failure is not None:
                retry = max(1, math.ceil(self._next_fetch_in()))
                raise ApiError(503, "auth_keys_unavailable",
                               "the identity provider's signing keys could not be fetched; try again later",
                               headers={"Retry-After": str(retry)})
            raise CredentialsRefused(f"no signing key {kid[:100]!r} in the identity provider's key set")
        if algorithm not in key.algorithms:
            raise CredentialsRefused(f"algorithm {algorithm} does not fit key {kid[:100]!r}")
        return key.key

    def _stale(self) -> bool:
        return self._fetched_at is None or self.clock() - self._fetched_at >= self.cache_ttl

    def _next_fetch_in(self) -> float:
        if self._attempted_at is None:
            return 0.0
        return self._attempted_at + self.refetch_interval - self.clock()

    async def _refresh(self) -> None:
        """Fetch the set unless a fetch started less than ``refetch_interval`` ago."""
        asked_at = self.clock()
        async with self._lock:
            if self._attempted_at is not None and self._attempted_at >= asked_at:
                return  # another request fetched while this one waited: use its result
            if self._next_fetch_in() > 0:
                return  # rate limit: the set (or the failure) of the last fetch stands
            self._attempted_at = self.clock()
            try:
                keys = await self._fetch()
            except JwksUnavailable as exc:
                self._failure = str(exc)
                _log.warning("JWKS %s: %s (%d cached keys still used)", self.url, exc, len(self._keys))
                return
            self._keys, self._fetched_at, self._failure = keys, self.clock(), None
            _log.info("JWKS %s: %d signing keys (%s)", self.url, len(keys), ", ".join(sorted(keys)))

    async def _fetch(self) -> dict[str, SigningKey]:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
                async with session.get(self.url, allow_redirects=False,
                                       headers={"Accept": "application/json"}) as response:
                    if response.status != 200:
                        raise JwksUnavailable(f"answered HTTP {response.status} (redirects are not followed)")
                    body = bytearray()
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        body += chunk
                        if len(body) > MAX_JWKS_BYTES:
                            raise JwksUnavailable(f"the key set is larger than {MAX_JWKS_BYTES} bytes")
        except TimeoutError:
            raise JwksUnavailable(f"no complete answer within {self.timeout}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise JwksUnavailable(f"unreachable: {type(exc).__name__}: {exc}") from None
        return parse_jwks(bytes(body))


def parse_jwks(body: bytes) -> dict[str, SigningKey]:
    """kid -> usable key; JwksUnavailable when the body is no key set or has no usable key."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise JwksUnavailable("the answer is not JSON") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise JwksUnavailable('the answer has no "keys" list')
    keys: dict[str, SigningKey] = {}
    for index, entry in enumerate(entries):
        try:
            key = _signing_key(entry)
        except ValueError as exc:
            _log.warning("JWKS key %d skipped: %s", index, exc)
            continue
        if key.kid in keys:
            _log.warning("JWKS key %d skipped: kid %r appears twice", index, key.kid)
            continue
        keys[key.kid] = key
    if not keys:
        raise JwksUnavailable("the key set has no usable signing key")
    return keys


def _signing_key(entry: Any) -> SigningKey:
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    kid, kty, alg, use = entry.get("kid"), entry.get("kty"), entry.get("alg"), entry.get("use")
    if not isinstance(kid, str) or not kid:
        raise ValueError("no kid (tokens find their key by kid)")
    if use is not None and use != "sig":
        raise ValueError(f"kid {kid!r}: use {use!r} is not sig")
    if kty == "RSA":
        family = _RSA
    elif kty == "EC":
        curve = _EC_BY_CURVE.get(entry.get("crv", ""))
        if curve is None:
            raise ValueError(f"kid {kid!r}: unsupported curve {entry.get('crv')!r}")
        family = frozenset({curve})
    elif kty == "OKP" and entry.get("crv") == "Ed25519":
        family = frozenset({"EdDSA"})
    else:
        raise ValueError(f"kid {kid!r}: key type {kty!r} is not an accepted asymmetric key")
    if alg is not None and alg not in family:
        raise ValueError(f"kid {kid!r}: alg {alg!r} does not fit key type {kty}")
    algorithms = frozenset({alg}) if alg is not None else family
    try:
        key = jwt.PyJWK(entry, algorithm=min(algorithms)).key
    except Exception as exc:  # PyJWT's errors, or a malformed member (missing "n", bad base64...)
        raise ValueError(f"kid {kid!r}: unusable key: {exc}") from None
    return SigningKey(kid, key, algorithms)
