"""Calling services from outside them: a blocking client and an asyncio one.

Both keep one connection (with its I/O thread) and any number of calls in flight on it::

    with ClusterRpcClient() as rpc:
        rpc.greeter.hello("Ann")                       # blocking
        rpc.call("greeter", "hello", name="Ann")       # the same, explicit
        future = rpc.greeter.hello.call_async("Ann")   # many in flight
        future.result()

    async with AsyncRpcClient() as rpc:
        await rpc.greeter.hello("Ann")

The keyword ``_timeout`` (seconds) is reserved for the per-call timeout, and
``call_async``/``AsyncRpcClient.call`` take ``_context`` (merged over ``client.context`` for
that call only, e.g. the HTTP bridge's per-request identity); every other keyword goes to
the remote method. ``direct_reply_to=False`` uses a reply queue instead,
which Nameko services need.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from .calls import Caller, RpcFuture
from .config import Config
from .messages import Context
from .proxies import MethodProxy, ServiceProxy
from .resilience.guard import Resilience
from .tracing.setup import TracingOwner
from .transport import create_transport

__all__ = ["AsyncRpcClient", "ClusterRpcClient", "MethodProxy", "ServiceProxy"]

T = TypeVar("T")


class _ClientBase(Generic[T]):
    """What both clients share: config, connection, caller, attribute sugar."""

    def __init__(
        self,
        broker_url: str | None = None,
        *,
        config: Config | None = None,
        timeout: float | None = None,
        direct_reply_to: bool = True,
        context: Context | None = None,
        name: str | None = None,
    ) -> None:
        config = config or Config.load()
        self.config = config.replace(broker_url=broker_url, rpc_timeout=timeout)
        self.context: Context = dict(context or {})
        name = name or f"client-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._connection = create_transport(
            self.config,
            name=name,
            # A nacked request fails its call at once, and the connection is replaced (a
            # RabbitMQ 3.10 channel can keep nacking after a quorum leader election).
            confirms=True,
        )
        self._caller = Caller(self._connection, self.config, direct_reply_to=direct_reply_to,
                              owner=name)
        self.tracing = TracingOwner(self.config, service_name="amqprpc-client")

    def call(self, service: str, method: str, *args: Any, _timeout: float | None = None,
             _context: Context | None = None, _hedge_after: float | None = None, **kwargs: Any) -> T:
        """Call ``service.method``: its result (blocking client) or an awaitable for it."""
        return self._wait(self.call_async(service, method, *args, _timeout=_timeout,
                                          _context=_context, _hedge_after=_hedge_after, **kwargs))

    def _wait(self, future: RpcFuture) -> T:
        raise NotImplementedError

    def _send(self, service: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
              timeout: float | None) -> RpcFuture:
        return self.call_async(service, method, *args, _timeout=timeout, **kwargs)

    def call_async(self, service: str, method: str, *args: Any, _timeout: float | None = None,
                   _context: Context | None = None, _hedge_after: float | None = None,
                   **kwargs: Any) -> RpcFuture:
        """Send the request now and return a future for its reply (``_hedge_after``: see
        docs/resilience.md)."""
        context = self.context if _context is None else {**self.context, **_context}
        return self._caller.call_async(service, method, args, kwargs, timeout=_timeout,
                                       context=context, hedge_after=_hedge_after)

    @property
    def resilience(self) -> Resilience | None:
        """This client's breakers, retry policy and budget; None when both are off."""
        return self._caller.resilience

    def __getattr__(self, service: str) -> ServiceProxy[T]:
        if service.startswith("_"):
            raise AttributeError(service)
        return ServiceProxy(self._send, self._wait, service)

    @property
    def is_connected(self) -> bool:
        return self._connection.is_connected

    @property
    def blocked_reason(self) -> str | None:
        """Why the broker blocks publishing (a resource alarm), or None."""
        return self._connection.blocked_reason


class ClusterRpcClient(_ClientBase[Any]):
    """A blocking, thread-safe client; use it as a context manager or start()/stop()."""

    def start(self) -> Self:
        """Connect; raises BrokerUnreachable when the broker does not answer."""
        self.tracing.start()
        self._connection.start(wait=True)
        return self

    def stop(self) -> None:
        self._connection.stop()
        self.tracing.shutdown()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _wait(self, future: RpcFuture) -> Any:
        return future.result()


class AsyncRpcClient(_ClientBase[Awaitable[Any]]):
    """The asyncio client: the same calls, awaitable. Use ``async with`` or start()/stop()."""

    async def start(self) -> Self:
        import asyncio  # imported here: a worker whose handlers are all plain never loads asyncio

        loop = asyncio.get_running_loop()
        self.tracing.start()
        await loop.run_in_executor(None, lambda: self._connection.start(wait=True))
        return self

    async def stop(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # calls cancelled just now send their cancels first (call_soon)
        await loop.run_in_executor(None, self._connection.stop)
        self.tracing.shutdown()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def _wait(self, future: RpcFuture) -> Awaitable[Any]:
        import asyncio

        return asyncio.wrap_future(future)  # the request is already sent
