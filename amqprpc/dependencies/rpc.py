"""``RpcProxy("svc")``: call another service from inside a handler.

Calls go out on the container's own connection and replies come back to it (direct
reply-to by default), so a proxy costs no connection of its own. The caller's context
(``call_id_stack``, ``user_id``, ``auth_token``, ...) travels on, and a nested call never
waits past its parent's deadline. In an ``async def`` handler, calls are awaitable. A
handler whose caller gives up cancels the nested calls it is waiting for (A → B → C all stop).
"""

from __future__ import annotations

from typing import Any

from ..calls import Caller, RpcFuture, remaining_timeout
from ..extensions import DependencyProvider, WorkerContext
from ..proxies import ServiceProxy, Wait


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

    def breaker_states(self) -> list[dict[str, str]]:
        """This proxy's circuit breakers (with ``breaker`` on), for the announcer: the bridge's
        dashboard shows them beside the service that holds them."""
        breakers = self._caller.resilience.breakers if self._caller.resilience is not None else None
        if breakers is None:
            return []
        return [{"name": breaker.service if breaker.method == "*" else f"{breaker.service}.{breaker.method}",
                 "state": breaker.state.value}
                for breaker in breakers.all() if breaker.service == self.service]

    def get_dependency(self, worker_ctx: WorkerContext) -> ServiceProxy[Any]:
        """What a handler sees: ``proxy.method(...)`` (awaitable in an ``async def`` handler)
        and ``proxy.method.call_async(...)``, sent with this worker's context and deadline."""

        def send(service: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 timeout: float | None) -> RpcFuture:
            return self.call_async(worker_ctx, method, args, kwargs, timeout)

        wait: Wait[Any] = RpcFuture.result
        if worker_ctx.entrypoint.is_async:
            import asyncio  # here: a plain service never loads it (its idle RSS)

            wait = asyncio.wrap_future
        return ServiceProxy(send, wait, self.service)

    def call_async(self, worker_ctx: WorkerContext, method: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any], timeout: float | None) -> RpcFuture:
        own = timeout if timeout is not None else self.timeout
        own = self.container.config.rpc_timeout if own is None else own
        future = self._caller.call_async(
            self.service, method, args, kwargs,
            timeout=remaining_timeout(own, worker_ctx.deadline),
            context=worker_ctx.data,
        )
        if worker_ctx.cancel_token is not None:
            worker_ctx.cancel_token.watch(future)
        return future


class _CallerExtension(DependencyProvider):
    """Holds the container's one Caller per reply mode (shared by every RpcProxy)."""

    def __init__(self, direct_reply_to: bool) -> None:
        self.direct_reply_to = direct_reply_to

    def setup(self) -> None:
        container = self.container
        self.caller = Caller(container.connection, container.config,
                             direct_reply_to=self.direct_reply_to, owner=container.service_name)
