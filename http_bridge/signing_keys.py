"""The bridge's own token signing key: Ed25519 (EdDSA), read from a PEM file, named by ``kid``.

The private key signs the access tokens ``POST /auth/token`` issues; its public half is
served at ``/.well-known/jwks.json`` (so other gateways and services verify them with any
JOSE library) and verifies them on every route. The ``kid`` is the key's RFC 7638
thumbprint: stable for the key, different for the next one. Rotation: make a new key file,
restart the bridges; tokens signed by the old key fail at once, so rotate with access
tokens' short lifetime in mind (their holders refresh).

``amqprpc bridge new-signing-key PATH`` (or ``write_key_file``) makes a key file
readable by its owner only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from amqprpc import ConfigError

ALGORITHM = "EdDSA"


class SigningKey:
    """One Ed25519 key pair: signs access tokens and publishes its public JWK."""

    def __init__(self, private_key: Ed25519PrivateKey, *, issuer: str) -> None:
        self.private_key = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.issuer = issuer
        raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        thumbprint = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
        digest = hashlib.sha256(thumbprint.encode()).digest()
        self.kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        self.jwk = {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}

    @classmethod
    def load(cls, path: str | Path, *, issuer: str) -> SigningKey:
        """The key in a PEM file (PKCS#8, unencrypted); ConfigError naming the problem."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"bridge.token_signing_key_file {path}: cannot read it: {exc}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"bridge.token_signing_key_file {path}: not an unencrypted PEM private "
                              f"key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"bridge.token_signing_key_file {path}: an Ed25519 key is needed "
                              f"(amqprpc bridge new-signing-key), got {type(key).__name__}")
        return cls(key, issuer=issuer)

    def issue(self, principal: str, roles: Iterable[str], *, ttl: float, session: str,
              roles_claim: str = "roles", now: float | None = None) -> str:
        """An access token: ``sub``, roles, ``iss``, ``iat``/``exp``, a ``jti``, ``sid`` (its family)."""
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {"sub": principal, roles_claim: sorted(roles), "iss": self.issuer,
                                  "iat": issued, "exp": issued + int(ttl), "jti": uuid.uuid4().hex,
                                  "sid": session}
        return jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def decode(self, token: str, *, leeway: float = 0.0, verify_exp: bool = True) -> dict[str, Any]:
        """The claims of a token this key signed; ``jwt.PyJWTError`` otherwise."""
        claims: dict[str, Any] = jwt.decode(
            token, self.public_key, algorithms=[ALGORITHM], issuer=self.issuer, leeway=leeway,
            options={"require": ["exp", "sub", "iss"], "verify_exp": verify_exp})
        return claims

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self.jwk)]}


def write_key_file(path: str | Path) -> Path:
    """Write a new Ed25519 private key (PEM, mode 0600) to ``path``, which must not exist."""
    path = Path(path)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    return path
