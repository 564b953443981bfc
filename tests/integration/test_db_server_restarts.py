"""``Database`` and ``Mongo`` across a real database server restart in the middle of a call.

PostgreSQL, MariaDB and SecantusDB run as private servers (tests/private_servers.py),
each on its own port and data directory, so stopping them touches nothing else. Every
test runs one real worker and:

1. makes a call that writes, then blocks until the test lets it go;
2. stops the server (its fast, clean shutdown) or crashes it, while that call holds its
   connection and, on SQL, an open transaction;
3. makes a second call while the server is down: it must fail with a ``RemoteError``
   well within the client's timeout (connect and server-selection timeouts bound it);
4. starts the server again on the same port with the same data, and releases the first
   call, whose outcome must agree with what is stored (an error and nothing written, or
   a result and the write present exactly once);
5. calls again on the same worker: the pool recovers by itself, and no session or
   pooled connection is left checked out.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from amqprpc import ClusterRpcClient, Config, Database, Mongo, RemoteError, rpc
from amqprpc.containers import ServiceContainer
from tests.databases import unavailable, unique_table
from tests.private_servers import (
    MariaDBServer,
    PostgresServer,
    SecantusDiskServer,
    ServerUnavailable,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

CONNECT_TIMEOUT = 3  # s: how long a call waits for a SQL server that does not answer
SERVER_SELECTION_MS = 2000  # how long a Mongo call waits for a server to come back
BLOCK = 30  # s: the most a handler waits for the test to release it


class Gate:
    """The handler says it has written (``entered``); the test lets it go on (``release``)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()


def _private(create: Callable[[], Any]) -> Iterator[Any]:
    try:
        server = create()
    except ServerUnavailable as exc:
        unavailable(f"cannot start a private server: {exc}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def private_postgresql() -> Iterator[PostgresServer]:
    yield from _private(PostgresServer.create)


@pytest.fixture(scope="module")
def private_mariadb() -> Iterator[MariaDBServer]:
    yield from _private(MariaDBServer.create)


@pytest.fixture(scope="module")
def private_secantus() -> Iterator[SecantusDiskServer]:
    yield from _private(SecantusDiskServer.create)


@pytest.fixture
def gate() -> Iterator[Gate]:
    """Released at teardown too, so a failing test leaves no handler blocked (ask for it
    after ``container_factory``: it is then torn down first)."""
    made = Gate()
    yield made
    made.release.set()


def running(server: Any) -> Any:
    server.start()  # a no-op unless an earlier test failed while it was down
    return server


def take_down(server: Any, how: str) -> None:
    """``stop``: the server's fast clean shutdown. ``crash``: it just dies."""
    if how == "stop":
        server.stop()
    else:
        server.crash()


def outcome(future: Any) -> Any:
    """The call's result, or the RemoteError it failed with (anything else propagates)."""
    try:
        return future.result(20)
    except RemoteError as exc:
        return exc


# ---------------------------------------------------------------- SQL


def make_sql_service(name: str, table: str, gate: Gate) -> type:
    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = table
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(sa.String(50), unique=True)

    class RestartService:
        db = Database(Base, create_tables=True,
                      engine_options={"connect_args": {"connect_timeout": CONNECT_TIMEOUT}})

        @rpc
        def add(self, item: str) -> None:
            self.db.add(Item(name=item))

        @rpc
        def add_across_restart(self, item: str) -> str:
            self.db.add(Item(name=item))
            self.db.flush()  # the row is in the open transaction, on the server
            gate.entered.set()
            assert gate.release.wait(BLOCK)
            return "returned"  # the commit (worker_result) meets the restarted server

        @rpc
        def names(self) -> list[str]:
            return sorted(self.db.scalars(sa.select(Item.name)))

        @rpc
        async def async_add(self, item: str) -> None:
            self.db.add(Item(name=item))

        @rpc
        async def async_add_across_restart(self, item: str) -> str:
            self.db.add(Item(name=item))
            await self.db.flush()
            gate.entered.set()
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, gate.release.wait, BLOCK)
            return "returned"

    RestartService.name = name  # type: ignore[attr-defined]
    return RestartService


@pytest.mark.parametrize("how", ["stop", "crash"])
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_sql_call_across_a_server_restart(
        kind: str, mode: str, how: str, request: pytest.FixtureRequest, amqp_uri: str,
        unique_name: Callable[[str], str], rpc_client: ClusterRpcClient,
        container_factory: Callable[..., ServiceContainer], gate: Gate) -> None:
    server = running(request.getfixturevalue(f"private_{kind}"))
    service_cls = make_sql_service(unique_name("restart"), unique_table("items"), gate)
    container = container_factory(service_cls, Config(broker_url=amqp_uri,
                                                      extra={"DATABASE_URL": server.url}))
    name = service_cls.name  # type: ignore[attr-defined]
    prefix = "async_" if mode == "async" else ""

    def call(method: str, *args: Any) -> Any:
        return rpc_client.call(name, method if method == "names" else prefix + method, *args)

    call("add", "before")
    blocked = rpc_client.call_async(name, f"{prefix}add_across_restart", "lost")
    assert gate.entered.wait(10), "the handler never wrote"

    take_down(server, how)
    with pytest.raises(RemoteError, match="OperationalError") as down:
        call("add", "while-down")  # the client's 10 s timeout would raise RpcTimeout instead
    assert "refused" in str(down.value) or "connect" in str(down.value), down.value
    server.start()
    gate.release.set()

    # The server rolled the open transaction back (at shutdown, or in crash recovery): the
    # commit must fail, never report success for a row that is not there.
    failed = outcome(blocked)
    assert isinstance(failed, RemoteError), f"commit across a restart returned {failed!r}"
    assert "OperationalError" in str(failed)

    call("add", "after")  # same worker, no restart: the pool replaced its dead connections
    assert call("names") == ["after", "before"]

    database = container.dependencies["db"]
    engine = database.async_engine.sync_engine if mode == "async" else database.engine
    wait_until(lambda: not database._open, "every session closed")
    wait_until(lambda: engine.pool.checkedout() == 0, "every connection back in the pool")


