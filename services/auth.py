"""auth: principals, their passwords and roles, and refresh-token families, in SQL.

The HTTP bridge's token endpoint (``POST /auth/token``, docs/bridge.md "Token endpoint")
calls ``login`` and ``refresh`` and signs the access tokens itself; this service never
sees a signing key. The database is ``AUTH_DATABASE_URL`` or ``DATABASE_URL``
(PostgreSQL, MariaDB or SQLite). Run it with ``amqprpc run services.auth``.

* Passwords are hashed with Argon2id (argon2-cffi, its default RFC 9106 parameters) and
  rehashed on login when the parameters change. An unknown user costs the same hash
  verification as a wrong password (against a dummy hash), and both raise the same
  ``InvalidGrant`` with the same message: a caller cannot tell which it was.
* Refresh tokens are opaque random strings; only their SHA-256 is stored. Each login starts
  a family; ``refresh`` spends a token (at most once, even when two arrive together) and
  issues the next of its family. A spent token that comes back means it was stolen: the
  whole family is revoked, so neither thief nor owner can refresh again.
* ``register``, ``list_principals`` and ``disable`` are for admins: the routes say
  ``roles=["admin"]``, and the service checks the role itself too, from an identity it
  trusts only when signed (``trusted_identity``: docs/production.md).
* First start: with ``AUTH_ADMIN_PASSWORD_FILE`` set (``amqprpc dev`` sets it), the first
  ``login`` on an empty table creates ``AUTH_ADMIN_USERNAME`` (default ``admin``) with that
  password and the role ``admin``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from amqprpc import CallContext, ConfigError, Database, DependencyProvider, WorkerContext, remote_error, rpc

USERNAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
ROLE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024  # a bound on what one hash costs
REFRESH_TTL = 14 * 24 * 3600.0  # seconds a refresh token lives unless AUTH_REFRESH_TTL says otherwise


class Base(DeclarativeBase):
    pass


class Principal(Base):
    __tablename__ = "auth_principals"

    username: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    roles: Mapped[str] = mapped_column(sa.String(2000), default="[]")  # JSON list: portable
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[float] = mapped_column(sa.Float)

    def role_list(self) -> list[str]:
        return sorted(json.loads(self.roles))

    def as_dict(self) -> dict[str, Any]:
        return {"principal": self.username, "roles": self.role_list(), "disabled": self.disabled}


class TokenFamily(Base):
    """One login's chain of refresh tokens; revoking it ends them all."""

    __tablename__ = "auth_token_families"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    principal: Mapped[str] = mapped_column(sa.String(64), index=True)
    created_at: Mapped[float] = mapped_column(sa.Float)
    revoked_at: Mapped[float | None] = mapped_column(sa.Float, default=None)
    revoked_reason: Mapped[str | None] = mapped_column(sa.String(40), default=None)


class RefreshToken(Base):
    __tablename__ = "auth_refresh_tokens"

    token_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(sa.String(32), index=True)
    created_at: Mapped[float] = mapped_column(sa.Float)
    expires_at: Mapped[float] = mapped_column(sa.Float)
    used_at: Mapped[float | None] = mapped_column(sa.Float, default=None)


@remote_error
class InvalidGrant(PermissionError):
    """Wrong credentials, or a refresh token that is unknown, spent, expired or revoked."""


@remote_error
class InvalidPrincipal(ValueError):
    """A username, password or role that does not fit the rules, or a username taken."""


@remote_error
class Forbidden(PermissionError):
    """The caller is not an admin."""


