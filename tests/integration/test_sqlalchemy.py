"""``Database`` on PostgreSQL, MariaDB and SQLite, through real workers on the real broker.

Every test makes its own table (a unique name) and drops it afterwards, and its own
service name, so tests share nothing but the servers.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import amqp
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from amqprpc import ClusterRpcClient, Config, ConfigError, Database, RemoteError, rpc
from amqprpc.containers import ServiceContainer
from amqprpc.dependencies.sqlalchemy import processed_requests
from amqprpc.testing.pytest import broker_admin
from tests.databases import unique_table

pytestmark = pytest.mark.integration


def make_service(name: str, table: str) -> tuple[type, type]:
    """A service with sync and async handlers over one table ``table``."""

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = table
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(sa.String(50), unique=True)

    class ItemsService:
        db = Database(Base, create_tables=True)
        sessions: list[Any] = []
        gate: threading.Event | None = None
        entered: threading.Event | None = None

        @rpc
        def add(self, item: str) -> int:
            self.sessions.append(self.db)
            row = Item(name=item)
            self.db.add(row)
            self.db.flush()
            return row.id

        @rpc
        def add_then_fail(self, item: str) -> None:
            self.sessions.append(self.db)
            self.db.add(Item(name=item))
            self.db.flush()  # the row is in the transaction: the rollback must remove it
            raise ValueError("handler failed after writing")

        @rpc
        def add_once(self, item: str) -> str:
            if not self.db.once():
                return "duplicate"
            self.db.add(Item(name=item))
            return "added"

        @rpc
        def add_keyed(self, item: str, key: str) -> str:
            if not self.db.once(key):
                return "duplicate"
            self.db.add(Item(name=item))
            return "added"

        @rpc
        def add_waiting(self, item: str) -> None:
            assert self.entered is not None and self.gate is not None
            self.db.add(Item(name=item))
            self.db.flush()
            self.entered.set()
            self.gate.wait(10)
            self.db.execute(sa.select(sa.literal(1)))  # the connection was killed meanwhile

        @rpc
        def backend_id(self) -> int:
            dialect = self.db.get_bind().dialect.name
            query = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()",
                     "mariadb": "SELECT CONNECTION_ID()"}[dialect]
            return int(self.db.execute(sa.text(query)).scalar_one())

        @rpc
        def names(self) -> list[str]:
            return sorted(self.db.scalars(sa.select(Item.name)))

        @rpc
        async def async_add(self, item: str) -> str:
            self.sessions.append(self.db)
            self.db.add(Item(name=item))
            await self.db.flush()
            return type(self.db).__name__

        @rpc
        async def async_add_then_fail(self, item: str) -> None:
            self.sessions.append(self.db)
            self.db.add(Item(name=item))
            await self.db.flush()
            raise ValueError("async handler failed after writing")

        @rpc
        async def async_add_once(self, item: str) -> str:
            if not await self.db.once():
                return "duplicate"
            self.db.add(Item(name=item))
            await asyncio.sleep(0)
            return "added"

    ItemsService.name = name  # type: ignore[attr-defined]
    ItemsService.sessions = []
    return ItemsService, Item


@pytest.fixture
def items(sql_url: str, container_factory: Callable[..., ServiceContainer], amqp_uri: str,
          unique_name: Callable[[str], str]) -> Iterator[tuple[type, ServiceContainer, str]]:
    """A running ItemsService on ``sql_url``; its table and once-rows removed afterwards."""
    table = unique_table("items")
    service_cls, _ = make_service(unique_name("items"), table)
    config = Config(broker_url=amqp_uri, extra={"DATABASE_URL": sql_url})
    container = container_factory(service_cls, config)
    yield service_cls, container, table
    container.stop(grace=5)
    engine = sa.create_engine(sql_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        connection.execute(processed_requests.delete().where(
            processed_requests.c.handler.like(f"{service_cls.name}.%")))
    engine.dispose()


def test_commit_on_return_rollback_on_error_and_always_closed(items: Any,
                                                              rpc_client: ClusterRpcClient) -> None:
    service_cls, container, _ = items
    name = service_cls.name
    assert rpc_client.call(name, "add", "apple") >= 1
    assert rpc_client.call(name, "async_add", "pear") == "AsyncWorkerSession"
    with pytest.raises(RemoteError, match="failed after writing"):
        rpc_client.call(name, "add_then_fail", "ghost")
    with pytest.raises(RemoteError, match="async handler failed"):
        rpc_client.call(name, "async_add_then_fail", "async-ghost")
    assert rpc_client.call(name, "names") == ["apple", "pear"]

    database = container.dependencies["db"]
    sessions = service_cls.sessions
    assert len(sessions) == 4 and len({id(s) for s in sessions}) == 4  # one per call
    for session in sessions:
        sync = getattr(session, "sync_session", session)
        assert not sync.in_transaction(), "session left open"
    assert database.engine.pool.checkedout() == 0
    assert database.async_engine.sync_engine.pool.checkedout() == 0


def test_commit_failure_is_the_calls_error(items: Any, rpc_client: ClusterRpcClient) -> None:
    # The unique constraint fires at commit (no flush in `add_once`): the caller must get
    # the error, not a success reply for data that was never stored.
    service_cls, _, _ = items
    rpc_client.call(service_cls.name, "add", "dup")
    with pytest.raises(RemoteError, match="IntegrityError"):
        rpc_client.call(service_cls.name, "add_keyed", "dup", key="k1")
    # ... and the once-row of the failed call was rolled back with it.
    assert rpc_client.call(service_cls.name, "add_keyed", "other", key="k1") == "added"


def publish_twice(amqp_uri: str, service: str, method: str, kwargs: dict[str, Any]) -> list[Any]:
    """Deliver one request twice (same correlation id), as the broker does after a worker
    died between commit and ack; return both replies in order."""
    import json

    correlation_id = str(uuid.uuid4())
    body = json.dumps({"args": [], "kwargs": kwargs}).encode()
    replies: list[Any] = []
    with broker_admin(amqp_uri) as channel:
        reply_queue, _, _ = channel.queue_declare("", exclusive=True, auto_delete=True)
        channel.queue_bind(reply_queue, "nameko-rpc", reply_queue)  # Nameko-style reply queue
        channel.basic_consume(reply_queue, callback=lambda m: replies.append(json.loads(m.body)),
                              no_ack=True)
        for delivered in (1, 2):
            message = amqp.Message(body, content_type="application/json",
                                   correlation_id=correlation_id, reply_to=reply_queue)
            channel.basic_publish(message, exchange="nameko-rpc", routing_key=f"{service}.{method}")
            while len(replies) < delivered:  # one at a time: the second is a *re*delivery
                channel.connection.drain_events(timeout=10)
    return [reply["result"] if reply["error"] is None else reply["error"] for reply in replies]


@pytest.mark.parametrize("method", ["add_once", "async_add_once"])
def test_a_request_executed_twice_changes_data_once(items: Any, amqp_uri: str, method: str,
                                                   rpc_client: ClusterRpcClient) -> None:
    service_cls, _, _ = items
    assert publish_twice(amqp_uri, service_cls.name, method, {"item": "once"}) == [
        "added", "duplicate"]
    assert rpc_client.call(service_cls.name, "names") == ["once"]
    # A new request (a new id) is a new effect.
    assert rpc_client.call(service_cls.name, method, "twice") == "added"


def test_custom_once_key(items: Any, rpc_client: ClusterRpcClient) -> None:
    service_cls, _, _ = items
    assert rpc_client.call(service_cls.name, "add_keyed", "a", key="order-1") == "added"
    assert rpc_client.call(service_cls.name, "add_keyed", "b", key="order-1") == "duplicate"
    assert rpc_client.call(service_cls.name, "names") == ["a"]


@pytest.mark.parametrize("sql_url", ["postgresql", "mariadb"], indirect=True)  # SQLite: no server
def test_pool_survives_a_connection_killed_mid_call(items: Any, sql_url: str,
                                                    rpc_client: ClusterRpcClient) -> None:
    """The server drops the call's connection (as a restart does): that call fails cleanly,
    nothing of it is kept, and the next calls get a fresh connection."""
    service_cls, _, _ = items
    name = service_cls.name
    rpc_client.call(name, "add", "before")
    service_cls.entered, service_cls.gate = threading.Event(), threading.Event()
    backend = rpc_client.call(name, "backend_id")  # the pool hands the same connection back
    future = rpc_client.call_async(name, "add_waiting", "lost")
    assert service_cls.entered.wait(10)
    kill_backend(sql_url, backend)
    service_cls.gate.set()
    with pytest.raises(RemoteError, match=r"OperationalError|closed|lost|terminat"):
        future.result(15)
    # An idle connection killed too: pre-ping replaces it at checkout.
    kill_backend(sql_url, rpc_client.call(name, "backend_id"))
    rpc_client.call(name, "add", "after")
    assert rpc_client.call(name, "names") == ["after", "before"]


def kill_backend(url: str, backend: int) -> None:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        if url.startswith("postgresql"):
            connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        else:
            connection.execute(sa.text(f"KILL {int(backend)}"))
    engine.dispose()


class NoUrlService:
    name = "sql-no-url"
    db = Database()

    @rpc
    def ping(self) -> None: ...

    @rpc
    async def aping(self) -> None: ...


@pytest.mark.parametrize(("extra", "message"), [
    ({}, r"no database URL; set SQL_NO_URL_DATABASE_URL or DATABASE_URL"),
    ({"DATABASE_URL": "not a url"}, r"DATABASE_URL is not a database URL"),
    ({"DATABASE_URL": "nosuchdb://x/y"}, r"driver|dialect|nosuchdb"),
    ({"sql_no_url_database_url": "postgresql+psycopg://postgres@127.0.0.1:1/test"},
     r"database postgresql\+psycopg://postgres@127.0.0.1:1/test: cannot connect: .*"),
    ({"DATABASE_URL": "mysql+pymysql://root:secret@127.0.0.1:1/test"},
     r"\*\*\*.*cannot connect"),
])
def test_bad_urls_fail_at_start_with_one_clear_error(extra: dict[str, str], message: str,
                                                     amqp_uri: str) -> None:
    container = ServiceContainer(NoUrlService, Config(broker_url=amqp_uri, extra=extra))
    try:
        with pytest.raises(ConfigError, match=message) as raised:
            container.start()
        assert "\n" not in str(raised.value)
        assert "secret" not in str(raised.value)
    finally:
        container.kill()