# ---------------------------------------------------------------- MongoDB


def make_mongo_service(name: str, database: str, transaction: bool, gate: Gate) -> type:
    class RestartMongoService:
        # journal=True: SecantusDB acknowledges a write before it is in its journal
        # otherwise (even with w="majority", unlike mongod), and a crash would lose it.
        # With transaction=True it also checks that the handler's writes carry no write
        # concern of their own (the server refuses them in a transaction).
        mongo = Mongo(database, transaction=transaction,
                      client_options={"serverSelectionTimeoutMS": SERVER_SELECTION_MS,
                                      "journal": True})

        @rpc
        def add(self, key: str) -> None:
            self.mongo.docs.insert_one({"_id": key})

        @rpc
        def add_across_restart(self, key: str, write_after: bool) -> str:
            self.mongo.docs.insert_one({"_id": key})
            gate.entered.set()
            assert gate.release.wait(BLOCK)
            if write_after:  # a write on a connection the restart closed
                self.mongo.audit.insert_one({"_id": key})
            return "returned"

        @rpc
        async def async_add(self, key: str) -> None:
            await self.mongo.docs.insert_one({"_id": key})

        @rpc
        async def async_add_across_restart(self, key: str, write_after: bool) -> str:
            await self.mongo.docs.insert_one({"_id": key})
            gate.entered.set()
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, gate.release.wait, BLOCK)
            if write_after:
                await self.mongo.audit.insert_one({"_id": key})
            return "returned"

        @rpc
        def stored(self) -> dict[str, list[str]]:
            return {collection: sorted(doc["_id"] for doc in self.mongo[collection].find())
                    for collection in ("docs", "audit")}

    RestartMongoService.name = name  # type: ignore[attr-defined]
    return RestartMongoService


@pytest.mark.parametrize(("mode", "transaction", "write_after", "how"), [
    # each write stands alone; the one after the restart is retried by pymongo: success
    ("sync", False, True, "stop"),
    ("sync", False, True, "crash"),
    # the commit meets a server that lost the transaction
    ("sync", True, False, "stop"),
    # a write in a transaction the server lost
    ("async", True, True, "stop"),
    # No transaction with "crash": SecantusDB acknowledges a commitTransaction (even with
    # j=true) before it is in its journal, so a crash soon after loses committed
    # transactions, which mongod does not. That is the server's gap, not ours to test.
], ids=["sync-no-transaction-stop", "sync-no-transaction-crash", "sync-transaction-commit-stop",
        "async-transaction-write-stop"])
def test_mongo_call_across_a_server_restart(
        mode: str, transaction: bool, write_after: bool, how: str, amqp_uri: str,
        private_secantus: SecantusDiskServer, unique_name: Callable[[str], str],
        rpc_client: ClusterRpcClient, container_factory: Callable[..., ServiceContainer],
        gate: Gate) -> None:
    server = running(private_secantus)
    service_cls = make_mongo_service(unique_name("restart"), f"t_{uuid.uuid4().hex[:10]}",
                                     transaction, gate)
    container = container_factory(service_cls, Config(broker_url=amqp_uri,
                                                      extra={"MONGO_URL": server.url}))
    name = service_cls.name  # type: ignore[attr-defined]
    prefix = "async_" if mode == "async" else ""
    dependency = container.dependencies["mongo"]
    client = dependency.async_client if mode == "async" else dependency.client

    rpc_client.call(name, f"{prefix}add", "before")
    blocked = rpc_client.call_async(name, f"{prefix}add_across_restart", "mid", write_after)
    assert gate.entered.wait(10), "the handler never wrote"

    take_down(server, how)
    with pytest.raises(RemoteError, match="ServerSelectionTimeoutError"):
        rpc_client.call(name, f"{prefix}add", "while-down")
    server.start()
    gate.release.set()

    result = outcome(blocked)
    stored = rpc_client.call(name, "stored")
    if transaction:
        # The restart lost the open transaction: the call fails and keeps nothing.
        assert isinstance(result, RemoteError), f"a lost transaction returned {result!r}"
        assert "TransientTransactionError" in str(result)  # pymongo's label: retry the call
        assert stored == {"docs": ["before"], "audit": []}
    else:
        # Each write stands alone: the first was stored before the stop, the second is
        # retried by pymongo (retryable writes) on the restarted server.
        assert result == "returned"
        assert stored == {"docs": ["before", "mid"], "audit": ["mid"]}

    rpc_client.call(name, f"{prefix}add", "after")  # same worker, same client
    assert rpc_client.call(name, "stored")["docs"] == sorted(stored["docs"] + ["after"])
    assert (dependency.async_client if mode == "async" else dependency.client) is client
    wait_until(lambda: not dependency._open, "every session ended")
