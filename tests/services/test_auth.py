"""The auth service's logic on SQLite (worker_factory): passwords, refresh-token families, admins."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher

from amqprpc.testing import worker_factory
from services.auth import AuthService, Base, Forbidden, InvalidGrant, InvalidPrincipal, Passwords

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # fast, for tests only


@pytest.fixture
def auth(sql_session: Any) -> Any:
    passwords = Passwords().configure(CHEAP, admin_password="the-admin-password")

    def make(roles: list[str] | None = None) -> Any:
        ctx = type("Ctx", (), {"data": {"user_id": "x", "roles": roles or []}})()
        service = worker_factory(AuthService, db=sql_session(Base, "auth", "login"), passwords=passwords,
                                 ctx=ctx)
        return Committed(service)

    return make


class Committed:
    """Each call committed when it returns and rolled back when it raises, as Database does."""

    def __init__(self, service: AuthService) -> None:
        self.service = service

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.service, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = method(*args, **kwargs)
            except BaseException:
                self.service.db.rollback()
                raise
            self.service.db.commit()
            return result

        return call


def test_the_first_login_makes_the_admin_and_bad_logins_look_alike(auth: Any) -> None:
    grant = auth().login("admin", "the-admin-password")
    assert grant["principal"] == "admin" and grant["roles"] == ["admin"]
    assert grant["refresh_token"].startswith("rt_")
    messages = set()
    for username, password in (("admin", "wrong-password"), ("nobody", "wrong-password"),
                               ("bad name!", "x"), ("admin", "y" * 5000)):
        with pytest.raises(InvalidGrant) as caught:
            auth().login(username, password)
        messages.add(str(caught.value))
    assert messages == {"invalid username or password"}


def test_refresh_rotates_and_a_reused_token_revokes_the_family(auth: Any) -> None:
    first = auth().login("admin", "the-admin-password")["refresh_token"]
    second = auth().refresh(first)["refresh_token"]
    third = auth().refresh(second)["refresh_token"]
    with pytest.raises(InvalidGrant, match="used before"):
        auth().refresh(first)
    with pytest.raises(InvalidGrant, match="revoked"):
        auth().refresh(third)
    with pytest.raises(InvalidGrant, match="unknown"):
        auth().refresh("rt_made-up")


def test_revoke_by_token_or_family(auth: Any) -> None:
    grant = auth().login("admin", "the-admin-password")
    assert auth().revoke(refresh_token=grant["refresh_token"]) is True
    assert auth().revoke(refresh_token=grant["refresh_token"]) is False  # already
    other = auth().login("admin", "the-admin-password")
    assert auth().revoke(family=other["family"]) is True
    with pytest.raises(InvalidGrant):
        auth().refresh(other["refresh_token"])
    assert auth().revoke(refresh_token="rt_unknown") is False


def test_registration_is_for_admins_and_checks_what_it_stores(auth: Any) -> None:
    with pytest.raises(Forbidden):
        auth(roles=["clerk"]).register("ann", "ann-password", ["clerk"])
    admin = auth(roles=["admin"])
    assert admin.register("ann", "ann-password", ["clerk", "clerk"]) == {
        "principal": "ann", "roles": ["clerk"], "disabled": False}
    for args, problem in ((("ann", "another-password"), "taken"), (("bad name", "ann-password"), "username"),
                          (("bob", "short"), "password"), (("bob", "bob-password", ["no spaces"]), "roles")):
        with pytest.raises(InvalidPrincipal, match=problem):
            auth(roles=["admin"]).register(*args)
    grant = auth().login("ann", "ann-password")
    assert grant["roles"] == ["clerk"]
    # not ["admin", "ann"]: the bootstrap admin is made only by a login on an empty table
    assert [p["principal"] for p in auth(roles=["admin"]).list_principals()] == ["ann"]
    auth(roles=["admin"]).disable("ann")
    with pytest.raises(InvalidGrant):
        auth().login("ann", "ann-password")
    with pytest.raises(InvalidGrant):
        auth().refresh(grant["refresh_token"])
