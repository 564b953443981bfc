"""``Database(Base)``: a SQLAlchemy session per call, committed when the handler returns.

Ownership, in the lifecycle vocabulary of ``extensions``:

* **container** (``setup`` -> ``stop``/``kill``): one engine per worker process and
  service, pooled, with ``pool_pre_ping`` so a connection the server dropped (restart,
  idle timeout) is replaced at checkout instead of failing a call. ``setup`` connects
  once, so a missing, malformed or unreachable URL is one clear ``ConfigError`` at worker
  start, never an error at the first call.
* **worker** (``get_dependency`` -> ``worker_teardown``): one session per call. It is
  committed in ``worker_result`` when the handler returned, rolled back when it raised,
  and always closed in ``worker_teardown``. The commit happens before the reply is
  published, so a caller that got a result can rely on the data being stored; a failed
  commit becomes the call's error.

``async def`` handlers get an ``AsyncSession`` bound to an async engine that runs on the
container's loop (drivers: psycopg for PostgreSQL, aiomysql for MySQL/MariaDB,
aiosqlite for SQLite; the URL's driver is swapped for the matching one). Their commit,
rollback and close are awaited (``worker_*_async``), never run blocking on the loop.

Once-only effects: ``self.db.once()`` records the call's ``request_id`` (the same across
redeliveries of one request) in ``amqprpc_processed_requests``, inside the handler's
transaction. It returns True the first time and False when a committed (or concurrently
running) execution already recorded it, so a request that is delivered twice changes
data once. A concurrent duplicate waits on the key's row lock; where the database then
aborts its transaction instead of answering (PostgreSQL REPEATABLE READ/SERIALIZABLE, a
MariaDB deadlock among three or more), ``once()`` retries in a new transaction if it was
the transaction's first statement, and otherwise raises :class:`OnceConflict`. See
docs/databases.md ("Duplicates and once()").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

try:
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import URL, Engine, make_url
    from sqlalchemy.orm import Session, sessionmaker
except ImportError as _missing:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"amqprpc.Database needs SQLAlchemy ({_missing}): pip install 'amqprpc[sql]'"
    ) from _missing

from ..exceptions import AmqpRpcError, ConfigError
from ..extensions import DependencyProvider, ExcInfo

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from ..extensions import WorkerContext

__all__ = ["Database", "OnceConflict", "WorkerSession", "processed_requests"]

_log = logging.getLogger(__name__)

URL_SETTING = "DATABASE_URL"
PROCESSED_TABLE = "amqprpc_processed_requests"
MAX_KEY_LENGTH = 128
MAX_HANDLER_LENGTH = 160
CONNECT_TIMEOUT = 10  # seconds; psycopg would otherwise wait for the OS (minutes)
# A database that stops answering (D3) must fail the call, not hold a handler thread (and a
# prefetch slot) for ever. Where the driver allows it, no wait on the server lasts longer:
# pymysql's socket read/write timeouts; for psycopg, PostgreSQL's statement_timeout plus
# TCP keepalives and tcp_user_timeout (a lost link). docs/production.md ("A database that
# stops answering") has the details.
STATEMENT_TIMEOUT = 60  # seconds
ONCE_ATTEMPTS = 5  # tries of once() when the database aborts it over a concurrent duplicate

#: Where ``once()`` records what ran. Add it to your migrations (Alembic:
#: ``processed_requests.to_metadata(Base.metadata)``) or let ``create_tables=True`` make it.
processed_requests = sa.Table(
    PROCESSED_TABLE,
    sa.MetaData(),
    sa.Column("handler", sa.String(MAX_HANDLER_LENGTH), primary_key=True),
    sa.Column("request_id", sa.String(MAX_KEY_LENGTH), primary_key=True),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
)

# dialect -> (sync driver, async driver). The URL's own driver wins where it fits the mode.
_DRIVERS: dict[str, tuple[str, str]] = {
    "postgresql": ("psycopg", "psycopg"),
    "mysql": ("pymysql", "aiomysql"),
    "mariadb": ("pymysql", "aiomysql"),
    "sqlite": ("pysqlite", "aiosqlite"),
}
_ASYNC_DRIVERS = {"asyncpg", "psycopg_async", "aiomysql", "asyncmy", "aiosqlite"}
_PACKAGES = {"psycopg": "psycopg[binary]", "pymysql": "pymysql", "aiomysql": "aiomysql",
             "aiosqlite": "aiosqlite", "asyncpg": "asyncpg", "pysqlite": "sqlite3 (stdlib)"}


class OnceConflict(AmqpRpcError):
    """``once()`` could not answer because another execution of the same key ran at once.

    Either the database aborted this transaction (a serialization failure or a deadlock)
    and ``once()`` was not the transaction's first statement, so it could not retry
    without losing the handler's earlier work; or the wait for the other execution hit
    the database's lock timeout. The call fails and its transaction is rolled back, so
    nothing of it is kept; a retry (events retry by themselves) gets a clear answer.
    """


class WorkerSession(Session):
    """The ``Session`` a sync handler sees as ``self.db``, plus :meth:`once`."""

    worker_ctx: WorkerContext | None = None

    def once(self, key: str | None = None) -> bool:
        """Record this request as processed, in the current transaction; True the first time.

        ``key`` defaults to the call's ``request_id``; pass your own (``f"order:{id}"``)
        where the natural identity of the effect is not the request. Keys are scoped by
        ``service.method``. A second execution of the same request (a redelivery after
        the first one committed) gets False and should skip its writes; one running
        concurrently waits for the first to commit (False) or roll back (True). Call it
        first in the handler: then a transaction the database aborts over the duplicate
        is retried here, else that is :class:`OnceConflict`.
        """
        row = _once_row(self.worker_ctx, key)
        stmt = _once_insert(self.get_bind().dialect.name, row)
        first = _starts_transaction(self)
        self.flush()  # the handler's pending writes: their errors are theirs, not once()'s
        for attempt in range(1, ONCE_ATTEMPTS + 1):
            try:
                return _inserted(self.execute(stmt))
            except sa_exc.DBAPIError as exc:
                if not _once_failed(exc, row, first, attempt):
                    raise
            self.rollback()  # only our own insert was in it
        raise AssertionError("unreachable: the last attempt returns or raises")


@functools.cache
def _async_session_class() -> type[AsyncSession]:
    """``AsyncWorkerSession``, built on first use: asyncio support needs greenlet."""
    from sqlalchemy.ext.asyncio import AsyncSession

    class AsyncWorkerSession(AsyncSession):
        """The ``AsyncSession`` an ``async def`` handler sees as ``self.db``, plus ``once``."""

        worker_ctx: WorkerContext | None = None

        async def once(self, key: str | None = None) -> bool:
            """Awaitable :meth:`WorkerSession.once`."""
            row = _once_row(self.worker_ctx, key)
            stmt = _once_insert(self.get_bind().dialect.name, row)
            first = _starts_transaction(self)
            await self.flush()
            for attempt in range(1, ONCE_ATTEMPTS + 1):
                try:
                    return _inserted(await self.execute(stmt))
                except sa_exc.DBAPIError as exc:
                    if not _once_failed(exc, row, first, attempt):
                        raise
                await self.rollback()
            raise AssertionError("unreachable: the last attempt returns or raises")

    return AsyncWorkerSession


class Database(DependencyProvider):
    """Inject a SQLAlchemy session per call: ``self.db.add(Order(...))``.

    ``base``: the declarative base (or a ``MetaData``) of the service's tables; with
    ``create_tables=True`` its tables (and ``amqprpc_processed_requests``) are created at
    worker start if missing, which suits demos and tests; production uses migrations.

    The URL is the config setting ``<SERVICE>_DATABASE_URL``, else ``DATABASE_URL``
    (``setting`` renames it), from the config file or ``AMQPRPC_*`` environment.
    ``engine_options`` go to ``create_engine`` (pool size, echo, connect_args...).
    """

    def __init__(
        self,
        base: Any = None,
        *,
        create_tables: bool = False,
        setting: str = URL_SETTING,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.metadata: sa.MetaData | None = (
            base if isinstance(base, sa.MetaData) or base is None else base.metadata
        )
        self.create_tables = create_tables
        self.setting = setting
        self.engine_options = dict(engine_options or {})
        self.engine: Engine | None = None
        self.async_engine: AsyncEngine | None = None
        self._where = "database"

    # ------------------------------------------------------------ container lifetime

    def setup(self) -> None:
        container = self.container
        service = container.service_name
        found = container.config.service_setting(service, self.setting)
        if found is None:
            key = f"{service}_{self.setting}".replace("-", "_").upper()
            raise ConfigError(
                f"service {service!r}: no database URL; set {key} or {self.setting.upper()} "
                f"in the config file, or AMQPRPC_{key} in the environment"
            )
        key, raw = found
        try:
            url = make_url(str(raw))
        except sa_exc.ArgumentError:
            raise ConfigError(f"service {service!r}: {key} is not a database URL: {raw!r}") from None
        self.url = url
        self._open: dict[WorkerContext, Any] = {}  # worker -> its session, until teardown
        self._where = f"service {service!r}: database {url.render_as_string(hide_password=True)}"
        kinds = {entrypoint.is_async for entrypoint in container.entrypoints}
        try:
            if False in kinds:
                self.engine = self._create_engine(url, async_=False)
                self._sessions = sessionmaker(self.engine, class_=WorkerSession,
                                              expire_on_commit=False)
                with self.engine.connect() as connection:
                    self._prepare_schema(connection)
            if True in kinds:
                self._setup_async(url)
        except ConfigError:
            self._dispose_quietly()
            raise
        except Exception as exc:
            self._dispose_quietly()
            raise ConfigError(f"{self._where}: cannot connect: {_reason(exc)}") from exc

    def _setup_async(self, url: URL) -> None:
        try:
            from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
        except ImportError as exc:
            raise ConfigError(f"{self._where}: async handlers need SQLAlchemy's asyncio support "
                              f"({exc}): pip install 'amqprpc[sql]'") from None
        loop = self.container.loop
        assert loop is not None, "a service with async handlers has a loop"
        self.async_engine = self._create_engine(url, async_=True, factory=create_async_engine)
        self._async_sessions = async_sessionmaker(self.async_engine, class_=_async_session_class(),
                                                  expire_on_commit=False)

        async def check() -> None:
            assert self.async_engine is not None
            async with self.async_engine.connect() as connection:
                await connection.run_sync(self._prepare_schema)

        asyncio.run_coroutine_threadsafe(check(), loop).result()

    def _create_engine(self, url: URL, async_: bool, factory: Any = sa.create_engine) -> Any:
        url = _with_driver(url, async_)
        options: dict[str, Any] = {"pool_pre_ping": True, **self.engine_options}
        connect_args = dict(options.pop("connect_args", {}))
        if url.get_backend_name() in ("postgresql", "mysql", "mariadb"):
            connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT)
        for key, value in _wait_bounds(url).items():
            if key not in url.query:  # the URL's own setting wins, as connect_args do
                connect_args.setdefault(key, value)
        try:
            engine = factory(url, connect_args=connect_args, **options)
        except (ImportError, sa_exc.NoSuchModuleError) as exc:
            driver = url.get_driver_name()
            raise ConfigError(
                f"{self._where}: driver {driver!r} is not installed ({exc}); "
                f"pip install {_PACKAGES.get(driver, driver)}"
            ) from None
        except (sa_exc.ArgumentError, TypeError) as exc:
            raise ConfigError(f"{self._where}: invalid engine settings: {exc}") from None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            _sqlite_for_workers(engine.sync_engine if async_ else engine)
        return engine

    def _prepare_schema(self, connection: sa.Connection) -> None:
        """Prove the database answers; create tables if asked; note whether once() can work."""
        connection.execute(sa.text("SELECT 1"))
        connection.commit()
        if not self.create_tables:
            return
        attempts = 5
        for attempt in range(1, attempts + 1):
            try:
                if self.metadata is not None:
                    self.metadata.create_all(connection)
                processed_requests.create(connection, checkfirst=True)
                connection.commit()
                return
            except sa_exc.DBAPIError:
                # Several worker processes starting at once: another one created a table
                # between our check and our CREATE, and may not have committed it yet (our
                # CREATE then waits for its lock and fails). A later pass finds the table.
                connection.rollback()
                if attempt == attempts:
                    raise

    def stop(self) -> None:
        """Close every pooled connection (in-flight calls have finished by now)."""
        self._dispose_quietly()

    def kill(self) -> None:
        self._dispose_quietly()

    def _dispose_quietly(self) -> None:
        if self.engine is not None:
            try:
                self.engine.dispose()
            except Exception:
                _log.warning("%s: error closing the engine", self._where, exc_info=True)
            self.engine = None
        if self.async_engine is not None:
            loop = self.container.loop
            engine, self.async_engine = self.async_engine, None
            if loop is not None and loop.is_running():
                try:
                    asyncio.run_coroutine_threadsafe(engine.dispose(), loop).result(10)
                except Exception:
                    _log.warning("%s: error closing the async engine", self._where, exc_info=True)

    # ------------------------------------------------------------ per call

    def get_dependency(self, worker_ctx: WorkerContext) -> Session | AsyncSession:
        factory = self._async_sessions if worker_ctx.entrypoint.is_async else self._sessions
        session = factory()
        session.worker_ctx = worker_ctx  # type: ignore[union-attr]
        self._open[worker_ctx] = session
        return session

    def worker_result(self, worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        session = self._open.get(worker_ctx)
        if session is None:  # setup failed before this dependency was injected
            return
        if exc_info is None:
            session.commit()
        else:
            session.rollback()

    def worker_teardown(self, worker_ctx: WorkerContext) -> None:
        session = self._open.pop(worker_ctx, None)
        if session is not None:
            session.close()

    async def worker_result_async(self, worker_ctx: WorkerContext, result: Any,
                                  exc_info: ExcInfo) -> None:
        session = self._open.get(worker_ctx)
        if session is None:
            return
        if exc_info is None:
            await session.commit()
        else:
            await session.rollback()

    async def worker_teardown_async(self, worker_ctx: WorkerContext) -> None:
        session = self._open.pop(worker_ctx, None)
        if session is not None:
            await session.close()


# ---------------------------------------------------------------- once-only


def _once_row(worker_ctx: WorkerContext | None, key: str | None) -> dict[str, Any]:
    if worker_ctx is None:
        raise RuntimeError("once() needs the session a Database dependency injected for a call")
    request_id = worker_ctx.request_id if key is None else key
    handler = f"{worker_ctx.service_name}.{worker_ctx.method_name}"
    if not isinstance(request_id, str) or not request_id:
        raise ValueError(f"once(): the key must be a non-empty str, got {request_id!r}")
    if len(request_id) > MAX_KEY_LENGTH or len(handler) > MAX_HANDLER_LENGTH:
        raise ValueError(f"once(): key longer than {MAX_KEY_LENGTH} characters "
                         f"(or handler name longer than {MAX_HANDLER_LENGTH}): {request_id!r}")
    return {"handler": handler, "request_id": request_id,
            "processed_at": dt.datetime.now(dt.UTC)}


def _once_insert(dialect: str, row: dict[str, Any]) -> Any:
    """An insert that does nothing (rowcount 0) when the row exists, for this dialect.

    A plain insert + IntegrityError would abort the whole transaction on PostgreSQL and
    needs a SAVEPOINT, which pysqlite mishandles; "insert or ignore" needs neither. The
    unique key makes a concurrent duplicate wait for the first transaction to finish.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return (pg_insert(processed_requests).values(row).on_conflict_do_nothing()
                .returning(processed_requests.c.request_id))
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return (sqlite_insert(processed_requests).values(row).on_conflict_do_nothing()
                .returning(processed_requests.c.request_id))
    if dialect in ("mysql", "mariadb"):
        # IGNORE also downgrades other errors to warnings; the lengths are checked above.
        return sa.insert(processed_requests).values(row).prefix_with("IGNORE")
    raise ConfigError(f"once() does not support the {dialect!r} dialect yet")


