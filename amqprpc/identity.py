"""Signed identity: who a call runs as, vouched for by a key holder and checked by the worker.

Anyone with broker credentials can publish on ``rpc-<service>`` with any ``user_id`` and
``roles`` headers. With an identity key (``identity_key`` or ``identity_key_file``), a caller
-- the HTTP bridge, a client, a service's own nested calls -- adds one header to each request::

    x-amqprpc-identity: v1.<kid>.<base64url payload>.<base64url HMAC-SHA256>
    payload = {"sub": principal, "roles": [...], "cid": correlation id,
               "rk": "<service>.<method>", "exp": deadline (unix time)}

A service with ``trusted_identity = True`` (class attribute, or ``trusted_identity = 1`` in
the config for every service of the process) checks it before any handler runs and refuses
with ``IdentityRefused`` a call that is unsigned, signed with an unknown key or altered, whose
``user_id``/``roles`` headers differ from what was signed (forged), whose deadline passed or
lies more than ``identity_max_age`` ahead, or whose call id it already ran (replayed; a
broker redelivery or a counted re-run of the same message is not a replay). The handler's
``user_id`` and ``roles`` then come from the signed payload only.

Nested calls from a trusted service are **re-signed** with the service's own key (its
``Caller`` signs like any client), carrying the identity the service verified: the call id
and deadline change at each hop, so forwarding the first signature could not bind them. So
every key holder can vouch for any identity: give keys only to processes you trust as much
as the bridge. Keys rotate: list several, the first signs, any verifies.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import ConfigError, IdentityRefused
from .messages import DEADLINE_HEADER, Context, Headers
from .transport import Outgoing

_log = logging.getLogger(__name__)

IDENTITY_HEADER = "x-amqprpc-identity"
_VERSION = "v1"
MIN_KEY_BYTES = 32
MAX_HEADER_BYTES = 4096
MAX_SEEN_CALLS = 200_000  # call ids remembered per service for replay checks (until their deadline)


@dataclass(frozen=True, slots=True)
class VerifiedIdentity:
    """What a valid signature vouches for: the principal ("" when anonymous) and roles."""

    principal: str
    roles: tuple[str, ...]


class IdentityKeys:
    """The shared HMAC keys: the first signs, any verifies (rotation)."""

    def __init__(self, keys: Sequence[str]) -> None:
        cleaned = [key.strip() for key in keys if key.strip()]
        if not cleaned:
            raise ConfigError("identity keys: none given")
        if any(len(key.encode()) < MIN_KEY_BYTES for key in cleaned):
            raise ConfigError(f"an identity key must be at least {MIN_KEY_BYTES} bytes "
                              "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        self._by_kid = {key_id(key): key.encode() for key in cleaned}
        self.signing_kid = key_id(cleaned[0])

    @classmethod
    def from_config(cls, config: Any) -> IdentityKeys | None:
        """``identity_key_file`` (one key per line, ``#`` comments) else ``identity_key``; None if unset."""
        path = getattr(config, "identity_key_file", "")
        if path:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"identity_key_file {path}: cannot read it: {exc}") from None
            lines = [line for line in text.splitlines() if not line.strip().startswith("#")]
            return cls(lines)
        inline = getattr(config, "identity_key", "")
        return cls(inline.split(",")) if inline and inline.strip() else None

    def signing_key(self) -> bytes:
        return self._by_kid[self.signing_kid]

    def get(self, kid: str) -> bytes | None:
        return self._by_kid.get(kid)


def key_id(key: str) -> str:
    """A key's public name in signatures: not the key, and stable for it."""
    return hashlib.sha256(b"amqprpc-identity:" + key.strip().encode()).hexdigest()[:12]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, kid: str, payload: str) -> str:
    return _b64(hmac.new(key, f"{_VERSION}.{kid}.{payload}".encode("ascii"), hashlib.sha256).digest())


