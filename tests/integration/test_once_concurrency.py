"""``once()`` when executions of one request run at the same moment, on every database.

A redelivery while the first execution still runs, or two workers racing for one request:
exactly one execution does the work ``once()`` guards, whichever way the first one ends.
Executions are threads (tasks for ``async def``); they meet at barriers and events, and
the test waits until the server shows the duplicate waiting on the key's lock
(``pg_stat_activity`` on PostgreSQL, ``information_schema.innodb_trx`` on MariaDB) before
it lets the first one finish. SQLite cannot show a waiting connection: there the duplicate
may also arrive just after the first ended, and the outcome must be (and is) the same.

Every test has its own service name (the once-rows' scope), keys and effect table, and
removes them afterwards.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import amqp
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from amqprpc import ClusterRpcClient, Config, Database, rpc
from amqprpc.containers import ServiceContainer
from amqprpc.dependencies.sqlalchemy import (
    OnceConflict,
    WorkerSession,
    _async_session_class,
    _sqlite_for_workers,
    _with_driver,
    processed_requests,
)
from amqprpc.testing.pytest import broker_admin
from tests.databases import unique_table
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

WAIT = 20  # seconds any one step may take before the test fails


class HandlerFailed(Exception):
    """What the first execution raises in the tests where it rolls back."""


def dialect_of(url: str) -> str:
    return sa.engine.make_url(url).get_backend_name()


# ---------------------------------------------------------------- the race fixture


@dataclass
class Script:
    """Who does what: the first execution to win ``once()`` holds until ``release``."""

    fail_first: bool = False
    read_first: bool = False
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    winners: int = 0

    def won(self) -> bool:
        """Count a winner; True for the first one (the one that holds, and maybe fails)."""
        with self.lock:
            self.winners += 1
            return self.winners == 1


class Race:
    """One database, one service name, one effect table; sessions as a handler gets them."""

    def __init__(self, url: str, engine_options: dict[str, Any], on_connect: list[str]) -> None:
        self.url = url
        self.dialect = dialect_of(url)
        self.service = f"once-{uuid.uuid4().hex[:10]}"
        self.app = self.service  # PostgreSQL: find our connections in pg_stat_activity
        self.on_connect = on_connect
        self.engine_options = engine_options
        self.engine = self._engine(async_=False)
        self.effects = sa.Table(unique_table("effects"), sa.MetaData(),
                                sa.Column("id", sa.Integer, primary_key=True),
                                sa.Column("key", sa.String(64), nullable=False))
        with self.engine.begin() as connection:
            self.effects.create(connection)
            processed_requests.create(connection, checkfirst=True)
        self.scripts: list[Script] = []
        self.async_engine: Any = None

    def _url(self) -> sa.URL:
        url = sa.engine.make_url(self.url)
        if self.dialect == "postgresql":
            url = url.update_query_dict({"application_name": self.app})
        return url

    def _engine(self, async_: bool) -> Any:
        """An engine as ``Database`` makes it (driver, SQLite WAL and busy timeout), plus
        the test's own settings run on connect after ours."""
        url = _with_driver(self._url(), async_)
        if async_:
            from sqlalchemy.ext.asyncio import create_async_engine
            engine = create_async_engine(url, **self.engine_options)
            sync_engine = engine.sync_engine
        else:
            engine = sync_engine = sa.create_engine(url, **self.engine_options)
        if self.dialect == "sqlite":
            _sqlite_for_workers(sync_engine)
        statements = self.on_connect

        @sa.event.listens_for(sync_engine, "connect")
        def configure(dbapi_connection: Any, record: Any) -> None:
            if statements:
                cursor = dbapi_connection.cursor()
                for statement in statements:
                    cursor.execute(statement)
                cursor.close()

        return engine

    def script(self, **options: Any) -> Script:
        script = Script(**options)
        self.scripts.append(script)
        return script

    def session(self, key: str) -> WorkerSession:
        session = WorkerSession(self.engine, expire_on_commit=False)
        session.worker_ctx = SimpleNamespace(  # type: ignore[assignment]
            service_name=self.service, method_name="handle", request_id=key)
        return session

    def async_session(self, key: str) -> Any:
        if self.async_engine is None:
            self.async_engine = self._engine(async_=True)
        session = _async_session_class()(self.async_engine, expire_on_commit=False)
        session.worker_ctx = SimpleNamespace(service_name=self.service, method_name="handle",
                                             request_id=key)
        return session

    def execute(self, key: str, script: Script) -> tuple[bool, int]:
        """A handler: ``once()``, the guarded insert, then commit (or fail, if the script
        says so for the first winner). Returns what once() said and how many effects of
        ``key`` the execution saw afterwards (a duplicate answers from them)."""
        session = self.session(key)
        try:
            if script.read_first:
                session.execute(sa.select(sa.func.count()).select_from(self.effects)).scalar()
            won = session.once()
            if won:
                session.execute(self.effects.insert().values(key=key))
                if script.won():
                    script.holding.set()
                    assert script.release.wait(WAIT), "the test never released the first execution"
                    if script.fail_first:
                        raise HandlerFailed("the first execution failed after its writes")
            seen = session.execute(sa.select(sa.func.count()).select_from(self.effects)
                                   .where(self.effects.c.key == key)).scalar_one()
            session.commit()
            return won, seen
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    async def execute_async(self, key: str, script: Script) -> tuple[bool, int]:
        """:meth:`execute` for an ``async def`` handler."""
        session = self.async_session(key)
        try:
            won = await session.once()
            if won:
                await session.execute(self.effects.insert().values(key=key))
                if script.won():
                    script.holding.set()
                    assert await asyncio.to_thread(script.release.wait, WAIT)
                    if script.fail_first:
                        raise HandlerFailed("the first execution failed after its writes")
            seen = (await session.execute(sa.select(sa.func.count()).select_from(self.effects)
                                          .where(self.effects.c.key == key))).scalar_one()
            await session.commit()
            return won, seen
        except BaseException:
            await session.rollback()
            raise
        finally:
            await session.close()

    def run_async(self, main: Callable[[], Any]) -> Any:
        """``asyncio.run(main())``; the async engine, bound to that loop, is disposed on it."""
        async def run() -> Any:
            try:
                return await asyncio.wait_for(main(), WAIT)
            finally:
                if self.async_engine is not None:
                    await self.async_engine.dispose()
                    self.async_engine = None

        return asyncio.run(run())

    def wait_blocked(self, key: str, count: int) -> None:
        """Until ``count`` transactions wait for a lock on ``key``'s once-row (no-op on SQLite)."""
        if self.dialect == "sqlite":
            return
        # MariaDB refreshes its information_schema.innodb_* snapshot only when it was last
        # read over 0.1 s ago: polling faster would keep reading a stale one forever.
        wait_until(lambda: waiting_on(self.url, key, app=self.app) >= count,
                   f"{count} execution(s) waiting for the lock on {key}", timeout=WAIT,
                   poll=0.25 if self.dialect == "mysql" else 0.02)

    def effect_keys(self) -> list[str]:
        with self.engine.connect() as connection:
            return sorted(connection.scalars(sa.select(self.effects.c.key)))

    def markers(self) -> list[str]:
        with self.engine.connect() as connection:
            return sorted(connection.scalars(
                sa.select(processed_requests.c.request_id)
                .where(processed_requests.c.handler.like(f"{self.service}.%"))))

    def close(self) -> None:
        for script in self.scripts:
            script.release.set()  # a failed test must not leave a thread holding a lock
        with self.engine.begin() as connection:
            self.effects.drop(connection, checkfirst=True)
            connection.execute(processed_requests.delete().where(
                processed_requests.c.handler.like(f"{self.service}.%")))
        self.engine.dispose()


