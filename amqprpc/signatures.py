"""HMAC signatures of control messages on the bus (announcements, routing rules).

Anyone holding broker credentials can publish anywhere, so a message that changes what
others do carries ``x-amqprpc-signature: v1=<hex HMAC-SHA256>`` over its routing key,
content type and body, made with the deployment's shared key (``discovery_key``).
Several keys (comma-separated) allow rotation: the first signs, any verifies.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Self

from .exceptions import AmqpRpcError, ConfigError

SIGNATURE_HEADER = "x-amqprpc-signature"
_SCHEME = "v1="


class SignatureError(AmqpRpcError, ValueError):
    """A message is unsigned, or signed with another key, or was altered."""


class MessageSigner:
    """Signs and verifies control messages with the deployment's shared key(s)."""

    what = "message"  # in errors: "unsigned message", "bad message signature"
    error: type[Exception] = SignatureError

    def __init__(self, keys: Sequence[str]) -> None:
        cleaned = [key.strip() for key in keys if key.strip()]
        if not cleaned:
            raise ValueError("a signer needs at least one key")
        short = [key for key in cleaned if len(key) < 16]
        if short:
            raise ValueError("a discovery key must be at least 16 characters "
                             "(python -c 'import secrets; print(secrets.token_urlsafe(32))' "
                             "makes a good one)")
        self._keys = [key.encode("utf-8") for key in cleaned]

    @classmethod
    def from_setting(cls, value: str | None) -> Self | None:
        """``discovery_key`` as configured (comma-separated keys) or None when unset."""
        if value is None or not value.strip():
            return None
        try:
            return cls(value.split(","))
        except ValueError as exc:
            raise ConfigError(f"discovery_key: {exc}") from None

    def sign(self, routing_key: str, content_type: str, body: bytes) -> str:
        return _SCHEME + _digest(self._keys[0], routing_key, content_type, body)

    def verify(self, signature: object, routing_key: str, content_type: str, body: bytes) -> None:
        """Raise ``self.error`` (SignatureError) unless ``signature`` is a valid one for this message."""
        if signature is None:
            raise self.error(f"unsigned {self.what} (this process requires discovery_key)")
        if isinstance(signature, bytes):
            signature = signature.decode("ascii", "replace")
        if not isinstance(signature, str) or not signature.startswith(_SCHEME):
            raise self.error(f"{SIGNATURE_HEADER} is not a {_SCHEME}<hex> signature")
        given = signature[len(_SCHEME):]
        for key in self._keys:
            if hmac.compare_digest(given, _digest(key, routing_key, content_type, body)):
                return
        raise self.error(f"bad {self.what} signature (another key, or the {self.what} was altered)")


def _digest(key: bytes, routing_key: str, content_type: str, body: bytes) -> str:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in (routing_key.encode("utf-8"), content_type.encode("utf-8"), body):
        mac.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two messages collide
        mac.update(part)
    return mac.hexdigest()
