"""``Mongo("dbname")``: a pymongo database handle per call, optionally in a transaction.

Ownership, in the lifecycle vocabulary of ``extensions`` (the shape every
:class:`~amqprpc.dependencies.datastore.DatastoreProvider` has):

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

from ..config import mask_password
from ..exceptions import ConfigError
from .datastore import DatastoreProvider

if TYPE_CHECKING:
    from ..extensions import WorkerContext

__all__ = ["Mongo"]

_log = logging.getLogger(__name__)

URL_SETTING = "MONGO_URL"
SERVER_SELECTION_TIMEOUT_MS = 5000


class Mongo(DatastoreProvider[tuple[Any, Any]]):
    """Inject the MongoDB database ``database``: ``self.mongo.users.insert_one(...)``.

    The URL is the config setting ``<SERVICE>_MONGO_URL``, else ``MONGO_URL``
    (``setting`` renames it). ``client_options`` go to ``MongoClient`` (pool size,
    timeouts, TLS...). ``transaction=True`` wraps each call in a transaction.
    """

    what = "MongoDB URL"

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

    def open_clients(self, key: str, url: Any) -> None:
        service = self.container.service_name
        self._where = f"service {service!r}: mongo {mask_password(str(url))} database {self.database!r}"
        options: dict[str, Any] = {"appname": service, **self.client_options}
        if "serverselectiontimeoutms" not in str(url).lower():  # options in the URL win
            # pymongo waits 30 s by default: too long for a worker that cannot start.
            options.setdefault("serverSelectionTimeoutMS", SERVER_SELECTION_TIMEOUT_MS)
        sync, async_ = self.handler_kinds()
        try:
            if sync:
                self.client = pymongo.MongoClient(str(url), **options)
                self.db = self.client.get_database(self.database, **self._in_transaction())
                self.client.admin.command("ping")
            if async_:
                self._setup_async(str(url), options)
        except (ConfigurationError, InvalidName, ValueError, TypeError) as exc:
            self.close_clients()
            raise ConfigError(f"{self._where}: invalid {key}: {exc}") from None
        except PyMongoError as exc:
            self.close_clients()
            raise ConfigError(f"{self._where}: cannot connect: {_one_line(exc)}") from None

    def _setup_async(self, url: str, options: dict[str, Any]) -> None:
        from pymongo import AsyncMongoClient

        async def connect() -> None:
            # Created on the loop that will use it.
            self.async_client = AsyncMongoClient(url, **options)
            self.async_db = self.async_client.get_database(self.database, **self._in_transaction())
            await self.async_client.admin.command("ping")

        self.on_loop(connect())

    def _in_transaction(self) -> dict[str, Any]:
        """Options for the handle a transactional handler gets: no write concern of its own.

        Operations in a transaction must not carry a write concern (the server refuses:
        "Cannot set write concern after starting a transaction", code 72); the commit
        carries the client's. pymongo leaves it out only for an explicit ``session=``, not
        for a session bound with ``ClientSession.bind`` (seen with pymongo 4.20), so with a
        URL's ``w=majority`` or ``journal=true`` every write of the call would fail.
        """
        return {"write_concern": WriteConcern()} if self.transaction else {}

    def close_clients(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                _log.warning("%s: error closing the client", self._where, exc_info=True)
            self.client = None
        if self.async_client is not None:
            client, self.async_client = self.async_client, None
            self.close_on_loop(client.close(), "async client")

    # ------------------------------------------------------------ per call: (session, bound)

    def get_dependency(self, worker_ctx: WorkerContext) -> Any:
        return self.async_db if worker_ctx.entrypoint.is_async else self.db

    def worker_setup(self, worker_ctx: WorkerContext) -> None:
        if not self.transaction:
            return
        assert self.client is not None
        session = self.client.start_session()
        self.track(worker_ctx, (session, None))
        session.start_transaction()
        bound = session.bind(end_session=False)
        bound.__enter__()
        self.track(worker_ctx, (session, bound))

    async def worker_setup_async(self, worker_ctx: WorkerContext) -> None:
        if not self.transaction:
            return
        session = self.async_client.start_session()
        self.track(worker_ctx, (session, None))
        await session.start_transaction()
        bound = session.bind(end_session=False)
        await bound.__aenter__()
        self.track(worker_ctx, (session, bound))

    def commit(self, unit: tuple[Any, Any]) -> None:
        if unit[0].in_transaction:
            unit[0].commit_transaction()

    def rollback(self, unit: tuple[Any, Any]) -> None:
        if unit[0].in_transaction:
            unit[0].abort_transaction()

    def close(self, unit: tuple[Any, Any]) -> None:
        session, bound = unit
        if bound is not None:
            bound.__exit__(None, None, None)
        session.end_session()  # aborts a transaction still open

    async def commit_async(self, unit: tuple[Any, Any]) -> None:
        if unit[0].in_transaction:
            await unit[0].commit_transaction()

    async def rollback_async(self, unit: tuple[Any, Any]) -> None:
        if unit[0].in_transaction:
            await unit[0].abort_transaction()

    async def close_async(self, unit: tuple[Any, Any]) -> None:
        session, bound = unit
        if bound is not None:
            await bound.__aexit__(None, None, None)
        await session.end_session()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:  # server selection errors append the whole topology
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}"
