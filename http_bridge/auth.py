"""Who is calling: API keys and JWT bearer tokens, checked locally. Fails closed.

* API keys: ``X-API-Key: <key>``. The bridge holds only SHA-256 hashes of the keys, in a
  TOML file loaded at start (a missing or malformed file stops the bridge from starting)::

      [[keys]]
      sha256 = "9f86d08..."          # python -m http_bridge hash-key <key>
      principal = "billing-batch"
      roles = ["billing"]

  Keys are random 256-bit tokens, so one fast hash is enough (no password stretching):
  nobody can guess a key from its hash, and a lookup costs microseconds.
* JWT: ``Authorization: Bearer <token>``, verified by PyJWT: HS256 with a shared secret
  and/or RS256 with a public key, each only with its own key (no algorithm confusion);
  and/or the identity provider's JWKS URL (``http_bridge.jwks``): a token whose header
  has a ``kid`` and an asymmetric ``alg`` is verified with that key of the set, fetched
  and cached without blocking the event loop. ``exp`` and ``sub`` are required, ``iss``
  and ``aud`` whenever configured; ``sub`` is the principal and the ``roles`` claim (a
  list, or a space-separated string) the roles. Tokens the bridge issued itself
  (``token_endpoint``; a ``kid`` of its signing key, EdDSA, its ``token_issuer``) are
  verified with its own key (``signing_keys``), whatever else is configured.

Errors: credentials that are present but wrong -> 401 with ``WWW-Authenticate``, one
fixed body whatever the reason (``errors.CredentialsRefused``; the reason is logged at
info, never the credential itself); any unexpected failure while checking them -> the
same 401 (logged with its traceback), never a pass; a token whose key could not be
fetched from the JWKS URL -> 503 (``jwks``). Failed credentials are counted per client
address (``auth_failures``): past the limit, 429 before any verification work.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from multidict import CIMultiDictProxy

from amqprpc import ConfigError

from .auth_failures import AuthFailureBrake
from .errors import ApiError, CredentialsRefused
from .jwks import ASYMMETRIC_ALGORITHMS, JwksKeys
from .settings import BridgeSettings
from .signing_keys import ALGORITHM as LOCAL_ALGORITHM
from .signing_keys import SigningKey

_log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHALLENGE = 'Bearer realm="amqprpc", ApiKey realm="amqprpc" header="X-API-Key"'


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller: what reaches the service as ``user_id`` and ``roles``."""

    principal: str
    roles: frozenset[str]
    method: str  # "api_key" | "jwt" | "anonymous"

    def context(self) -> dict[str, Any]:
        if self.method == "anonymous":
            return {}
        return {"user_id": self.principal, "roles": sorted(self.roles)}


ANONYMOUS = Identity("", frozenset(), "anonymous")


def generate_key() -> str:
    """A new random API key (256 bits)."""
    return "ak_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeyStore:
    """Hashed API keys -> identities, from a TOML file."""

    def __init__(self, entries: dict[str, Identity]) -> None:
        self._by_hash = entries

    @classmethod
    def load(cls, path: str | Path) -> ApiKeyStore:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"API key file not found: {path}") from None
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"API key file {path} is unreadable: {exc}") from None
        entries: dict[str, Identity] = {}
        for index, raw in enumerate(data.get("keys") or []):
            where = f"{path}: keys[{index}]"
            digest = str(raw.get("sha256", "")).lower() if isinstance(raw, dict) else ""
            if not _HEX64.match(digest):
                raise ConfigError(f"{where}: sha256 must be 64 hex digits")
            principal = raw.get("principal")
            roles = raw.get("roles", [])
            if not isinstance(principal, str) or not principal:
                raise ConfigError(f"{where}: principal must be a non-empty string")
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise ConfigError(f"{where}: roles must be a list of strings")
            if digest in entries:
                raise ConfigError(f"{where}: the same key hash appears twice")
            entries[digest] = Identity(principal, frozenset(roles), "api_key")
        return cls(entries)

    def lookup(self, key: str) -> Identity | None:
        return self._by_hash.get(hash_key(key))

    def __len__(self) -> int:
        return len(self._by_hash)


