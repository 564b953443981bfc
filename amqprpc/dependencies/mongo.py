"""``Mongo("dbname")``: a pymongo database handle per call, optionally in a transaction.

Ownership, in the lifecycle vocabulary of ``extensions``:

* **container** (``setup`` -> ``stop``/``kill``): one ``MongoClient`` per worker process
  and service (it pools its own connections and monitors the servers). ``setup`` pings
  the server, so a missing, malformed or unreachable URL is one clear ``ConfigError`` at
  worker start, never an error at the first call. ``stop`` closes the client.
* **worker**: the handler sees ``self.<attr>`` as a pymongo ``Database``. With
  ``transaction=True`` each call runs in its own session and multi-document
  transaction: committed in ``worker_result`` when the handler returned (before the reply
  is published), aborted when it raised, the session always ended in
  ``worker_teardown``. The session is *bound* (pymongo's ``ClientSession.bind``) to the
  handler's thread or task, so every operation the handler makes joins the transaction
  without passing ``session=``; code the handler runs in other threads does not. The
  handle has no write concern of its own: the commit carries the client's.

``async def`` handlers get a pymongo ``AsyncDatabase`` from an ``AsyncMongoClient`` that
lives on the container's loop; their transaction is begun, committed and ended by
awaiting (``worker_*_async``).

Transactions need a replica set (or a server that advertises one). A write conflict
fails the call with pymongo's error, labelled ``TransientTransactionError``; nothing of
the call is kept and the caller may retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

try:
    import pymongo
    from pymongo import WriteConcern
    from pymongo.errors import ConfigurationError, InvalidName, PyMongoError
except ImportError as _missing:  # pragma: no cover - depends on the installation
    raise ImportError(f"amqprpc.Mongo needs pymongo ({_missing}): pip install 'amqprpc[mongo]'") \
        from _missing

from ..exceptions import ConfigError
from ..extensions import DependencyProvider, ExcInfo

if TYPE_CHECKING:
    from ..extensions import WorkerContext

__all__ = ["Mongo"]

_log = logging.getLogger(__name__)

URL_SETTING = "MONGO_URL"
SERVER_SELECTION_TIMEOUT_MS = 5000


class Mongo(DependencyProvider):
    """Inject the MongoDB database ``database``: ``self.mongo.users.insert_one(...)``.

    The URL is the config setting ``<SERVICE>_MONGO_URL``, else ``MONGO_URL``
    (``setting`` renames it). ``client_options`` go to ``MongoClient`` (pool size,
    timeouts, TLS...). ``transaction=True`` wraps each call in a transaction.
    """

    def __init__(
        self,
        database: str,
        *,
        transaction: bool = False,
        setting: str = URL_SETTING,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(database, str) or not database:
            raise ConfigError(f"Mongo(database) needs a database name, got {database!r}")
        self.database = database
        self.transaction = transaction
        self.setting = setting
        self.client_options = dict(client_options or {})
        self.client: pymongo.MongoClient[Any] | None = None
        self.async_client: Any = None
        self._where = f"mongo database {database!r}"

    # ------------------------------------------------------------ container lifetime

    def setup(self) -> None:
        container = self.container
        service = container.service_name
        found = container.config.service_setting(service, self.setting)
        if found is None:
            key = f"{service}_{self.setting}".replace("-", "_").upper()
            raise ConfigError(
                f"service {service!r}: no MongoDB URL; set {key} or {self.setting.upper()} "
                f"in the config file, or AMQPRPC_{key} in the environment"
            )
        key, url = found
        self._where = f"service {service!r}: mongo {_mask(str(url))} database {self.database!r}"
        self._open: dict[WorkerContext, tuple[Any, Any]] = {}  # worker -> (session, bound)
        options: dict[str, Any] = {"appname": service, **self.client_options}
        if "serverselectiontimeoutms" not in str(url).lower():  # options in the URL win
            # pymongo waits 30 s by default: too long for a worker that cannot start.
            options.setdefault("serverSelectionTimeoutMS", SERVER_SELECTION_TIMEOUT_MS)
        kinds = {entrypoint.is_async for entrypoint in container.entrypoints}
        try:
            if False in kinds:
                self.client = pymongo.MongoClient(str(url), **options)
                self.db = self.client.get_database(self.database, **self._in_transaction())
                self.client.admin.command("ping")
            if True in kinds:
                self._setup_async(str(url), options)
        except (ConfigurationError, InvalidName, ValueError, TypeError) as exc:
            self._close_quietly()
            raise ConfigError(f"{self._where}: invalid {key}: {exc}") from None
        except PyMongoError as exc:
            self._close_quietly()
            raise ConfigError(f"{self._where}: cannot connect: {_one_line(exc)}") from None

    def _setup_async(self, url: str, options: dict[str, Any]) -> None:
        from pymongo import AsyncMongoClient

        loop = self.container.loop
        assert loop is not None, "a service with async handlers has a loop"

        async def connect() -> None:
            # Created on the loop that will use it.
            self.async_client = AsyncMongoClient(url, **options)
            self.async_db = self.async_client.get_database(self.database, **self._in_transaction())
            await self.async_client.admin.command("ping")

        asyncio.run_coroutine_threadsafe(connect(), loop).result()

    def _in_transaction(self) -> dict[str, Any]:
        """Options for the handle a transactional handler gets: no write concern of its own.

        Operations in a transaction must not carry a write concern (the server refuses:
        "Cannot set write concern after starting a transaction", code 72); the commit
        carries the client's. pymongo leaves it out only for an explicit ``session=``, not
        for a session bound with ``ClientSession.bind`` (seen with pymongo 4.20), so with a
        URL's ``w=majority`` or ``journal=true`` every write of the call would fail.
        """
        return {"write_concern": WriteConcern()} if self.transaction else {}

    def stop(self) -> None:
        self._close_quietly()

    def kill(self) -> None:
        self._close_quietly()

    def _close_quietly(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                _log.warning("%s: error closing the client", self._where, exc_info=True)
            self.client = None
        if self.async_client is not None:
            client, self.async_client = self.async_client, None
            loop = self.container.loop
            if loop is not None and loop.is_running():
                try:
                    asyncio.run_coroutine_threadsafe(client.close(), loop).result(10)
                except Exception:
                    _log.warning("%s: error closing the async client", self._where, exc_info=True)

    # ------------------------------------------------------------ per call

    def get_dependency(self, worker_ctx: WorkerContext) -> Any:
        return self.async_db if worker_ctx.entrypoint.is_async else self.db

    def worker_setup(self, worker_ctx: WorkerContext) -> None:
        if not self.transaction:
            return
        assert self.client is not None
        session = self.client.start_session()
        self._open[worker_ctx] = (session, None)
        session.start_transaction()
        bound = session.bind(end_session=False)
        bound.__enter__()
        self._open[worker_ctx] = (session, bound)

    def worker_result(self, worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        session, _ = self._open.get(worker_ctx, (None, None))
        if session is None or not session.in_transaction:
            return
        if exc_info is None:
            session.commit_transaction()
        else:
            session.abort_transaction()

    def worker_teardown(self, worker_ctx: WorkerContext) -> None:
        session, bound = self._open.pop(worker_ctx, (None, None))
        if bound is not None:
            bound.__exit__(None, None, None)
        if session is not None:
            session.end_session()  # aborts a transaction still open

    async def worker_setup_async(self, worker_ctx: WorkerContext) -> None:
        if not self.transaction:
            return
        session = self.async_client.start_session()
        self._open[worker_ctx] = (session, None)
        await session.start_transaction()
        bound = session.bind(end_session=False)
        await bound.__aenter__()
        self._open[worker_ctx] = (session, bound)

    async def worker_result_async(self, worker_ctx: WorkerContext, result: Any,
                                  exc_info: ExcInfo) -> None:
        session, _ = self._open.get(worker_ctx, (None, None))
        if session is None or not session.in_transaction:
            return
        if exc_info is None:
            await session.commit_transaction()
        else:
            await session.abort_transaction()

    async def worker_teardown_async(self, worker_ctx: WorkerContext) -> None:
        session, bound = self._open.pop(worker_ctx, (None, None))
        if bound is not None:
            await bound.__aexit__(None, None, None)
        if session is not None:
            await session.end_session()


def _mask(url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, hosts = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{hosts}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:  # server selection errors append the whole topology
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}"
