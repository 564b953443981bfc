"""The testing kit against real containers on the real broker."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import amqp
import pytest

from amqprpc import (
    CallContext,
    EventPublisher,
    MethodNotFound,
    RemoteError,
    RpcProxy,
    event_handler,
    rpc,
    timer,
)
from amqprpc.exceptions import BrokerUnreachable
from amqprpc.testing import (
    EntrypointTimeout,
    entrypoint_hook,
    entrypoint_waiter,
    get_container,
    replace_dependencies,
    restrict_entrypoints,
    with_name,
)
from amqprpc.testing.broker import broker_admin, check_broker, queues_declared_by
from services.greeter import GreeterService

pytestmark = pytest.mark.integration


class Shop:
    name = "shop"
    payments = RpcProxy("payments-that-does-not-run")
    ctx = CallContext()
    gate: threading.Event | None = None

    @rpc
    def buy(self, item: str) -> dict[str, Any]:
        receipt = self.payments.charge(item=item)
        return {"receipt": receipt, "user_id": self.ctx.data.get("user_id"),
                "stack": self.ctx.call_id_stack}

    @rpc
    async def buy_async(self, item: str) -> str:
        await asyncio.sleep(0)
        return f"{item}:{self.ctx.data.get('language')}"

    @rpc
    def broken(self, why: str) -> None:
        raise ValueError(why)

    @rpc
    def wait_for_gate(self, tag: str) -> str:
        assert self.gate is not None
        self.gate.wait(10)
        return tag


@pytest.fixture
def shop(container_factory, unique_name):
    container = container_factory(with_name(Shop, unique_name("shop")), start=False)
    payments = replace_dependencies(container, "payments")
    payments.charge.side_effect = lambda item: f"paid:{item}"
    container.start()
    return container


def test_entrypoint_hook_runs_a_real_worker(shop):
    with entrypoint_hook(shop, "buy", context_data={"user_id": "u-7"}) as buy:
        outcome = buy("tea")
    assert outcome["receipt"] == "paid:tea"  # the replaced dependency was injected
    assert outcome["user_id"] == "u-7"  # context_data is the incoming context
    assert outcome["stack"][-1].startswith(f"{shop.service_name}.buy.")
    with entrypoint_hook(shop, "buy_async", context_data={"language": "fr"}) as buy_async:
        assert buy_async(item="cake") == "cake:fr"  # async def runs on the container's loop
    with entrypoint_hook(shop, "broken") as broken, pytest.raises(ValueError, match="on purpose"):
        broken("on purpose")
    assert shop.wait_idle(5)


def test_entrypoint_hook_times_out_clearly(shop):
    shop.service_cls.gate = threading.Event()
    try:
        with entrypoint_hook(shop, "wait_for_gate", timeout=0.2) as wait, \
                pytest.raises(EntrypointTimeout, match=r"wait_for_gate did not finish within 0.2s"):
            wait("x")
    finally:
        shop.service_cls.gate.set()


def test_entrypoint_waiter_catches_results_and_errors_of_real_calls(shop, rpc_client):
    name = shop.service_name
    with entrypoint_waiter(shop, "buy") as waited:
        future = rpc_client.call_async(name, "buy", "jam")
    assert waited.get()["receipt"] == "paid:jam"
    assert future.result()["receipt"] == "paid:jam"

    with entrypoint_waiter(shop, "broken") as waited:
        rpc_client.call_async(name, "broken", "bad input")
    with pytest.raises(ValueError, match="bad input"):
        waited.get()
    assert waited.worker_ctx is not None and waited.worker_ctx.args == ["bad input"]


def test_entrypoint_waiter_callback_picks_the_worker(shop, rpc_client):
    shop.service_cls.gate = threading.Event()
    shop.service_cls.gate.set()

    def is_second(worker_ctx, result, exc_info) -> bool:
        return result == "second"

    with entrypoint_waiter(shop, "wait_for_gate", callback=is_second) as waited:
        first = rpc_client.call_async(shop.service_name, "wait_for_gate", "first")
        assert first.result() == "first"  # finished inside the block, but refused by callback
        rpc_client.call_async(shop.service_name, "wait_for_gate", "second")
    assert waited.get() == "second"


def test_entrypoint_waiter_times_out_and_surfaces_callback_errors(shop, rpc_client):
    with pytest.raises(EntrypointTimeout, match=r"no worker of .*\.buy finished within 0.1s"), \
            entrypoint_waiter(shop, "buy", timeout=0.1):
        pass

    def bad_callback(*args: Any) -> bool:
        raise KeyError("callback bug")

    with pytest.raises(KeyError, match="callback bug"), entrypoint_waiter(shop, "buy", callback=bad_callback):
        rpc_client.call_async(shop.service_name, "buy", "x")
    assert shop.wait_idle(5)


def test_restrict_entrypoints_leaves_out_the_others(container_factory, unique_name, rpc_client):
    container = container_factory(with_name(Shop, unique_name("shop")), start=False)
    replace_dependencies(container, payments=None)
    restrict_entrypoints(container, "broken")
    container.start()
    with pytest.raises(RemoteError, match="ValueError still here"):
        rpc_client.call(container.service_name, "broken", "still here")
    with pytest.raises(MethodNotFound):
        rpc_client.call(container.service_name, "buy", "tea")


def test_runner_factory_and_get_container(runner_factory, unique_name, rpc_client):
    greeter = with_name(GreeterService, unique_name("greeter"))
    runner = runner_factory(greeter)
    container = get_container(runner, greeter)
    assert get_container(runner, greeter.name) is container and container.running
    assert rpc_client.call(greeter.name, "hello", "Ann") == "Hello, Ann!"


@pytest.fixture
def vhost_must_be_gone():
    """Set up before the vhost, so its check runs after the vhost's deletion."""
    uris: list[str] = []
    yield uris
    assert uris
    with pytest.raises(BrokerUnreachable):
        check_broker(uris[0])


