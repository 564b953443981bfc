"""EventDispatcher without a broker: what it publishes, and that a worker's outcome waits
for its events' confirms (and fails when they don't come)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from amqprpc import BrokerError, Config, EventDispatcher, WorkerContext
from amqprpc.transport import Exchange


class FakeConnection:
    def __init__(self) -> None:
        self.published: list[tuple[Any, Any]] = []
        self.declared: list[Any] = []
        self.return_callbacks: list[Any] = []

    def declare(self, *entities: Any, remember: bool = True) -> None:
        self.declared.extend(entities)

    def on_return(self, callback: Any) -> None:
        self.return_callbacks.append(callback)

    def publish(self, message: Any, on_confirm: Any = None) -> None:
        self.published.append((message, on_confirm))


class FakeContainer:
    service_name = "orders"

    def __init__(self) -> None:
        self.config = Config()
        self.connection = FakeConnection()


class FakeEntrypoint:
    method_name = "create"


@pytest.fixture
def dispatcher() -> EventDispatcher:
    provider = EventDispatcher(confirm_timeout=0.05).bind(FakeContainer(), "dispatch")  # type: ignore[arg-type]
    provider.setup()
    return provider


def worker(provider: EventDispatcher, **data: Any) -> WorkerContext:
    return WorkerContext(provider.container, FakeEntrypoint(), data=data)  # type: ignore[arg-type]


def test_dispatch_publishes_the_event_with_context(dispatcher):
    ctx = worker(dispatcher, user_id="u-1")
    future = dispatcher.get_dependency(ctx)("order_created", {"id": 7})
    [(message, _)] = dispatcher.container.connection.published
    assert (message.exchange, message.routing_key) == ("orders.events", "order_created")
    assert json.loads(message.body) == {"id": 7}
    headers = message.properties["application_headers"]
    assert headers["nameko.user_id"] == "u-1"
    assert headers["nameko.call_id_stack"] == ctx.call_id_stack
    assert message.properties["delivery_mode"] == 2 and len(message.properties["message_id"]) == 32
    assert not future.done()


def test_exchange_is_declared_on_every_connect(dispatcher):
    # remembered by the transport, which declares it again on every reconnect
    assert dispatcher.container.connection.declared == [
        Exchange("orders.events", "topic", durable=True, auto_delete=False)]


def test_outcome_waits_for_confirms(dispatcher):
    ctx = worker(dispatcher)
    dispatch = dispatcher.get_dependency(ctx)
    dispatch("a", 1)
    dispatch("b", 2)
    for _, on_confirm in dispatcher.container.connection.published:
        on_confirm(None)
    dispatcher.worker_result(ctx, "ok", None)  # confirmed: no error
    dispatcher.worker_teardown(ctx)


def test_refused_or_missing_confirms_fail_the_worker(dispatcher):
    refused = worker(dispatcher)
    dispatcher.get_dependency(refused)("a", 1)
    dispatcher.container.connection.published[-1][1](BrokerError("nacked"))
    with pytest.raises(BrokerError, match="not confirmed: nacked"):
        dispatcher.worker_result(refused, "ok", None)

    silent = worker(dispatcher)
    dispatcher.get_dependency(silent)("a", 1)
    with pytest.raises(BrokerError, match=r"1 events on 'orders\.events' not confirmed"):
        dispatcher.worker_result(silent, "ok", None)

    async def in_async_handler() -> None:
        ctx = worker(dispatcher)
        dispatcher.get_dependency(ctx)("a", 1)
        await dispatcher.worker_result_async(ctx, "ok", None)

    with pytest.raises(BrokerError, match="not confirmed"):
        asyncio.run(in_async_handler())


def test_the_handlers_own_error_is_not_masked(dispatcher):
    ctx = worker(dispatcher)
    dispatcher.get_dependency(ctx)("a", 1)
    error = ValueError("handler failed")
    dispatcher.worker_result(ctx, None, (ValueError, error, None))  # no BrokerError on top
