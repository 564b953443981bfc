"""``proxy.<service>.<method>(...)``: the attribute sugar every caller shares.

One tree for ``ClusterRpcClient``, ``AsyncRpcClient`` and what ``RpcProxy`` injects. A
proxy holds two callables and nothing else, so each caller decides only what differs:

* ``send(service, method, args, kwargs, timeout)`` publishes the request now and returns
  its ``RpcFuture`` (a client's connection, or a container's with the worker's context);
* ``wait(future)`` is what calling the method returns: the result (blocking), an
  awaitable (asyncio), or either, by the handler's kind (``RpcProxy``).

``proxy.method.call_async(...)`` returns the future itself, for many calls in flight. The
keyword ``_timeout`` (seconds) is the per-call timeout; every other keyword is the remote
method's. Names starting with ``_`` are never services or methods (``copy``, ``pickle`` and
debuggers probe them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .calls import RpcFuture

T = TypeVar("T")

Send = Callable[[str, str, tuple[Any, ...], dict[str, Any], float | None], RpcFuture]
Wait = Callable[[RpcFuture], T]

__all__ = ["MethodProxy", "Send", "ServiceProxy", "Wait"]


class MethodProxy(Generic[T]):
    """``proxy.method(...)`` calls and waits; ``proxy.method.call_async(...)`` returns a future."""

    def __init__(self, send: Send, wait: Wait[T], service: str, method: str) -> None:
        self._send = send
        self._wait = wait
        self.service = service
        self.method = method

    def __call__(self, *args: Any, _timeout: float | None = None, **kwargs: Any) -> T:
        return self._wait(self._send(self.service, self.method, args, kwargs, _timeout))

    def call_async(self, *args: Any, _timeout: float | None = None, **kwargs: Any) -> RpcFuture:
        return self._send(self.service, self.method, args, kwargs, _timeout)

    def __repr__(self) -> str:
        return f"<MethodProxy {self.service}.{self.method}>"


class ServiceProxy(Generic[T]):
    """``caller.<service>``: attribute access names a method of that service."""

    def __init__(self, send: Send, wait: Wait[T], service: str) -> None:
        self._send = send
        self._wait = wait
        self._service = service

    def __getattr__(self, method: str) -> MethodProxy[T]:
        if method.startswith("_"):
            raise AttributeError(method)
        return MethodProxy(self._send, self._wait, self._service, method)

    def __repr__(self) -> str:
        return f"<ServiceProxy {self._service}>"