class TestVhostPerTest:
    """Overriding ``broker_uri`` with ``amqp_vhost_uri`` moves every fixture into a fresh vhost."""

    @pytest.fixture
    def broker_uri(self, amqp_vhost_uri):
        return amqp_vhost_uri

    def test_fixed_names_are_safe_and_the_vhost_goes(self, vhost_must_be_gone, container_factory,
                                                     rpc_client, amqp_vhost_uri):
        container = container_factory(GreeterService)  # the real name: "greeter"
        assert container.config.broker_url == amqp_vhost_uri
        assert rpc_client.call("greeter", "hello", "vhost") == "Hello, vhost!"
        vhost_must_be_gone.append(amqp_vhost_uri)


def ledger_service(name: str, source: str) -> type:
    class Ledger:
        @event_handler(source, "sold", max_attempts=1)
        def on_sold(self, payload: dict[str, Any]) -> int:
            if payload.get("bad"):
                raise ValueError("bad sale")
            return payload["amount"] * 2

        @timer(interval=0.05)
        def tick(self) -> str:
            return "ticked"

    Ledger.name = name
    return Ledger


def test_entrypoint_waiter_on_event_handlers_and_timers(container_factory, unique_name, amqp_uri):
    source = unique_name("src")
    container = container_factory(ledger_service(unique_name("ledger"), source))
    with EventPublisher(amqp_uri) as events, entrypoint_waiter(container, "on_sold") as waited:
        events.dispatch(source, "sold", {"amount": 21}, context={"user_id": "u-3"})
    assert waited.get() == 42
    assert waited.worker_ctx is not None and waited.worker_ctx.data["user_id"] == "u-3"

    with EventPublisher(amqp_uri) as events, entrypoint_waiter(container, "on_sold") as waited:
        events.dispatch(source, "sold", {"bad": True})
    with pytest.raises(ValueError, match="bad sale"):
        waited.get()

    with entrypoint_waiter(container, "tick") as ticked:
        pass  # the timer fires on its own
    assert ticked.get() == "ticked"


@pytest.fixture
def queues_must_be_gone(amqp_uri):
    """Set up before container_factory, so its check runs after the factory's clean-up."""
    names: set[str] = set()
    yield names
    assert names
    for name in names:
        with broker_admin(amqp_uri) as channel, pytest.raises(amqp.NotFound):
            channel.queue_declare(name, passive=True)  # a 404 closes the channel: one each


def test_container_factory_deletes_the_queues_it_declared(queues_must_be_gone, container_factory,
                                                          unique_name):
    container = container_factory(ledger_service(unique_name("ledger"), "src-fixed"))
    declared = queues_declared_by(container) - {f"rpc-{container.service_name}"}  # no @rpc here
    assert {name.split("--", 1)[0] for name in declared} == {"evt-src-fixed-sold"}
    assert any(name.endswith(".dlq") for name in declared)
    queues_must_be_gone.update(declared)
