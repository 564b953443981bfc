"""RPC between Nameko 2.14.1 and amqprpc, both ways, on the real broker.

Nameko runs as real Nameko code in its own venv (a service process, and one-shot
``ClusterRpcProxy`` scripts); amqprpc runs in this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from amqprpc import (
    CallContext,
    ClusterRpcClient,
    Config,
    IncorrectSignature,
    MethodNotFound,
    RemoteError,
    RpcProxy,
    RpcTimeout,
    ServiceContainer,
    rpc,
)
from amqprpc.testing.broker import delete_queues, queues_declared_by

from .conftest import NamekoProcess, Names

pytestmark = [pytest.mark.compat, pytest.mark.integration]


class OutOfStock(Exception):
    pass


def _describe(exc: BaseException) -> dict[str, Any]:
    return {"class": type(exc).__name__, "exc_type": getattr(exc, "exc_type", None),
            "value": getattr(exc, "value", None)}


def amqprpc_service(names: Names) -> type:
    """The amqprpc side: called by Nameko, and calling Nameko through an RpcProxy."""

    class AmqprpcService:
        name = names.amqprpc
        ctx = CallContext()
        nameko = RpcProxy(names.nameko, direct_reply_to=False)

        @rpc
        def add(self, a: int, b: int) -> int:
            return a + b

        @rpc
        def echo(self, value: Any) -> Any:
            return value

        @rpc
        def fail(self, message: str) -> None:
            raise ValueError(message)

        @rpc
        def sell(self, item: str) -> None:
            raise OutOfStock(f"no {item} left")

        @rpc
        def whoami(self) -> dict[str, Any]:
            data = dict(self.ctx.data)
            data.pop("call_id_stack", None)
            return {"data": data, "call_id_stack": self.ctx.call_id_stack}

        @rpc
        def call_nameko(self, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
            try:
                return {"result": getattr(self.nameko, method)(*args, **kwargs)}
            except Exception as exc:
                return {"error": _describe(exc)}

    return AmqprpcService


@pytest.fixture(scope="module")
def amqprpc_container(amqp_uri: str, names: Names) -> Iterator[ServiceContainer]:
    container = ServiceContainer(amqprpc_service(names), Config(broker_url=amqp_uri))
    container.start()
    try:
        yield container
    finally:
        container.stop(grace=5)
        delete_queues(amqp_uri, queues_declared_by(container))


@pytest.fixture
def reply_queue_client(amqp_uri: str) -> Iterator[ClusterRpcClient]:
    """Nameko replies on the RPC exchange, so calls to it need a reply queue."""
    with ClusterRpcClient(amqp_uri, direct_reply_to=False, timeout=10) as client:
        yield client


def _call(service: str, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"service": service, "method": method, "args": list(args), "kwargs": kwargs}


# ------------------------------------------------------------------ Nameko calls amqprpc


def test_nameko_cluster_rpc_proxy_calls_amqprpc(amqprpc_container, names, nameko_client):
    svc = names.amqprpc
    value = {"text": "naïve ☃", "n": [1, 2.5, None, True], "nested": {"k": ["v"]}}
    outcomes = nameko_client([
        _call(svc, "add", 2, 3),
        _call(svc, "add", a=40, b=2),
        _call(svc, "echo", value),
        _call(svc, "fail", "boom"),
        _call(svc, "sell", "widgets"),
        _call(svc, "no_such_method"),
        _call(svc, "add", 1),
        _call(svc, "add", 1, 2),  # the worker kept serving
    ])
    assert outcomes[0] == {"result": 5}
    assert outcomes[1] == {"result": 42}
    assert outcomes[2] == {"result": value}
    fail, sell, missing, signature = (o["error"] for o in outcomes[3:7])
    assert (fail["class"], fail["exc_type"], fail["value"]) == ("RemoteError", "ValueError", "boom")
    assert fail["str"] == "ValueError boom"
    assert (sell["class"], sell["exc_type"]) == ("RemoteError", "OutOfStock")
    assert sell["value"] == "no widgets left"
    # Nameko rebuilds its own request errors as the real classes: amqprpc names them as Nameko does.
    assert (missing["module"], missing["class"]) == ("nameko.exceptions", "MethodNotFound")
    assert "no_such_method" in missing["str"]
    assert (signature["module"], signature["class"]) == ("nameko.exceptions", "IncorrectSignature")
    assert outcomes[7] == {"result": 3}


# ------------------------------------------------------------------ amqprpc calls Nameko


def test_amqprpc_client_calls_nameko(nameko_service: NamekoProcess, names, reply_queue_client):
    proxy = getattr(reply_queue_client, names.nameko)
    value = {"text": "naïve ☃", "n": [1, 2.5, None, True]}
    assert proxy.add(2, 3) == 5
    assert proxy.add(a=40, b=2) == 42
    assert proxy.echo(value) == value
    futures = [proxy.add.call_async(i, i) for i in range(20)]
    assert [f.result() for f in futures] == [2 * i for i in range(20)]
    with pytest.raises(RemoteError) as info:
        proxy.fail("boom")
    assert (info.value.exc_type, info.value.value) == ("ValueError", "boom")
    with pytest.raises(RemoteError) as info:
        proxy.charge(10)
    assert (info.value.exc_type, info.value.value) == ("InsufficientFunds", "balance too low for 10")
    assert info.value.exc_path == "__main__.InsufficientFunds"
    with pytest.raises(MethodNotFound, match="no_such_method"):
        proxy.no_such_method()
    with pytest.raises(IncorrectSignature):
        proxy.add(1)
    assert proxy.add(1, 1) == 2


def test_direct_reply_to_cannot_reach_nameko_callers(nameko_service, names, amqp_uri):
    """Nameko publishes every reply to the RPC exchange, where no direct reply-to consumer
    is bound: the reply is dropped and the call times out (never a wrong answer). Hence
    ``direct_reply_to=False`` for every call that may land on a Nameko worker."""
    with ClusterRpcClient(amqp_uri, timeout=1) as client, pytest.raises(RpcTimeout):
        getattr(client, names.nameko).add(1, 2)


def test_rpc_proxy_in_amqprpc_service_calls_nameko(nameko_service, amqprpc_container, names, rpc_client):
    call = getattr(rpc_client, names.amqprpc).call_nameko
    assert call("add", 20, 22) == {"result": 42}
    assert call("echo", ["a", {"b": 1}]) == {"result": ["a", {"b": 1}]}
    assert call("fail", "inner boom") == {
        "error": {"class": "RemoteError", "exc_type": "ValueError", "value": "inner boom"}}
    assert call("no_such_method")["error"]["class"] == "MethodNotFound"


def test_nameko_rpc_proxy_in_nameko_service_calls_amqprpc(nameko_service, amqprpc_container, names,
                                                         reply_queue_client):
    relay = getattr(reply_queue_client, names.nameko).relay
    assert relay("add", 1, 2) == 3
    with pytest.raises(RemoteError) as info:
        relay("fail", "deep")
    assert (info.value.exc_type, info.value.value) == ("RemoteError", "ValueError deep")


# ------------------------------------------------------------------ context headers


def _call_ids(stack: list[str]) -> list[str]:
    """``service.method`` of each entry (the uuids differ every call)."""
    return [entry.rsplit(".", 1)[0] for entry in stack]


def test_context_from_nameko_reaches_amqprpc(amqprpc_container, names, nameko_client):
    context = {"user_id": "u-1", "auth_token": "t0k", "language": "fr-FR", "tenant": "acme"}
    [outcome] = nameko_client([_call(names.amqprpc, "whoami")], context_data=context)
    seen = outcome["result"]
    assert seen["data"] == context
    assert _call_ids(seen["call_id_stack"]) == ["standalone_rpc_proxy.call", f"{names.amqprpc}.whoami"]


def test_context_from_amqprpc_reaches_nameko(nameko_service, amqprpc_container, names, amqp_uri):
    context = {"user_id": "u-2", "auth_token": "t0k", "language": "de", "tenant": "acme"}
    with ClusterRpcClient(amqp_uri, direct_reply_to=False, timeout=10, context=context) as client:
        direct = getattr(client, names.nameko).whoami()
        via_proxy = getattr(client, names.amqprpc).call_nameko("whoami")["result"]
        round_trip = getattr(client, names.nameko).relay("whoami")
    for seen in (direct, via_proxy, round_trip):
        assert {k: seen["data"].get(k) for k in context} == context
    assert _call_ids(direct["call_id_stack"]) == [f"{names.nameko}.whoami"]
    assert _call_ids(via_proxy["call_id_stack"]) == [f"{names.amqprpc}.call_nameko", f"{names.nameko}.whoami"]
    # amqprpc client -> Nameko -> amqprpc: the stack grows across both frameworks
    assert _call_ids(round_trip["call_id_stack"]) == [f"{names.nameko}.relay", f"{names.amqprpc}.whoami"]


# ------------------------------------------------------------------ migration


def test_amqprpc_build_serves_alongside_the_nameko_one(nameko_service, names, amqp_uri, reply_queue_client):
    """Migration: start the amqprpc build of a Nameko service; both consume ``rpc-<service>``."""

    class Replacement:
        name = names.nameko

        @rpc
        def implementation(self) -> str:
            return "amqprpc"

    container = ServiceContainer(Replacement, Config(broker_url=amqp_uri))
    container.start()  # redeclares Nameko's queue: the declarations must be equivalent
    try:
        futures = [reply_queue_client.call_async(names.nameko, "implementation") for _ in range(20)]
        assert {future.result() for future in futures} == {"nameko", "amqprpc"}
    finally:
        container.stop(grace=5)  # rpc-<service> stays: the Nameko service still consumes it
