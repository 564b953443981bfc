"""``Mongo`` against a MongoDB-wire server (SecantusDB unless TEST_MONGO_URL names one).

Each test uses its own service name and database (dropped afterwards).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pymongo
import pytest

from amqprpc import ClusterRpcClient, Config, ConfigError, Mongo, RemoteError, rpc
from amqprpc.containers import ServiceContainer

pytestmark = pytest.mark.integration


def make_service(name: str, database: str, transaction: bool) -> type:
    class ProfilesService:
        mongo = Mongo(database, transaction=transaction)

        @rpc
        def add(self, key: str) -> str:
            self.mongo.profiles.insert_one({"_id": key})
            return type(self.mongo).__name__

        @rpc
        def add_two_then_fail(self, key: str) -> None:
            self.mongo.profiles.insert_one({"_id": key})
            self.mongo.audit.insert_one({"_id": key})
            raise ValueError("failed after writing")

        @rpc
        async def async_add(self, key: str) -> str:
            await self.mongo.profiles.insert_one({"_id": key})
            return type(self.mongo).__name__

        @rpc
        async def async_add_then_fail(self, key: str) -> None:
            await self.mongo.profiles.insert_one({"_id": key})
            await asyncio.sleep(0)
            raise ValueError("async failed after writing")

        @rpc
        def keys(self) -> list[str]:
            return sorted(doc["_id"] for doc in self.mongo.profiles.find())

    ProfilesService.name = name  # type: ignore[attr-defined]
    return ProfilesService


@pytest.fixture
def database(mongo_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    with pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000) as client:
        client.drop_database(name)


@pytest.fixture
def start(mongo_url: str, amqp_uri: str, database: str, unique_name: Callable[[str], str],
          container_factory: Callable[..., ServiceContainer]) -> Callable[[bool], str]:
    def start_service(transaction: bool) -> str:
        service_cls = make_service(unique_name("profiles"), database, transaction)
        container_factory(service_cls, Config(broker_url=amqp_uri, extra={"MONGO_URL": mongo_url}))
        return service_cls.name  # type: ignore[attr-defined, no-any-return]

    return start_service


def test_database_handle_per_call_without_transaction(start: Callable[[bool], str],
                                                      rpc_client: ClusterRpcClient) -> None:
    name = start(False)
    assert rpc_client.call(name, "add", "a") == "Database"
    assert rpc_client.call(name, "async_add", "b") == "AsyncDatabase"
    with pytest.raises(RemoteError, match="failed after writing"):
        rpc_client.call(name, "add_two_then_fail", "c")
    # No transaction: what the handler wrote before it raised stays.
    assert rpc_client.call(name, "keys") == ["a", "b", "c"]


def test_transaction_commits_on_return_and_aborts_on_error(
        start: Callable[[bool], str], rpc_client: ClusterRpcClient, mongo_url: str,
        database: str) -> None:
    name = start(True)
    rpc_client.call(name, "add", "kept")
    rpc_client.call(name, "async_add", "async-kept")
    with pytest.raises(RemoteError, match="failed after writing"):
        rpc_client.call(name, "add_two_then_fail", "aborted")
    with pytest.raises(RemoteError, match="async failed after writing"):
        rpc_client.call(name, "async_add_then_fail", "async-aborted")
    assert rpc_client.call(name, "keys") == ["async-kept", "kept"]
    with pymongo.MongoClient(mongo_url) as client:
        assert client[database].audit.count_documents({}) == 0  # both writes of the call aborted


def test_stop_closes_the_client(mongo_url: str, amqp_uri: str, database: str,
                                unique_name: Callable[[str], str],
                                container_factory: Callable[..., ServiceContainer]) -> None:
    service_cls = make_service(unique_name("profiles"), database, True)
    container = container_factory(service_cls, Config(broker_url=amqp_uri,
                                                      extra={"MONGO_URL": mongo_url}))
    dependency = container.dependencies["mongo"]
    client = dependency.client
    assert client is not None and dependency.async_client is not None
    container.stop(grace=5)
    assert dependency.client is None and dependency.async_client is None
    with pytest.raises(pymongo.errors.InvalidOperation):
        client.admin.command("ping")


class NoUrlService:
    name = "mongo-no-url"
    mongo = Mongo("x")

    @rpc
    def ping(self) -> None: ...


@pytest.mark.parametrize(("extra", "message"), [
    ({}, r"no MongoDB URL; set MONGO_NO_URL_MONGO_URL or MONGO_URL"),
    ({"MONGO_URL": "http://nope"}, r"invalid MONGO_URL"),
    ({"MONGO_NO_URL_MONGO_URL": "mongodb://u:secret@127.0.0.1:1/?serverSelectionTimeoutMS=300"},
     r"mongo mongodb://u:\*\*\*@127.0.0.1:1/.* cannot connect: ServerSelectionTimeoutError"),
])
def test_bad_urls_fail_at_start_with_one_clear_error(extra: dict[str, Any], message: str,
                                                     amqp_uri: str) -> None:
    container = ServiceContainer(NoUrlService, Config(broker_url=amqp_uri, extra=extra))
    try:
        with pytest.raises(ConfigError, match=message) as raised:
            container.start()
        assert "\n" not in str(raised.value) and "secret" not in str(raised.value)
    finally:
        container.kill()