class IdentitySigner:
    """Adds the signed identity header to outgoing requests (one per Caller)."""

    def __init__(self, keys: IdentityKeys, *, header_prefix: str = "nameko") -> None:
        self.keys = keys
        self.header_prefix = header_prefix

    def sign(self, message: Outgoing, context: Context | None) -> None:
        """Sign ``message`` (built by ``messages.build_request``) for the identity in ``context``."""
        headers: Headers = message.properties.setdefault("application_headers", {})
        principal, roles = identity_of(context or {})
        payload = {"sub": principal, "roles": roles, "cid": message.properties.get("correlation_id"),
                   "rk": message.routing_key, "exp": headers.get(DEADLINE_HEADER)}
        encoded = _b64(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
        kid = self.keys.signing_kid
        headers[IDENTITY_HEADER] = f"{_VERSION}.{kid}.{encoded}.{_mac(self.keys.signing_key(), kid, encoded)}"


def identity_of(context: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(principal, sorted roles) as a context carries them; anything malformed counts as absent."""
    principal = context.get("user_id")
    roles = context.get("roles")
    principal = principal if isinstance(principal, str) else ""
    roles = sorted({role for role in roles if isinstance(role, str)}) if isinstance(roles, list) else []
    return principal, roles


def signer_for(config: Any) -> IdentitySigner | None:
    """The signer a Caller uses with ``config``, or None (no key: nothing is signed, nothing costs)."""
    keys = IdentityKeys.from_config(config)
    return None if keys is None else IdentitySigner(keys, header_prefix=config.header_prefix)


class SeenCalls:
    """Call ids already run, each kept until its deadline; bounded (the nearest to expiry go first)."""

    def __init__(self, max_entries: int = MAX_SEEN_CALLS) -> None:
        self.max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def add(self, call_id: str, expires: float, now: float) -> bool:
        """Remember ``call_id``; False if it was already there (a replay)."""
        with self._lock:
            while self._heap and self._heap[0][0] < now:
                _, old = heapq.heappop(self._heap)
                self._expiry.pop(old, None)
            if call_id in self._expiry:
                return False
            self._expiry[call_id] = expires
            heapq.heappush(self._heap, (expires, call_id))
            while len(self._expiry) > self.max_entries:
                _, old = heapq.heappop(self._heap)
                self._expiry.pop(old, None)
            return True

    def __len__(self) -> int:
        return len(self._expiry)


class IdentityVerifier:
    """Checks the signed identity of each request to one trusted service (its RpcConsumer owns it)."""

    def __init__(self, keys: IdentityKeys, *, header_prefix: str = "nameko", max_age: float = 300.0,
                 clock: Callable[[], float] = time.time, seen: SeenCalls | None = None) -> None:
        self.keys = keys
        self.header_prefix = header_prefix
        self.max_age = max_age
        self.clock = clock
        self.seen = seen or SeenCalls()

    def verify(self, headers: Headers | None, *, correlation_id: Any, routing_key: str,
               rerun: bool = False) -> VerifiedIdentity:
        """The identity a request's header proves; IdentityRefused naming the reason otherwise.

        ``rerun``: the broker redelivered this very message, or it is a counted re-run of
        one (its worker died): the same call id again is then no replay.
        """
        raw = (headers or {}).get(IDENTITY_HEADER)
        if raw is None:
            raise IdentityRefused(f"{routing_key}: unsigned identity (this service requires "
                                  f"{IDENTITY_HEADER}, signed with the identity key)")
        if isinstance(raw, bytes):
            raw = raw.decode("ascii", "replace")
        if not isinstance(raw, str) or len(raw) > MAX_HEADER_BYTES:
            raise IdentityRefused(f"{routing_key}: {IDENTITY_HEADER} must be a string of at most "
                                  f"{MAX_HEADER_BYTES} characters")
        parts = raw.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            raise IdentityRefused(f"{routing_key}: {IDENTITY_HEADER} is not {_VERSION}.<kid>.<payload>.<mac>")
        _, kid, encoded, mac = parts
        key = self.keys.get(kid)
        if key is None:
            raise IdentityRefused(f"{routing_key}: identity signed with an unknown key {kid[:20]!r}")
        if not hmac.compare_digest(mac, _mac(key, kid, encoded)):
            raise IdentityRefused(f"{routing_key}: bad identity signature (forged or altered)")
        payload = self._payload(encoded, routing_key)
        if payload["cid"] != correlation_id or payload["rk"] != routing_key:
            raise IdentityRefused(f"{routing_key}: the signed identity belongs to another call")
        now = self.clock()
        expires = payload["exp"]
        if expires < now:
            raise IdentityRefused(f"{routing_key}: the signed identity expired {now - expires:.1f}s ago")
        if expires > now + self.max_age:
            raise IdentityRefused(f"{routing_key}: the signed identity's deadline lies more than "
                                  f"identity_max_age ({self.max_age:g}s) ahead")
        self._check_headers(headers or {}, payload, routing_key)
        if not self.seen.add(str(correlation_id), expires, now) and not rerun:
            raise IdentityRefused(f"{routing_key}: replayed identity (call id {str(correlation_id)[:80]!r} "
                                  "already ran)")
        return VerifiedIdentity(payload["sub"], tuple(payload["roles"]))

    def context(self, context: Context, identity: VerifiedIdentity) -> Context:
        """``context`` with ``user_id``/``roles`` exactly as verified (absent when anonymous)."""
        cleaned = {key: value for key, value in context.items() if key not in ("user_id", "roles")}
        if identity.principal:
            cleaned["user_id"] = identity.principal
            cleaned["roles"] = list(identity.roles)
        return cleaned

    def _payload(self, encoded: str, routing_key: str) -> dict[str, Any]:
        try:
            payload = json.loads(_unb64(encoded))
        except (ValueError, UnicodeDecodeError):
            payload = None
        valid = (isinstance(payload, dict) and isinstance(payload.get("sub"), str)
                 and isinstance(payload.get("roles"), list)
                 and all(isinstance(role, str) for role in payload["roles"])
                 and isinstance(payload.get("cid"), str) and isinstance(payload.get("rk"), str)
                 and isinstance(payload.get("exp"), int | float) and not isinstance(payload["exp"], bool))
        if not valid:
            raise IdentityRefused(f"{routing_key}: the signed identity payload is malformed")
        assert isinstance(payload, dict)
        return payload

    def _check_headers(self, headers: Headers, payload: dict[str, Any], routing_key: str) -> None:
        """Identity headers beside the signature must say what it says: else they are forged."""
        marker = self.header_prefix + "."
        claimed = {key[len(marker):]: value for key, value in headers.items()
                   if key in (marker + "user_id", marker + "roles")}
        principal, roles = identity_of(claimed)
        sent_roles = claimed.get("roles")
        if ("user_id" in claimed and principal != payload["sub"]) or (
                sent_roles is not None and roles != sorted(set(payload["roles"]))):
            raise IdentityRefused(f"{routing_key}: the user_id/roles headers differ from the signed "
                                  "identity (forged)")


def verifier_for(service_cls: type, config: Any) -> IdentityVerifier | None:
    """The verifier a service's RpcConsumer uses, or None when it does not require signed identity.

    ConfigError when it requires one (``trusted_identity``) but no identity key is configured:
    the worker must not start and refuse every call.
    """
    required = bool(getattr(service_cls, "trusted_identity", False) or getattr(config, "trusted_identity", 0))
    if not required:
        return None
    keys = IdentityKeys.from_config(config)
    if keys is None:
        raise ConfigError(f"service {getattr(service_cls, 'name', service_cls.__name__)!r} requires "
                          "trusted identity, but no identity_key or identity_key_file is configured")
    return IdentityVerifier(keys, header_prefix=config.header_prefix, max_age=config.identity_max_age)