class Passwords(DependencyProvider):
    """The Argon2 hasher, a dummy hash for unknown users, and the bootstrap admin's settings."""

    def setup(self) -> None:
        config, service = self.container.config, self.container.service_name
        found = config.service_setting(service, "REFRESH_TTL")
        refresh_ttl = float(found[1]) if found else REFRESH_TTL
        found = config.service_setting(service, "ADMIN_USERNAME")
        admin_username = str(found[1]) if found else "admin"
        admin_password = None
        found = config.service_setting(service, "ADMIN_PASSWORD_FILE")
        if found:
            try:
                admin_password = Path(str(found[1])).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{service}: {found[0]}: cannot read {found[1]}: {exc}") from None
        self.configure(PasswordHasher(), refresh_ttl=refresh_ttl, admin_username=admin_username,
                       admin_password=admin_password)

    def configure(self, hasher: PasswordHasher, *, refresh_ttl: float = REFRESH_TTL,
                  admin_username: str = "admin", admin_password: str | None = None) -> Passwords:
        """Set it up without a container (tests pass a cheap hasher)."""
        self.hasher = hasher
        self.dummy_hash = hasher.hash(secrets.token_urlsafe(16))
        self.refresh_ttl = refresh_ttl
        self.admin_username = admin_username
        self.admin_password = None if admin_password is None else check_password(admin_password)
        return self

    def get_dependency(self, worker_ctx: WorkerContext) -> Passwords:
        return self

    def verify(self, stored: str | None, password: str) -> bool:
        """True if ``password`` matches ``stored``; the same work when there is no ``stored``."""
        try:
            self.hasher.verify(stored or self.dummy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return stored is not None


def check_password(password: Any) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidPrincipal(f"a password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_refresh_token() -> str:
    return "rt_" + secrets.token_urlsafe(32)


REFUSED = "invalid username or password"


class AuthService:
    name = "auth"
    trusted_identity = True  # admin calls are decided on roles: only a signed identity counts
    http_errors = {InvalidPrincipal: 422, Forbidden: 403}

    db = Database(Base, create_tables=True)
    passwords = Passwords()
    ctx = CallContext()

    # ------------------------------------------------------------ for the token endpoint

    @rpc(expected_exceptions=(InvalidGrant, InvalidPrincipal))
    def login(self, username: str, password: str) -> dict[str, Any]:
        """Check a password; a new refresh-token family and the principal's roles."""
        if not isinstance(username, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD:
            raise InvalidGrant(REFUSED)
        self._bootstrap()
        principal = self.db.get(Principal, username) if USERNAME.match(username) else None
        valid = self.passwords.verify(principal.password_hash if principal else None, password)
        if principal is None or not valid or principal.disabled:
            raise InvalidGrant(REFUSED)
        if self.passwords.hasher.check_needs_rehash(principal.password_hash):
            principal.password_hash = self.passwords.hasher.hash(password)
        family = TokenFamily(id=uuid.uuid4().hex, principal=principal.username, created_at=time.time())
        self.db.add(family)
        return self._grant(principal, family)

    @rpc(expected_exceptions=InvalidGrant)
    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Spend a refresh token for the next one of its family; a spent one revokes the family."""
        if not isinstance(refresh_token, str) or len(refresh_token) > 200:
            raise InvalidGrant("unknown refresh token")
        digest = _hash_token(refresh_token)
        token = self.db.get(RefreshToken, digest)
        if token is None:
            raise InvalidGrant("unknown refresh token")
        family = self.db.get(TokenFamily, token.family_id)
        if family is None or family.revoked_at is not None:
            raise InvalidGrant("the refresh token was revoked")
        now = time.time()
        if token.used_at is not None:
            self._revoke(family, "reuse")
            raise InvalidGrant("the refresh token was used before: its family is revoked")
        if token.expires_at < now:
            raise InvalidGrant("the refresh token has expired")
        spent = self.db.execute(sa.update(RefreshToken).where(
            RefreshToken.token_hash == digest, RefreshToken.used_at.is_(None)).values(used_at=now))
        if getattr(spent, "rowcount", 0) != 1:  # spent meanwhile by a concurrent refresh: a reuse too
            self._revoke(family, "reuse")
            raise InvalidGrant("the refresh token was used before: its family is revoked")
        principal = self.db.get(Principal, family.principal)
        if principal is None or principal.disabled:
            self._revoke(family, "disabled")
            raise InvalidGrant("the principal is disabled")
        return self._grant(principal, family)

    @rpc
    def revoke(self, refresh_token: str = "", family: str = "") -> bool:
        """Revoke the family of a refresh token (or a family by id); True if one was revoked."""
        found = None
        if isinstance(refresh_token, str) and refresh_token and len(refresh_token) <= 200:
            token = self.db.get(RefreshToken, _hash_token(refresh_token))
            found = self.db.get(TokenFamily, token.family_id) if token is not None else None
        elif isinstance(family, str) and family and len(family) <= 32:
            found = self.db.get(TokenFamily, family)
        if found is None or found.revoked_at is not None:
            return False
        self._revoke(found, "revoked")
        return True

    # ------------------------------------------------------------ for admins

    @rpc(http="POST /auth/users", roles=["admin"], expected_exceptions=(InvalidPrincipal, Forbidden))
    def register(self, username: str, password: str, roles: list[str] | None = None) -> dict[str, Any]:
        """Create a principal with a password and roles (admins only)."""
        self._require_admin()
        if not isinstance(username, str) or not USERNAME.match(username):
            raise InvalidPrincipal("a username is 1 to 64 letters, digits or ._@-")
        roles = roles or []
        if not isinstance(roles, list) or not all(isinstance(r, str) and ROLE.match(r) for r in roles):
            raise InvalidPrincipal("roles must be a list of names (letters, digits, ._:-)")
        principal = Principal(username=username, password_hash=self.passwords.hasher.hash(
            check_password(password)), roles=json.dumps(sorted(set(roles))), created_at=time.time())
        try:
            with self.db.begin_nested():
                self.db.add(principal)
        except sa_exc.IntegrityError:
            raise InvalidPrincipal(f"the username {username!r} is taken") from None
        return principal.as_dict()

    @rpc(http="GET /auth/users", roles=["admin"], expected_exceptions=Forbidden)
    def list_principals(self) -> list[dict[str, Any]]:
        """Every principal and its roles (admins only)."""
        self._require_admin()
        return [p.as_dict() for p in self.db.scalars(sa.select(Principal).order_by(Principal.username))]

    @rpc(http="DELETE /auth/users/{username}", roles=["admin"],
         expected_exceptions=(InvalidPrincipal, Forbidden))
    def disable(self, username: str) -> dict[str, Any]:
        """Disable a principal and revoke its refresh tokens (admins only)."""
        self._require_admin()
        principal = self.db.get(Principal, username)
        if principal is None:
            raise InvalidPrincipal(f"no principal {username!r}")
        principal.disabled = True
        self.db.execute(sa.update(TokenFamily).where(
            TokenFamily.principal == username, TokenFamily.revoked_at.is_(None)).values(
            revoked_at=time.time(), revoked_reason="disabled"))
        return principal.as_dict()

    # ------------------------------------------------------------ inside

    def _grant(self, principal: Principal, family: TokenFamily) -> dict[str, Any]:
        token = _new_refresh_token()
        now = time.time()
        self.db.add(RefreshToken(token_hash=_hash_token(token), family_id=family.id, created_at=now,
                                 expires_at=now + self.passwords.refresh_ttl))
        return {"principal": principal.username, "roles": principal.role_list(), "family": family.id,
                "refresh_token": token, "refresh_expires_in": int(self.passwords.refresh_ttl)}

    def _revoke(self, family: TokenFamily, reason: str) -> None:
        """Revoke now, committed before the caller's error: a raise would roll it back."""
        family.revoked_at = time.time()
        family.revoked_reason = reason
        self.db.commit()

    def _require_admin(self) -> None:
        roles = self.ctx.data.get("roles")
        if not isinstance(roles, list) or "admin" not in roles:
            raise Forbidden("needs the role admin")

    def _bootstrap(self) -> None:
        """The first admin, from AUTH_ADMIN_PASSWORD_FILE, while there is no principal at all."""
        password = self.passwords.admin_password
        if password is None or self.db.scalars(sa.select(Principal.username).limit(1)).first() is not None:
            return
        admin = Principal(username=self.passwords.admin_username, password_hash=self.passwords.hasher.hash(
            password), roles=json.dumps(["admin"]), created_at=time.time())
        try:
            with self.db.begin_nested():
                self.db.add(admin)
        except sa_exc.IntegrityError:
            pass  # a concurrent login made it
        self.db.commit()
