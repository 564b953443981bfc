"""Events between Nameko 2.14.1 and amqprpc, both ways, for every handler type.

Nameko side: apps/nameko_service.py handles ``compat_event`` from the amqprpc service with
a SERVICE_POOL, a SINGLETON and a BROADCAST handler, and dispatches events from a worker
(``emit``); apps/nameko_client.py dispatches with Nameko's standalone dispatcher.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from amqprpc import ClusterRpcClient, Config, EventDispatcher, ServiceContainer, event_handler, rpc
from amqprpc.testing import entrypoint_waiter
from amqprpc.testing.broker import delete_queues, queues_declared_by

from .conftest import Names

pytestmark = [pytest.mark.compat, pytest.mark.integration]

WAIT = 15.0


def amqprpc_service(names: Names) -> type:
    class AmqprpcEvents:
        name = names.amqprpc
        dispatch = EventDispatcher()

        @rpc
        def emit(self, event_type: str, payload: Any) -> None:
            self.dispatch(event_type, payload)

        @event_handler(names.nameko, "nk_event")
        def on_pool(self, payload: Any) -> Any:
            return payload

        @event_handler(names.nameko, "nk_event", handler_type="singleton")
        def on_singleton(self, payload: Any) -> Any:
            return payload

        @event_handler(names.nameko, "nk_event", handler_type="broadcast")
        def on_broadcast(self, payload: Any) -> Any:
            return payload

    return AmqprpcEvents


@pytest.fixture(scope="module")
def amqprpc_container(amqp_uri: str, names: Names, nameko_service) -> Iterator[ServiceContainer]:
    container = ServiceContainer(amqprpc_service(names), Config(broker_url=amqp_uri))
    container.start()
    try:
        yield container
    finally:
        container.stop(grace=5)
        delete_queues(amqp_uri, queues_declared_by(container))


@pytest.fixture
def client(amqp_uri: str) -> Iterator[ClusterRpcClient]:
    with ClusterRpcClient(amqp_uri, direct_reply_to=False, timeout=10,
                          context={"user_id": "u-9", "language": "nl"}) as client:
        yield client


def _call_ids(stack: list[str]) -> list[str]:
    return [entry.rsplit(".", 1)[0] for entry in stack]


HANDLERS = ("on_pool", "on_singleton", "on_broadcast")


def test_nameko_events_reach_every_amqprpc_handler_type(amqprpc_container, names, nameko_client):
    payload = {"order_id": 7, "items": ["tea", "jam"], "note": "naïve ☃"}
    c = amqprpc_container
    with entrypoint_waiter(c, "on_pool", WAIT) as pool, \
            entrypoint_waiter(c, "on_singleton", WAIT) as singleton, \
            entrypoint_waiter(c, "on_broadcast", WAIT) as broadcast:
        nameko_client(events=[{"source": names.nameko, "type": "nk_event", "payload": payload}])
    assert pool.get() == singleton.get() == broadcast.get() == payload


def test_events_from_a_nameko_worker_carry_its_context(amqprpc_container, names, client):
    c = amqprpc_container
    with entrypoint_waiter(c, "on_pool", WAIT) as pool, \
            entrypoint_waiter(c, "on_broadcast", WAIT) as broadcast:
        getattr(client, names.nameko).emit("nk_event", {"n": 1})
    for waited, method in ((pool, "on_pool"), (broadcast, "on_broadcast")):
        assert waited.get() == {"n": 1}
        worker_ctx = waited.worker_ctx
        assert worker_ctx is not None
        assert (worker_ctx.data["user_id"], worker_ctx.data["language"]) == ("u-9", "nl")
        assert _call_ids(worker_ctx.call_id_stack) == [f"{names.nameko}.emit", f"{names.amqprpc}.{method}"]


def _received(client: ClusterRpcClient, names: Names, payload: Any, count: int) -> list[dict[str, Any]]:
    """Nameko's handler records for ``payload``, once ``count`` of them are in (or fail)."""
    deadline = time.monotonic() + WAIT
    while True:
        records = [r for r in getattr(client, names.nameko).received() if r["payload"] == payload]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)  # the records live in another process: poll them, with a deadline


def test_amqprpc_events_reach_every_nameko_handler_type(amqprpc_container, names, client):
    payload = {"order_id": 8, "total": 12.5}
    getattr(client, names.amqprpc).emit("compat_event", payload)
    records = _received(client, names, payload, 3)
    assert sorted(r["handler"] for r in records) == ["broadcast", "service_pool", "singleton"]
    for record in records:
        context = record["context"]
        assert (context["data"]["user_id"], context["data"]["language"]) == ("u-9", "nl")
        assert _call_ids(context["call_id_stack"])[0] == f"{names.amqprpc}.emit"
        assert _call_ids(context["call_id_stack"])[1].startswith(f"{names.nameko}.on_")


def test_amqprpc_takes_over_a_nameko_handler_queue(amqp_uri, names, nameko_client, nameko_service):
    """Migration: an amqprpc build of the Nameko service consumes the very same queue."""

    class Replacement:
        name = names.nameko

        @event_handler(names.amqprpc, "compat_event")
        def on_pool(self, payload: Any) -> Any:
            return payload

    container = ServiceContainer(Replacement, Config(broker_url=amqp_uri))
    container.start()  # declares Nameko's queue evt-<source>-compat_event--<service>.on_pool
    try:
        [handler] = container.entrypoints
        assert handler.queue_name == f"evt-{names.amqprpc}-compat_event--{names.nameko}.on_pool"
        with entrypoint_waiter(container, "on_pool", WAIT) as waited:
            # competing consumers share the queue round-robin: a few events reach both
            nameko_client(events=[{"source": names.amqprpc, "type": "compat_event",
                                   "payload": {"takeover": i}} for i in range(4)])
        assert waited.get() in [{"takeover": i} for i in range(4)]
    finally:
        container.stop(grace=5)
        shared = handler.queue_name  # Nameko still consumes it: leave it to the module fixture
        delete_queues(amqp_uri, queues_declared_by(container) - {shared})