def waiting_on(url: str, key: str, app: str | None = None) -> int:
    """How many transactions wait for a row lock that guards ``key`` (PostgreSQL, MariaDB)."""
    dialect = dialect_of(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            if dialect == "postgresql":  # psycopg binds parameters on the server: match by app
                query = sa.text("SELECT count(*) FROM pg_stat_activity "
                                "WHERE application_name = :app AND wait_event_type = 'Lock'")
                return int(connection.execute(query, {"app": app}).scalar_one())
            query = sa.text("SELECT count(*) FROM information_schema.innodb_trx "
                            "WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE :pattern")
            return int(connection.execute(query, {"pattern": f"%{key}%"}).scalar_one())
    finally:
        engine.dispose()


class Execution(threading.Thread):
    """A handler run in its own thread; keeps its result or its exception."""

    def __init__(self, target: Callable[[], Any], barrier: threading.Barrier | None = None) -> None:
        super().__init__(daemon=True)
        self.target, self.barrier = target, barrier
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            if self.barrier is not None:
                self.barrier.wait(WAIT)
            self.result = self.target()
        except BaseException as exc:  # handed to the test thread by outcome()
            self.error = exc

    def outcome(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), "execution still running"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def make_race(sql_url: str) -> Iterator[Callable[..., Race]]:
    races: list[Race] = []

    def make(engine_options: dict[str, Any] | None = None, on_connect: list[str] | None = None,
             ) -> Race:
        race = Race(sql_url, dict(engine_options or {}), list(on_connect or []))
        races.append(race)
        return race

    yield make
    for race in races:
        race.close()


# ---------------------------------------------------------------- sessions, default isolation


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_a_duplicate_arriving_while_the_first_runs_waits_for_its_end(
        make_race: Callable[..., Race], end: str) -> None:
    race = make_race()
    key = uuid.uuid4().hex
    script = race.script(fail_first=end == "rollback")
    first = Execution(lambda: race.execute(key, script))
    assert script.holding.wait(WAIT)  # first: once() said True, its insert is in, uncommitted
    second = Execution(lambda: race.execute(key, script))
    race.wait_blocked(key, 1)
    script.release.set()
    if end == "commit":
        assert first.outcome() == (True, 1)
        assert second.outcome() == (False, 1)  # ... and it sees the first one's effect
    else:
        with pytest.raises(HandlerFailed):
            first.outcome()
        assert second.outcome() == (True, 1)  # the first left nothing: the second does the work
    assert race.effect_keys() == [key]
    assert race.markers() == [key]


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_a_duplicate_arriving_after_the_first_ended(make_race: Callable[..., Race],
                                                   end: str) -> None:
    race = make_race()
    key = uuid.uuid4().hex
    script = race.script(fail_first=end == "rollback")
    script.release.set()
    if end == "commit":
        assert race.execute(key, script) == (True, 1)
        assert race.execute(key, script) == (False, 1)
    else:
        with pytest.raises(HandlerFailed):
            race.execute(key, script)
        assert race.execute(key, script) == (True, 1)
    assert race.effect_keys() == [key]


@pytest.mark.parametrize("executions", [2, 4])
@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_executions_started_together_do_the_work_once(make_race: Callable[..., Race],
                                                      executions: int, end: str) -> None:
    """Released by one barrier; whoever inserts first holds, the others wait on it. With
    four and a rollback, MariaDB picks deadlock victims among the waiters: once() retries
    them (it was their first statement) and they answer like the others."""
    race = make_race()
    key = uuid.uuid4().hex
    script = race.script(fail_first=end == "rollback")
    barrier = threading.Barrier(executions)
    runs = [Execution(lambda: race.execute(key, script), barrier) for _ in range(executions)]
    assert script.holding.wait(WAIT)
    race.wait_blocked(key, executions - 1)
    script.release.set()
    outcomes, failed = [], 0
    for run in runs:
        try:
            outcomes.append(run.outcome())
        except HandlerFailed:
            failed += 1
    if end == "commit":
        assert failed == 0
        assert sorted(outcomes) == [(False, 1)] * (executions - 1) + [(True, 1)]
    else:
        assert failed == 1  # the first winner; of the others exactly one did the work
        assert sorted(outcomes) == [(False, 1)] * (executions - 2) + [(True, 1)]
    assert race.effect_keys() == [key]
    assert race.markers() == [key]


@pytest.mark.parametrize("sql_url", ["postgresql", "mariadb"], indirect=True)  # SQLite: one
def test_different_keys_do_not_wait_for_each_other(make_race: Callable[..., Race]) -> None:
    # writer at a time, whatever the keys
    race = make_race()
    script = race.script()
    first = Execution(lambda: race.execute("key-a", script))
    assert script.holding.wait(WAIT)
    other = race.script()
    other.release.set()
    assert race.execute("key-b", other) == (True, 1)  # while key-a is held
    script.release.set()
    assert first.outcome() == (True, 1)
    assert race.effect_keys() == ["key-a", "key-b"]


# ---------------------------------------------------------------- other isolation levels

SNAPSHOT_ON = "SET SESSION innodb_snapshot_isolation = ON"  # MariaDB >= 10.6.18; default in 11.8
SNAPSHOT_OFF = "SET SESSION innodb_snapshot_isolation = OFF"

ISOLATIONS = [
    pytest.param("postgresql", {"isolation_level": "REPEATABLE READ"}, [], id="pg-repeatable-read"),
    pytest.param("postgresql", {"isolation_level": "SERIALIZABLE"}, [], id="pg-serializable"),
    pytest.param("mariadb", {"isolation_level": "READ COMMITTED"}, [], id="mariadb-read-committed"),
    pytest.param("mariadb", {"isolation_level": "SERIALIZABLE"}, [], id="mariadb-serializable"),
    pytest.param("mariadb", {}, [SNAPSHOT_ON], id="mariadb-snapshot-isolation"),
]


def needs_snapshot_isolation(url: str, on_connect: list[str]) -> None:
    """Skip a test that sets innodb_snapshot_isolation on a server without it."""
    if SNAPSHOT_ON not in on_connect and SNAPSHOT_OFF not in on_connect:
        return
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            found = connection.execute(sa.text(
                "SHOW VARIABLES LIKE 'innodb_snapshot_isolation'")).first()
    finally:
        engine.dispose()
    if found is None:
        pytest.skip("this MariaDB has no innodb_snapshot_isolation (10.6.18 and later have it)")


@pytest.mark.parametrize(("sql_url", "engine_options", "on_connect"), ISOLATIONS,
                         indirect=["sql_url"])
@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_other_isolation_levels_give_the_same_answers(make_race: Callable[..., Race],
                                                      sql_url: str,
                                                      engine_options: dict[str, Any],
                                                      on_connect: list[str], end: str) -> None:
    """PostgreSQL above READ COMMITTED aborts a waiter whose key another transaction
    committed (serialization failure) instead of answering; once() was the transaction's
    first statement, so it retries in a new one, which sees the key: False, as on READ
    COMMITTED."""
    needs_snapshot_isolation(sql_url, on_connect)
    race = make_race(engine_options, on_connect)
    key = uuid.uuid4().hex
    script = race.script(fail_first=end == "rollback")
    barrier = threading.Barrier(3)
    runs = [Execution(lambda: race.execute(key, script), barrier) for _ in range(3)]
    assert script.holding.wait(WAIT)
    race.wait_blocked(key, 2)
    script.release.set()
    outcomes = []
    for run in runs:
        try:
            outcomes.append(run.outcome())
        except HandlerFailed:
            pass
    expected = [(False, 1)] * (2 if end == "commit" else 1) + [(True, 1)]
    assert sorted(outcomes) == expected
    assert race.effect_keys() == [key]


NOT_FIRST = [
    pytest.param("postgresql", {"isolation_level": "REPEATABLE READ"}, [], id="pg-repeatable-read"),
    pytest.param("postgresql", {"isolation_level": "SERIALIZABLE"}, [], id="pg-serializable"),
    pytest.param("mariadb", {}, [SNAPSHOT_ON], id="mariadb-snapshot-isolation"),
]


@pytest.mark.parametrize(("sql_url", "engine_options", "on_connect"), NOT_FIRST,
                         indirect=["sql_url"])
def test_an_abort_after_other_statements_is_a_once_conflict(make_race: Callable[..., Race],
                                                             sql_url: str,
                                                             engine_options: dict[str, Any],
                                                             on_connect: list[str]) -> None:
    """The duplicate read before once(): its snapshot predates the first one's commit, so
    the database aborts it, and a retry inside once() would lose what the handler already
    did. It fails with OnceConflict (the call is rolled back); its own retry says False."""
    needs_snapshot_isolation(sql_url, on_connect)
    race = make_race(engine_options, on_connect)
    key = uuid.uuid4().hex
    script = race.script()
    first = Execution(lambda: race.execute(key, script))
    assert script.holding.wait(WAIT)
    second = Execution(lambda: race.execute(key, race.script(read_first=True)))
    race.wait_blocked(key, 1)
    script.release.set()
    assert first.outcome() == (True, 1)
    with pytest.raises(OnceConflict, match=r"aborted this transaction .*Call once\(\) before") \
            as raised:
        second.outcome()
    assert isinstance(raised.value.__cause__, sa.exc.OperationalError)
    assert race.execute(key, race.script(read_first=True)) == (False, 1)  # the retry
    assert race.effect_keys() == [key]


@pytest.mark.parametrize("sql_url", ["mariadb"], indirect=True)
def test_mariadb_repeatable_read_reads_before_once_keep_their_old_snapshot(
        make_race: Callable[..., Race], sql_url: str) -> None:
    """The documented limit: with snapshot isolation off (MariaDB < 11.8's default), a
    duplicate that read before once() gets False but does not see the first one's rows."""
    needs_snapshot_isolation(sql_url, [SNAPSHOT_OFF])
    race = make_race(on_connect=[SNAPSHOT_OFF])
    key = uuid.uuid4().hex
    script = race.script()
    first = Execution(lambda: race.execute(key, script))
    assert script.holding.wait(WAIT)
    second = Execution(lambda: race.execute(key, race.script(read_first=True)))
    race.wait_blocked(key, 1)
    script.release.set()
    assert first.outcome() == (True, 1)
    assert second.outcome() == (False, 0)  # False, and the first one's insert is invisible


# ---------------------------------------------------------------- lock timeouts

LOCK_TIMEOUTS = {  # a waiter gives up at once (SQLite), after 0.1 s (PostgreSQL) or 1 s (MariaDB)
    "postgresql": ({"connect_args": {"options": "-c lock_timeout=100"}}, []),
    "mysql": ({}, ["SET SESSION innodb_lock_wait_timeout = 1"]),
    "sqlite": ({}, ["PRAGMA busy_timeout = 0"]),
}


def test_a_wait_past_the_lock_timeout_is_a_once_conflict(make_race: Callable[..., Race],
                                                         sql_url: str) -> None:
    """The first execution holds the key longer than the database waits: the duplicate
    fails with OnceConflict (not the driver's timeout error) and changes nothing; after
    the first one committed, its retry says False."""
    engine_options, on_connect = LOCK_TIMEOUTS[dialect_of(sql_url)]
    race = make_race(engine_options, on_connect)
    key = uuid.uuid4().hex
    script = race.script()
    first = Execution(lambda: race.execute(key, script))
    assert script.holding.wait(WAIT)
    with pytest.raises(OnceConflict, match="gave up waiting for another transaction"):
        race.execute(key, race.script())  # the first one holds until released below
    script.release.set()
    assert first.outcome() == (True, 1)
    assert race.execute(key, race.script()) == (False, 1)
    assert race.effect_keys() == [key]


# ---------------------------------------------------------------- async def handlers


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_async_sessions_wait_too(make_race: Callable[..., Race], end: str) -> None:
    race = make_race()
    key = uuid.uuid4().hex
    script = race.script(fail_first=end == "rollback")

    async def main() -> list[Any]:
        first = asyncio.ensure_future(race.execute_async(key, script))
        assert await asyncio.to_thread(script.holding.wait, WAIT)
        others = [asyncio.ensure_future(race.execute_async(key, script)) for _ in range(2)]
        await asyncio.to_thread(race.wait_blocked, key, 2)
        script.release.set()
        return await asyncio.gather(first, *others, return_exceptions=True)

    first, *others = race.run_async(main)
    if end == "commit":
        assert first == (True, 1)
        assert sorted(others) == [(False, 1), (False, 1)]
    else:
        assert isinstance(first, HandlerFailed)
        assert sorted(others) == [(False, 1), (True, 1)]
    assert race.effect_keys() == [key]


@pytest.mark.parametrize("sql_url", ["postgresql"], indirect=True)
def test_async_once_retries_a_serialization_failure(make_race: Callable[..., Race]) -> None:
    race = make_race({"isolation_level": "REPEATABLE READ"})
    key = uuid.uuid4().hex
    script = race.script()

    async def main() -> list[Any]:
        first = asyncio.ensure_future(race.execute_async(key, script))
        assert await asyncio.to_thread(script.holding.wait, WAIT)
        second = asyncio.ensure_future(race.execute_async(key, script))
        await asyncio.to_thread(race.wait_blocked, key, 1)
        script.release.set()
        return await asyncio.gather(first, second)

    assert race.run_async(main) == [(True, 1), (False, 1)]
    assert race.effect_keys() == [key]


# ---------------------------------------------------------------- through real workers


def make_service(name: str, table: str, script: Script) -> tuple[type, list[str]]:
    """A service whose handlers guard an insert with once(); the first winner holds."""

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = table
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(sa.String(50))  # not unique: a double insert shows

    entered: list[str] = []

    class OnceService:
        db = Database(Base, create_tables=True)

        @rpc
        def add_once(self, item: str) -> str:
            entered.append(item)
            if not self.db.once():
                return "duplicate"
            self.db.add(Item(name=item))
            self.db.flush()
            if script.won():
                script.holding.set()
                assert script.release.wait(WAIT)
                if script.fail_first:
                    raise HandlerFailed("the first execution failed after its writes")
            return "added"

        @rpc
        async def async_add_once(self, item: str) -> str:
            entered.append(item)
            if not await self.db.once():
                return "duplicate"
            self.db.add(Item(name=item))
            await self.db.flush()
            if script.won():
                script.holding.set()
                assert await asyncio.to_thread(script.release.wait, WAIT)
                if script.fail_first:
                    raise HandlerFailed("the first execution failed after its writes")
            return "added"

        @rpc
        def names(self) -> list[str]:
            return sorted(self.db.scalars(sa.select(Item.name)))

    OnceService.name = name  # type: ignore[attr-defined]
    return OnceService, entered


class Deliveries:
    """One request published ``times`` times at once with one correlation id, as when a
    redelivery overtakes a slow first execution, or two workers get the same request."""

    def __init__(self, amqp_uri: str, service: str, method: str, kwargs: dict[str, Any],
                 times: int) -> None:
        self.correlation_id = str(uuid.uuid4())
        self.replies: list[Any] = []
        self._admin = broker_admin(amqp_uri)
        channel = self._channel = self._admin.__enter__()
        reply_queue, _, _ = channel.queue_declare("", exclusive=True, auto_delete=True)
        channel.queue_bind(reply_queue, "nameko-rpc", reply_queue)
        channel.basic_consume(reply_queue, no_ack=True,
                              callback=lambda m: self.replies.append(json.loads(m.body)))
        body = json.dumps({"args": [], "kwargs": kwargs}).encode()
        for _ in range(times):
            channel.basic_publish(amqp.Message(body, content_type="application/json",
                                               correlation_id=self.correlation_id,
                                               reply_to=reply_queue),
                                  exchange="nameko-rpc", routing_key=f"{service}.{method}")
        self.times = times

    def collect(self) -> list[Any]:
        """Every reply: the result, or the error's type name."""
        try:
            while len(self.replies) < self.times:
                self._channel.connection.drain_events(timeout=WAIT)
        finally:
            self._admin.__exit__(None, None, None)
        return sorted(reply["result"] if reply["error"] is None else reply["error"]["exc_type"]
                      for reply in self.replies)


@pytest.fixture
def once_service(sql_url: str, container_factory: Callable[..., ServiceContainer], amqp_uri: str,
                 unique_name: Callable[[str], str]) -> Iterator[Callable[[Script], tuple[type, list[str]]]]:
    """Start OnceService in two containers (two workers on one queue) for a script."""
    table = unique_table("once")
    name = unique_name("once")
    url = sql_url
    if dialect_of(url) == "postgresql":  # find the workers' connections in pg_stat_activity
        url = sa.engine.make_url(url).update_query_dict({"application_name": name}) \
            .render_as_string(hide_password=False)
    scripts: list[Script] = []

    def start(script: Script) -> tuple[type, list[str]]:
        scripts.append(script)
        service_cls, entered = make_service(name, table, script)
        config = Config(broker_url=amqp_uri, extra={"DATABASE_URL": url})
        container_factory(service_cls, config)
        container_factory(service_cls, config)
        return service_cls, entered

    yield start
    for script in scripts:
        script.release.set()
    engine = sa.create_engine(sql_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        connection.execute(processed_requests.delete().where(
            processed_requests.c.handler.like(f"{name}.%")))
    engine.dispose()


@pytest.mark.parametrize("method", ["add_once", "async_add_once"])
@pytest.mark.parametrize("end", ["commit", "rollback"])
@pytest.mark.parametrize("times", [2, 3])
def test_workers_given_one_request_at_once_change_data_once(
        once_service: Callable[[Script], tuple[type, list[str]]], amqp_uri: str, sql_url: str,
        rpc_client: ClusterRpcClient, method: str, end: str, times: int) -> None:
    """Two workers, the request delivered two or three times at once. Three with a failing
    first execution is MariaDB's deadlock among the waiters, retried inside once()."""
    script = Script(fail_first=end == "rollback")
    service_cls, entered = once_service(script)
    deliveries = Deliveries(amqp_uri, service_cls.name, method, {"item": "once"}, times=times)
    assert script.holding.wait(WAIT)  # one execution won once() and holds its transaction
    wait_until(lambda: len(entered) == times, "every delivery in its handler", timeout=WAIT)
    if dialect_of(sql_url) != "sqlite":
        name = service_cls.name
        wait_until(lambda: waiting_on(sql_url, deliveries.correlation_id, app=name) >= times - 1,
                   "the other executions waiting on the once-row", timeout=WAIT,
                   poll=0.25 if dialect_of(sql_url) == "mysql" else 0.02)
    script.release.set()
    replies = deliveries.collect()
    if end == "commit":
        assert replies == ["added"] + ["duplicate"] * (times - 1)
    else:  # the first failed and kept nothing: another one did the work
        assert replies == ["HandlerFailed", "added"] + ["duplicate"] * (times - 2)
    assert rpc_client.call(service_cls.name, "names") == ["once"]