def _inserted(result: Any) -> bool:
    """Whether the insert added the row: a RETURNING row, else (MySQL) the row count.

    psycopg reports rowcount -1 for these statements, so PostgreSQL and SQLite say it
    with RETURNING (empty when the conflict clause skipped the row).
    """
    if result.returns_rows:
        return result.first() is not None
    return bool(result.rowcount == 1)


def _raise_if_missing_table(exc: sa_exc.DBAPIError) -> None:
    text = str(exc.orig).lower()
    if PROCESSED_TABLE in text and ("exist" in text or "no such table" in text):
        raise ConfigError(
            f"once() needs the table {PROCESSED_TABLE}: create it with your migrations "
            "(amqprpc.dependencies.sqlalchemy.processed_requests) or Database(create_tables=True)"
        ) from exc


def _starts_transaction(session: Any) -> bool:
    """Whether the next statement begins the session's transaction (nothing to lose on retry)."""
    return not (session.in_transaction() or session.new or session.dirty or session.deleted)


def _once_failed(exc: sa_exc.DBAPIError, row: dict[str, Any], first: bool, attempt: int) -> bool:
    """True: roll back and run once() again. False: not ours, re-raise. Else raise ours.

    Retrying is safe only when once() began the transaction: the rollback then loses
    nothing but our own insert, and the new transaction sees what the other committed.
    """
    _raise_if_missing_table(exc)
    kind = _conflict_kind(exc)
    if kind is None:
        return False
    what = f"once() for {row['handler']} key {row['request_id']!r}"
    reason = _reason(exc)
    if kind == "timeout":
        raise OnceConflict(
            f"{what}: gave up waiting for another transaction that holds this key (on SQLite: "
            f"the database's write lock) ({reason}); the call is rolled back") from exc
    if not first:
        raise OnceConflict(
            f"{what}: the database aborted this transaction because another execution ran at "
            f"the same time ({reason}); the call is rolled back. Call once() before the "
            "handler's other statements and it retries by itself") from exc
    if attempt == ONCE_ATTEMPTS:
        raise OnceConflict(f"{what}: still aborted after {attempt} attempts ({reason})") from exc
    _log.info("%s: %s; retrying in a new transaction", what, reason)
    return True


