"""``RpcProxy("svc")``: call another service from inside a handler.

Calls go out on the container's own connection and replies come back to it (direct
reply-to by default), so a proxy costs no connection of its own. The caller's context
(``call_id_stack``, ``user_id``, ``auth_token``, ...) travels on, and a nested call never
waits past its parent's deadline. In an ``async def`` handler, calls are awaitable.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..calls import Caller, RpcFuture, remaining_timeout
from ..extensions import DependencyProvider, WorkerContext


class RpcProxy(DependencyProvider):
    """Inject a proxy for ``service``: ``self.payments.charge(order_id=1)``.

    ``direct_reply_to=False`` makes the container use a reply queue, as Nameko does.
    ``timeout`` defaults to the config's ``rpc_timeout``.
    """

    def __init__(self, service: str, *, timeout: float | None = None,
                 direct_reply_to: bool = True) -> None:
        self.service = service
        self.timeout = timeout
        self.direct_reply_to = direct_reply_to

    def setup(self) -> None:
        container = self.container
        key = (Caller, self.direct_reply_to)
        self._caller: Caller = container.shared_extension(
            key, lambda: _CallerExtension(self.direct_reply_to)
        ).caller

    def get_dependency(self, worker_ctx: WorkerContext) -> _WorkerServiceProxy:
        return _WorkerServiceProxy(self, worker_ctx)

    def call_async(self, worker_ctx: WorkerContext, method: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any], timeout: float | None) -> RpcFuture:
        own = timeout if timeout is not None else self.timeout
        own = self.container.config.rpc_timeout if own is None else own
        return self._caller.call_async(
            self.service, method, args, kwargs,
            timeout=remaining_timeout(own, worker_ctx.deadline),
            context=worker_ctx.data,
        )


class _CallerExtension(DependencyProvider):
    """Holds the container's one Caller per reply mode (shared by every RpcProxy)."""

    def __init__(self, direct_reply_to: bool) -> None:
        self.direct_reply_to = direct_reply_to

    def setup(self) -> None:
        container = self.container
        self.caller = Caller(container.connection, container.config,
                             direct_reply_to=self.direct_reply_to, owner=container.service_name)


class _WorkerServiceProxy:
    """What a handler sees: ``proxy.method(...)`` and ``proxy.method.call_async(...)``."""

    def __init__(self, provider: RpcProxy, worker_ctx: WorkerContext) -> None:
        self._provider = provider
        self._worker_ctx = worker_ctx

    def __getattr__(self, method: str) -> _WorkerMethodProxy:
        if method.startswith("_"):
            raise AttributeError(method)
        return _WorkerMethodProxy(self._provider, self._worker_ctx, method)


class _WorkerMethodProxy:
    def __init__(self, provider: RpcProxy, worker_ctx: WorkerContext, method: str) -> None:
        self._provider = provider
        self._worker_ctx = worker_ctx
        self._method = method

    def call_async(self, *args: Any, _timeout: float | None = None, **kwargs: Any) -> RpcFuture:
        return self._provider.call_async(self._worker_ctx, self._method, args, kwargs, _timeout)

    def __call__(self, *args: Any, _timeout: float | None = None, **kwargs: Any) -> Any:
        future = self.call_async(*args, _timeout=_timeout, **kwargs)
        if self._worker_ctx.entrypoint.is_async:
            return asyncio.wrap_future(future)
        return future.result()
