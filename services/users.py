"""users: who can place orders. Profiles live in MongoDB (``USERS_MONGO_URL``/``MONGO_URL``).

Run it with ``amqprpc run services.users``; the whole demo with ``amqprpc dev`` (docs/demo.md).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from pymongo.errors import DuplicateKeyError

from amqprpc import Mongo, remote_error, rpc

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@remote_error
class UserNotFound(LookupError):
    """No user has this id."""


@remote_error
class InvalidUser(ValueError):
    """The profile is incomplete, malformed, or its email is taken."""


class UsersService:
    name = "users"
    http_errors = {UserNotFound: 404, InvalidUser: 422}

    mongo = Mongo("users")

    @rpc(http="POST /users", expected_exceptions=InvalidUser)
    def create(self, name: str, email: str) -> dict[str, Any]:
        """Register a user; the email must be unique."""
        name, email = name.strip(), email.strip().lower()
        if not name or len(name) > 100:
            raise InvalidUser("name must be 1 to 100 characters")
        if not EMAIL.match(email) or len(email) > 254:
            raise InvalidUser(f"not an email address: {email!r}")
        profiles = self.mongo.profiles
        profiles.create_index("email", unique=True)  # a no-op once it exists
        profile = {"_id": uuid.uuid4().hex, "name": name, "email": email}
        try:
            profiles.insert_one(profile)
        except DuplicateKeyError:
            raise InvalidUser(f"email already registered: {email}") from None
        return _public(profile)

    @rpc(http="GET /users/{user_id}", expected_exceptions=UserNotFound)
    def get(self, user_id: str) -> dict[str, Any]:
        """One user's profile."""
        profile = self.mongo.profiles.find_one({"_id": user_id})
        if profile is None:
            raise UserNotFound(f"no user {user_id!r}")
        return _public(profile)

    @rpc(http="GET /users")
    def list_users(self, limit: int = 50) -> list[dict[str, Any]]:
        """Users by name, at most ``limit`` (1 to 500)."""
        limit = max(1, min(int(limit), 500))
        return [_public(p) for p in self.mongo.profiles.find().sort("name", 1).limit(limit)]


def _public(profile: dict[str, Any]) -> dict[str, Any]:
    return {"id": profile["_id"], "name": profile["name"], "email": profile["email"]}
