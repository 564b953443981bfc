"""``DatastoreProvider``: what ``Database`` and ``Mongo`` share, written once.

A data store dependency has one client per container and one *unit of work* per call (a
SQLAlchemy session, a MongoDB session with its transaction):

* **container** (``setup`` -> ``stop``/``kill``): the URL comes from the config setting
  ``<SERVICE>_<setting>``, else ``<setting>`` (:meth:`find_url`, a ``ConfigError`` naming
  both keys when neither is set); :meth:`open_clients` opens the clients for the handler kinds the
  service has (:meth:`handler_kinds`: sync, ``async def``, or both), async ones on the container's
  loop (:meth:`on_loop`); ``stop`` and ``kill`` call :meth:`close_clients`.
* **worker**: the subclass :meth:`track` s the unit it began for a call; the base class
  commits it in ``worker_result`` when the handler returned (before the reply is
  published, so a caller that got a result can rely on the data being stored), rolls it
  back when the handler raised, and closes it in ``worker_teardown``, awaiting the
  ``*_async`` hooks for ``async def`` handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

from ..exceptions import ConfigError
from ..extensions import DependencyProvider, ExcInfo, WorkerContext

__all__ = ["DatastoreProvider"]

_log = logging.getLogger(__name__)

U = TypeVar("U")  # a call's unit of work
R = TypeVar("R")

CLOSE_TIMEOUT = 10.0  # seconds to wait for an async client to close on the loop


class DatastoreProvider(DependencyProvider, Generic[U]):
    """A data store client per container and a unit of work per call; see the module doc."""

    setting: str
    what = "data store URL"  # for the error when no URL is configured
    _where = "data store"  # names the service and the store in messages, never a password

    # ------------------------------------------------------------ container lifetime

    def setup(self) -> None:
        self._open: dict[WorkerContext, U] = {}
        key, url = self.find_url()
        self.open_clients(key, url)

    def open_clients(self, key: str, url: Any) -> None:
        """Open (and check) the clients the handlers need; ``ConfigError`` when they cannot."""

    def find_url(self) -> tuple[str, Any]:
        """``(key, url)`` from the config: ``<SERVICE>_<setting>``, else ``<setting>``."""
        service = self.container.service_name
        found = self.container.config.service_setting(service, self.setting)
        if found is None:
            key = f"{service}_{self.setting}".replace("-", "_").upper()
            raise ConfigError(
                f"service {service!r}: no {self.what}; set {key} or {self.setting.upper()} "
                f"in the config file, or AMQPRPC_{key} in the environment"
            )
        key, url = found
        return key, url

    def handler_kinds(self) -> tuple[bool, bool]:
        """Whether the service has sync handlers, and whether it has ``async def`` ones."""
        kinds = {entrypoint.is_async for entrypoint in self.container.entrypoints}
        return False in kinds, True in kinds

    def on_loop(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        """Run ``coro`` on the container's loop (async clients live there) and wait for it."""
        loop = self.container.loop
        assert loop is not None, "a service with async handlers has a loop"
        import asyncio  # loaded by the loop already; not at the top, for plain services

        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def close_on_loop(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Close an async client on its loop if it still runs; log (never raise) a failure."""
        loop = self.container.loop
        if loop is None or not loop.is_running():
            coro.close()
            return
        try:
            self.on_loop(coro, CLOSE_TIMEOUT)
        except Exception:
            _log.warning("%s: error closing the %s", self._where, what, exc_info=True)

    def close_clients(self) -> None:
        """Close every client; must not raise (``kill`` calls it too)."""

    def stop(self) -> None:
        """Close the clients (in-flight calls have finished by now)."""
        self.close_clients()

    def kill(self) -> None:
        self.close_clients()

    # ------------------------------------------------------------ per call

    def track(self, worker_ctx: WorkerContext, unit: U) -> None:
        """Remember ``unit`` as this call's: committed or rolled back, then closed, by the base."""
        self._open[worker_ctx] = unit

    def commit(self, unit: U) -> None: ...
    def rollback(self, unit: U) -> None: ...
    def close(self, unit: U) -> None: ...
    async def commit_async(self, unit: U) -> None: ...
    async def rollback_async(self, unit: U) -> None: ...
    async def close_async(self, unit: U) -> None: ...

    def worker_result(self, worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        unit = self._open.get(worker_ctx)
        if unit is None:  # setup failed before this call's unit began
            return
        if exc_info is None:
            self.commit(unit)
        else:
            self.rollback(unit)

    def worker_teardown(self, worker_ctx: WorkerContext) -> None:
        unit = self._open.pop(worker_ctx, None)
        if unit is not None:
            self.close(unit)

    async def worker_result_async(self, worker_ctx: WorkerContext, result: Any,
                                  exc_info: ExcInfo) -> None:
        unit = self._open.get(worker_ctx)
        if unit is None:
            return
        if exc_info is None:
            await self.commit_async(unit)
        else:
            await self.rollback_async(unit)

    async def worker_teardown_async(self, worker_ctx: WorkerContext) -> None:
        unit = self._open.pop(worker_ctx, None)
        if unit is not None:
            await self.close_async(unit)