# PostgreSQL SQLSTATEs, MySQL/MariaDB error numbers, SQLite (extended) result codes.
_ABORTED_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_TIMEOUT_SQLSTATES = {"55P03"}  # lock_not_available (lock_timeout)
_ABORTED_MYSQL = {1213, 1020}  # deadlock; record changed since last read (snapshot isolation)
_TIMEOUT_MYSQL = {1205}  # innodb_lock_wait_timeout
_SQLITE_BUSY_SNAPSHOT = 517


def _conflict_kind(exc: sa_exc.DBAPIError) -> str | None:
    """"aborted" (serialization failure, deadlock), "timeout" (lock wait ran out) or None."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _ABORTED_SQLSTATES:
        return "aborted"
    if sqlstate in _TIMEOUT_SQLSTATES:
        return "timeout"
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):  # pymysql, aiomysql
        if args[0] in _ABORTED_MYSQL:
            return "aborted"
        if args[0] in _TIMEOUT_MYSQL:
            return "timeout"
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        if code == _SQLITE_BUSY_SNAPSHOT:
            return "aborted"
        if code & 0xFF in (5, 6):  # SQLITE_BUSY, SQLITE_LOCKED: the busy timeout ran out
            return "timeout"
    return None


# ---------------------------------------------------------------- engines


def _with_driver(url: URL, async_: bool) -> URL:
    """The URL with a driver that fits sync or async use (``mysql+pymysql`` <-> ``aiomysql``)."""
    backend, driver = url.get_backend_name(), url.get_driver_name()
    drivers = _DRIVERS.get(backend)
    if drivers is None:
        return url  # another dialect: trust the URL as given
    if async_ and driver not in _ASYNC_DRIVERS and driver != "psycopg":
        return url.set(drivername=f"{backend}+{drivers[1]}")
    if not async_ and driver in _ASYNC_DRIVERS:
        return url.set(drivername=f"{backend}+{drivers[0]}")
    if "+" not in url.drivername:
        return url.set(drivername=f"{backend}+{drivers[1 if async_ else 0]}")
    return url


def _wait_bounds(url: URL) -> dict[str, Any]:
    """Driver options that bound every wait on the server (``STATEMENT_TIMEOUT``).

    aiomysql has no read timeout and SQLite no server: they get nothing. psycopg has no
    client-side read timeout either: statement_timeout ends a slow statement on the server,
    and keepalives/tcp_user_timeout end a connection whose packets are lost; a middlebox
    that keeps TCP alive but forwards nothing (a hung pgbouncer) is not bounded.
    """
    driver = url.get_driver_name()
    if driver == "pymysql":
        return {"read_timeout": STATEMENT_TIMEOUT, "write_timeout": STATEMENT_TIMEOUT}
    if driver == "psycopg":
        return {"options": f"-c statement_timeout={STATEMENT_TIMEOUT * 1000}",
                "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                "keepalives_count": 3, "tcp_user_timeout": STATEMENT_TIMEOUT * 1000}
    return {}


def _sqlite_for_workers(engine: Engine) -> None:
    """WAL and a busy timeout: several worker processes may write one SQLite file."""

    @sa.event.listens_for(engine, "connect")
    def configure(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")  # first: switching to WAL may have to wait
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()


def _reason(exc: BaseException) -> str:
    """The driver's own message, on one line, without SQLAlchemy's background links."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    return f"{type(orig).__name__}: {text}" if text else type(orig).__name__
