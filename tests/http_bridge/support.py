"""Helpers for the bridge tests: a registry fed by hand, an in-memory RPC client, a test client."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from amqprpc import Config, ServiceContainer, ServiceRegistry
from amqprpc.discovery import build_descriptor
from http_bridge import BridgeSettings, create_app


def descriptor_of(service_cls: type, *, event: str = "up", instance: str | None = None,
                  interval: float = 2.0, started_at: float | None = None) -> dict[str, Any]:
    """The descriptor a container of ``service_cls`` would announce (no broker involved)."""
    container = ServiceContainer(service_cls, Config())
    now = time.time()
    return build_descriptor(container, event=event, instance=instance or uuid.uuid4().hex,
                            host="test", pid=os.getpid(), started_at=started_at or now, sent_at=now,
                            interval=interval, amqprpc_version="test")


class FakeRpc:
    """Stands in for AsyncRpcClient: answers with ``handler(service, method, kwargs, context)``."""

    def __init__(self, handler: Callable[..., Awaitable[Any]] | None = None) -> None:
        self.handler = handler
        self.calls: list[dict[str, Any]] = []
        self.is_connected = True
        self.blocked_reason: str | None = None

    async def call(self, service: str, method: str, *args: Any, _timeout: float | None = None,
                   _context: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        self.calls.append({"service": service, "method": method, "kwargs": kwargs,
                           "context": _context, "timeout": _timeout})
        if self.handler is None:
            return {"service": service, "method": method, "kwargs": kwargs}
        return await self.handler(service, method, kwargs, _context)


def run_app(app: web.Application, scenario: Callable[[TestClient], Awaitable[None]]) -> None:
    """Serve ``app`` on a loopback port and run ``scenario(client)`` against it."""

    async def main() -> None:
        async with TestClient(TestServer(app)) as client:
            await asyncio.wait_for(scenario(client), timeout=30)

    asyncio.run(main())


def make_app(registry: ServiceRegistry, rpc: FakeRpc, **settings: Any) -> web.Application:
    defaults: dict[str, Any] = {"allow_anonymous": False}
    defaults.update(settings)
    return create_app(Config(), rpc_client=rpc, registry=registry,  # type: ignore[arg-type]
                      settings=BridgeSettings(**defaults))


class Clock:
    """Monotonic time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def wait_until_async(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """``tests.waiting.wait_until`` for code on the event loop: polls without blocking it."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
