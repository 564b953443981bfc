from __future__ import annotations

import uuid

import pymongo
import pytest

from amqprpc.testing import worker_factory
from services.users import InvalidUser, UserNotFound, UsersService

pytestmark = pytest.mark.integration  # a MongoDB-wire server (SecantusDB by default)


@pytest.fixture
def users(mongo_url):
    name = f"t_{uuid.uuid4().hex[:10]}"
    with pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000) as client:
        yield worker_factory(UsersService, mongo=client[name])
        client.drop_database(name)


def test_create_get_and_list(users):
    ada = users.create(name=" Ada ", email="ADA@example.com")
    assert ada == {"id": ada["id"], "name": "Ada", "email": "ada@example.com"}
    bob = users.create(name="Bob", email="bob@example.com")
    assert users.get(ada["id"]) == ada
    assert users.list_users() == [ada, bob]
    assert users.list_users(limit=1) == [ada]


def test_email_is_unique(users):
    users.create(name="Ada", email="ada@example.com")
    with pytest.raises(InvalidUser, match="already registered"):
        users.create(name="Ada 2", email="Ada@Example.com")


@pytest.mark.parametrize(("name", "email"), [("", "a@b.io"), ("x" * 101, "a@b.io"), ("Ada", "nope")])
def test_invalid_profiles(users, name, email):
    with pytest.raises(InvalidUser):
        users.create(name=name, email=email)


def test_unknown_user(users):
    with pytest.raises(UserNotFound):
        users.get("nobody")