class JwtVerifier:
    """Bearer tokens signed HS256 (shared secret), RS256 (public key) and/or by a JWKS key."""

    def __init__(self, *, hs256_secret: str = "", rs256_public_key: str = "", issuer: str = "",
                 audience: str = "", leeway: float = 30.0, roles_claim: str = "roles",
                 jwks: JwksKeys | None = None, local: SigningKey | None = None) -> None:
        self.jwks = jwks
        self.local = local  # the bridge's own signing key: tokens from /auth/token
        self._keys: dict[str, Any] = {}
        if hs256_secret:
            if len(hs256_secret.encode()) < 32:
                raise ConfigError("bridge.jwt_hs256_secret must be at least 32 bytes")
            self._keys["HS256"] = hs256_secret
        if rs256_public_key:
            try:
                self._keys["RS256"] = jwt.algorithms.RSAAlgorithm(
                    jwt.algorithms.RSAAlgorithm.SHA256).prepare_key(rs256_public_key)
            except Exception as exc:
                raise ConfigError(f"bridge: the RS256 public key is not a valid PEM key: {exc}") from None
        self.issuer = issuer or None
        self.audience = audience or None
        self.leeway = leeway
        self.roles_claim = roles_claim
        required = ["exp", "sub"]
        if self.issuer:
            required.append("iss")
        if self.audience:
            required.append("aud")
        self._options = {"require": required, "verify_aud": bool(self.audience)}
        # Keys from the network: too short a key is refused, not merely warned about.
        self._jwks_options = {**self._options, "enforce_minimum_key_length": True}

    async def verify_token(self, token: str) -> Identity:
        """The identity a token proves, with the static keys or the JWKS; CredentialsRefused (or 503)."""
        if self.local is not None:
            try:
                header = jwt.get_unverified_header(token)
            except jwt.PyJWTError as exc:
                raise CredentialsRefused(f"invalid token: {exc}") from None
            if header.get("kid") == self.local.kid and header.get("alg") == LOCAL_ALGORITHM:
                return self._decode_local(token, self.local)
        if self.jwks is not None:
            try:
                header = jwt.get_unverified_header(token)
            except jwt.PyJWTError as exc:
                raise CredentialsRefused(f"invalid token: {exc}") from None
            kid, algorithm = header.get("kid"), header.get("alg")
            if isinstance(kid, str) and isinstance(algorithm, str) and algorithm in ASYMMETRIC_ALGORITHMS:
                key = await self.jwks.key_for(kid, algorithm)
                return self._decode(token, key, algorithm, self._jwks_options)
            if not self._keys:
                raise CredentialsRefused("invalid token: expected a kid and an asymmetric alg (RS256, "
                                         f"ES256, EdDSA...), got alg {algorithm!r}")
        return self.verify(token)

    def verify(self, token: str) -> Identity:
        """The identity a token proves with the static keys; CredentialsRefused if it does not verify."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise CredentialsRefused(f"invalid token: {exc}") from None
        key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None or not isinstance(algorithm, str):
            raise CredentialsRefused(f"invalid token: algorithm {algorithm!r} is not accepted")
        return self._decode(token, key, algorithm, self._options)

    def _decode_local(self, token: str, key: SigningKey) -> Identity:
        try:
            claims = key.decode(token, leeway=self.leeway)
        except jwt.ExpiredSignatureError:
            raise CredentialsRefused("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise CredentialsRefused(f"invalid token: {type(exc).__name__}: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise CredentialsRefused("invalid token: sub must be a non-empty string")
        return Identity(subject, _roles(claims.get(self.roles_claim)), "jwt")

    def _decode(self, token: str, key: Any, algorithm: str, options: Any) -> Identity:
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], audience=self.audience,
                                issuer=self.issuer, leeway=self.leeway, options=options)
        except jwt.ExpiredSignatureError:
            raise CredentialsRefused("the token has expired") from None
        except jwt.PyJWTError as exc:  # PyJWT's messages name the claim, never the token
            raise CredentialsRefused(f"invalid token: {type(exc).__name__}: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise CredentialsRefused("invalid token: sub must be a non-empty string")
        return Identity(subject, _roles(claims.get(self.roles_claim)), "jwt")


def _roles(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()


class Authenticator:
    """Checks a request's credentials; built once at start from the settings."""

    def __init__(self, api_keys: ApiKeyStore | None = None, jwt_verifier: JwtVerifier | None = None,
                 *, allow_anonymous: bool = False, failures: AuthFailureBrake | None = None) -> None:
        self.api_keys = api_keys
        self.jwt = jwt_verifier
        self.allow_anonymous = allow_anonymous
        self.failures = failures  # None: no brake on failed credentials
        if api_keys is None and jwt_verifier is None and not allow_anonymous:
            _log.warning("no API keys and no JWT key configured: every non-public route answers 401")

    @classmethod
    def from_settings(cls, settings: BridgeSettings) -> Authenticator:
        keys = ApiKeyStore.load(settings.api_keys_file) if settings.api_keys_file else None
        verifier = None
        public_key = ""
        if settings.jwt_rs256_public_key_file:
            try:
                public_key = Path(settings.jwt_rs256_public_key_file).read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"bridge: cannot read the RS256 public key: {exc}") from None
        jwks = None
        if settings.jwt_jwks_url:
            jwks = JwksKeys(settings.jwt_jwks_url, cache_ttl=settings.jwt_jwks_cache_ttl,
                            refetch_interval=settings.jwt_jwks_refetch_interval,
                            timeout=settings.jwt_jwks_timeout)
        local = None
        if settings.token_signing_key_file:
            local = SigningKey.load(settings.token_signing_key_file, issuer=settings.token_issuer)
        if settings.jwt_hs256_secret or public_key or jwks is not None or local is not None:
            verifier = JwtVerifier(hs256_secret=settings.jwt_hs256_secret, rs256_public_key=public_key,
                                   issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                                   leeway=settings.jwt_leeway, roles_claim=settings.jwt_roles_claim,
                                   jwks=jwks, local=local)
        failures = None
        if settings.auth_failure_limit > 0:
            failures = AuthFailureBrake(settings.auth_failure_limit, settings.auth_failure_window,
                                        settings.auth_failure_max_addresses)
        return cls(keys, verifier, allow_anonymous=settings.allow_anonymous, failures=failures)

    async def identify(self, headers: CIMultiDictProxy[str], *, client: str) -> Identity | None:
        """The caller's identity, None if no credentials were sent; ApiError 401 if they are bad.

        ``client`` is the client address: 429 at once while it has failed too often, and
        a 401 counts against it. A coroutine because a token may need its key fetched
        from the JWKS URL (503 when that fails).
        """
        api_key = headers.getall(API_KEY_HEADER, [])
        authorization = headers.getall("Authorization", [])
        if not api_key and not authorization:
            return None
        if self.failures is not None:
            self.failures.charge(client)  # 429 here, before any lookup, signature check or key fetch
        failed = False
        try:
            identity = await self._identify(api_key, authorization)
        except CredentialsRefused as refused:
            _log.info("credentials from %s refused: %s", client, refused.reason)
            failed = True
            raise
        except ApiError as error:  # 401 for a malformed credential (two at once, not Bearer); 503
            if error.status == 401:
                _log.info("credentials from %s refused: %s", client, error.message)
                failed = True
            raise
        except Exception:  # a bug or a broken key: refuse, never let the request through
            _log.exception("authentication failed unexpectedly; refusing the request")
            raise CredentialsRefused("credentials could not be verified") from None
        finally:
            if not failed and self.failures is not None:
                self.failures.refund(client)  # verified, or the bridge's fault (503, a bug)
        return identity

    async def _identify(self, api_key: list[str], authorization: list[str]) -> Identity | None:
        if len(api_key) + len(authorization) > 1:
            raise _unauthorized("send one credential: X-API-Key or Authorization", "invalid_request")
        if api_key:
            if self.api_keys is None:
                raise CredentialsRefused("an API key, but no api_keys_file is configured")
            identity = self.api_keys.lookup(api_key[0].strip())
            if identity is None:
                raise CredentialsRefused("unknown API key")
            return identity
        if authorization:
            scheme, _, token = authorization[0].strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _unauthorized("use Authorization: Bearer <token>", "invalid_request")
            if self.jwt is None:
                raise CredentialsRefused("a bearer token, but no JWT key is configured")
            return await self.jwt.verify_token(token.strip())
        return None

    def authorize(self, identity: Identity | None, *, public: bool, roles: tuple[str, ...]) -> Identity:
        """The identity the call runs as; ApiError 401 (no credentials) or 403 (no role)."""
        if public:  # public routes ignore roles; a valid identity still travels on
            return identity or ANONYMOUS
        if identity is None:
            if self.allow_anonymous and not roles:
                return ANONYMOUS
            raise _unauthorized("authentication required", None)
        if roles and not identity.roles.intersection(roles):
            raise ApiError(403, "forbidden", f"needs one of the roles: {', '.join(roles)}")
        return identity


def _unauthorized(message: str, error: str | None) -> ApiError:
    challenge = _CHALLENGE if error is None else f'Bearer realm="amqprpc", error="{error}"'
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})
