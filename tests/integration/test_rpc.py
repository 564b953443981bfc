"""RPC end to end on the real broker: round trips, concurrency, errors, bad input."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import threading
import time
import uuid
from typing import Any

import amqp
import pytest

from amqprpc import (
    AsyncRpcClient,
    BrokerError,
    CallContext,
    ClusterRpcClient,
    Config,
    IncorrectSignature,
    MethodNotFound,
    RemoteError,
    RpcProxy,
    RpcTimeout,
    UnknownService,
    remote_error,
    rpc,
)
from amqprpc.messages import DEADLINE_HEADER
from amqprpc.testing.pytest import broker_admin, with_name

pytestmark = pytest.mark.integration


@remote_error
class OutOfStock(Exception):
    pass


class Calculator:
    name = "calculator"
    calls: list[str] = []
    barrier: threading.Barrier | None = None

    @rpc
    def add(self, a: int, b: int) -> int:
        self.calls.append("add")
        return a + b

    @rpc(expected_exceptions=ValueError)
    def fail(self, message: str) -> None:
        raise ValueError(message)

    @rpc
    def out_of_stock(self, item: str) -> None:
        raise OutOfStock(item)

    @rpc
    async def async_add(self, a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    @rpc
    def wait_for_all(self) -> str:
        assert self.barrier is not None
        self.barrier.wait(timeout=10)
        return threading.current_thread().name

    @rpc
    def context(self) -> Any:
        return None

    @rpc
    def unencodable(self) -> object:
        return object()

    def not_exposed(self) -> str:
        return "secret"


@pytest.fixture
def calculator(container_factory, unique_name):
    cls = with_name(Calculator, unique_name("calc"))
    cls.calls = []
    container = container_factory(cls)
    return container


def test_round_trip_sync(calculator, rpc_client):
    name = calculator.service_name
    assert getattr(rpc_client, name).add(2, 3) == 5
    assert rpc_client.call(name, "add", a=1, b=2) == 3
    futures = [getattr(rpc_client, name).add.call_async(i, i) for i in range(50)]
    assert [f.result() for f in futures] == [2 * i for i in range(50)]


def test_round_trip_async_client_and_async_handler(calculator, amqp_uri):
    name = calculator.service_name

    async def main() -> list[int]:
        async with AsyncRpcClient(amqp_uri, timeout=10) as client:
            proxy = getattr(client, name)
            return await asyncio.gather(proxy.add(1, 1), proxy.async_add(2, 2),
                                        client.call(name, "async_add", a=3, b=3))

    assert asyncio.run(main()) == [2, 4, 6]


def test_reply_queue_mode(calculator, amqp_uri):
    with ClusterRpcClient(amqp_uri, direct_reply_to=False, timeout=10) as client:
        assert client.call(calculator.service_name, "add", 20, 22) == 42


def test_msgpack_requests_get_msgpack_replies(calculator, amqp_uri):
    config = Config(broker_url=amqp_uri, serializer="msgpack")
    with ClusterRpcClient(config=config, timeout=10) as client:
        assert client.call(calculator.service_name, "add", 1, 2) == 3


def test_concurrency_runs_ten_calls_at_once(container_factory, unique_name, rpc_client):
    """Ten calls that each wait until all ten are running: only true concurrency passes."""
    cls = with_name(Calculator, unique_name("conc"))
    cls.barrier = threading.Barrier(10)
    container = container_factory(cls, concurrency=10)
    futures = [rpc_client.call_async(container.service_name, "wait_for_all") for _ in range(10)]
    threads = {f.result(timeout=15) for f in futures}
    assert len(threads) == 10


def test_remote_errors(calculator, rpc_client):
    proxy = getattr(rpc_client, calculator.service_name)
    with pytest.raises(RemoteError) as info:
        proxy.fail("boom")
    assert info.value.exc_type == "ValueError" and info.value.value == "boom"
    with pytest.raises(OutOfStock, match="widget"):
        proxy.out_of_stock("widget")
    with pytest.raises(MethodNotFound):
        proxy.not_exposed()
    with pytest.raises(MethodNotFound):
        proxy.nothing_here()
    with pytest.raises(IncorrectSignature):
        proxy.add(1)
    with pytest.raises(IncorrectSignature):
        proxy.add(1, 2, c=3)
    with pytest.raises(RemoteError, match="UnencodableResult"):
        proxy.unencodable()
    assert proxy.add(1, 1) == 2  # the worker keeps serving


def test_unknown_service_fails_fast(rpc_client, unique_name):
    started = time.monotonic()
    with pytest.raises(UnknownService):
        rpc_client.call(unique_name("ghost"), "anything", _timeout=20)
    assert time.monotonic() - started < 10  # far below the 20 s timeout: returned, not timed out


def test_a_request_the_broker_refuses_fails_fast(rpc_client, unique_name, amqp_uri):
    """A nacked request (here: a full queue that rejects publishes) was never taken: the call
    fails at once with BrokerError instead of waiting for its timeout."""
    service = unique_name("full")
    with broker_admin(amqp_uri) as channel:
        channel.exchange_declare("nameko-rpc", "topic", durable=True, auto_delete=False)
        channel.queue_declare(f"rpc-{service}", auto_delete=True, arguments={
            "x-max-length": 0, "x-overflow": "reject-publish"})
        channel.queue_bind(f"rpc-{service}", "nameko-rpc", f"{service}.*")
        try:
            started = time.monotonic()
            with pytest.raises(BrokerError, match="refused the request"):
                rpc_client.call(service, "anything", _timeout=20)
            assert time.monotonic() - started < 10  # returned, not timed out
        finally:
            channel.queue_delete(f"rpc-{service}")


def test_timeout(container_factory, unique_name, rpc_client):
    cls = with_name(Calculator, unique_name("slow"))
    cls.barrier = threading.Barrier(2)  # never completes: nobody else joins
    container = container_factory(cls)
    with pytest.raises(RpcTimeout):
        rpc_client.call(container.service_name, "wait_for_all", _timeout=0.5)
    cls.barrier.abort()


def test_late_reply_is_dropped_not_delivered(container_factory, unique_name, rpc_client):
    cls = with_name(Calculator, unique_name("late"))
    cls.barrier = threading.Barrier(2)
    container = container_factory(cls)
    future = rpc_client.call_async(container.service_name, "wait_for_all", _timeout=0.3)
    with pytest.raises(RpcTimeout):
        future.result()
    cls.barrier.abort()  # the handler now fails and replies, too late
    assert rpc_client.call(container.service_name, "add", 1, 2) == 3
    assert rpc_client._caller.pending_count() == 0


def test_rpc_proxy_carries_context(container_factory, unique_name, rpc_client):
    backend_name = unique_name("backend")

    class Backend:
        name = backend_name
        ctx = CallContext()

        @rpc
        def whoami(self) -> dict[str, Any]:
            return {"user_id": self.ctx.data.get("user_id"), "stack": self.ctx.call_id_stack}

    class Frontend:
        name = unique_name("frontend")
        backend = RpcProxy(backend_name)

        @rpc
        def relay(self) -> dict[str, Any]:
            return self.backend.whoami()

        @rpc
        async def relay_async(self) -> dict[str, Any]:
            return await self.backend.whoami()

    container_factory(Backend)
    frontend = container_factory(Frontend)
    rpc_client.context["user_id"] = "u-42"
    for method in ("relay", "relay_async"):
        seen = rpc_client.call(frontend.service_name, method)
        assert seen["user_id"] == "u-42"
        assert [entry.rsplit(".", 1)[0] for entry in seen["stack"]] == [
            f"{frontend.service_name}.{method}", f"{backend_name}.whoami"]


class _RawCaller:
    """Publish hand-made requests and read their replies, as a hostile client would."""

    def __init__(self, uri: str, exchange: str = "nameko-rpc") -> None:
        self.admin = broker_admin(uri)
        self.channel = self.admin.__enter__()
        self.exchange = exchange
        self.reply_key = f"raw-{uuid.uuid4().hex}"
        self.queue = self.channel.queue_declare("", exclusive=True).queue
        self.channel.queue_bind(self.queue, exchange, self.reply_key)

    def request(self, routing_key: str, body: bytes, **properties: Any) -> dict[str, Any]:
        correlation_id = str(uuid.uuid4())
        props = {"content_type": "application/json", "correlation_id": correlation_id,
                 "reply_to": self.reply_key, **properties}
        self.channel.basic_publish(amqp.Message(body, **props), self.exchange, routing_key)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = self.channel.basic_get(self.queue, no_ack=True)
            if message is not None:
                assert message.properties["correlation_id"] == correlation_id
                return json.loads(message.body)
            time.sleep(0.01)  # basic_get has no blocking form: poll until the deadline
        raise AssertionError(f"no reply to {routing_key}")

    def close(self) -> None:
        self.admin.__exit__()


def test_bad_input_gets_errors_and_worker_survives(calculator, amqp_uri, tmp_path):
    name = calculator.service_name
    raw = _RawCaller(amqp_uri)
    try:
        def error_of(routing_key: str, body: bytes, **props: Any) -> str:
            reply = raw.request(routing_key, body, **props)
            assert reply["result"] is None
            return reply["error"]["exc_type"]

        good = json.dumps({"args": [1, 2], "kwargs": {}}).encode()
        assert error_of(f"{name}.add", b"{not json") == "MalformedRequest"
        assert error_of(f"{name}.add", b'{"args": [1, 2]}') == "MalformedRequest"
        assert error_of(f"{name}.add", b'[1, 2]') == "MalformedRequest"
        assert error_of(f"{name}.add", b"[" * 100_000) == "MalformedRequest"

        marker = tmp_path / "pwned"

        class Exploit:
            def __reduce__(self) -> tuple[Any, ...]:
                return (open, (str(marker), "w"))

        assert error_of(f"{name}.add", pickle.dumps(Exploit()),
                        content_type="application/x-python-serialize") == "MalformedRequest"
        assert error_of(f"{name}.add", b"a: 1", content_type="application/x-yaml") == "MalformedRequest"
        assert not marker.exists()

        assert error_of(f"{name}.missing", good) == "MethodNotFound"
        assert error_of(f"{name}.__init__", good) == "MethodNotFound"
        assert error_of(f"{name}._private", good) == "MethodNotFound"
        assert error_of(f"{name}.not_exposed", good) == "MethodNotFound"
        assert error_of(f"{name}.add", b'{"args": [1], "kwargs": {}}') == "IncorrectSignature"
        assert error_of(f"{name}.add", b'{"args": [], "kwargs": {"a": 1, "z": 2}}') == "IncorrectSignature"
        oversized = json.dumps({"args": ["x" * (1024 * 1024 + 1), 1], "kwargs": {}}).encode()
        assert error_of(f"{name}.add", oversized) == "MalformedRequest"

        assert raw.request(f"{name}.add", good) == {"result": 3, "error": None}
    finally:
        raw.close()


def test_expired_request_is_not_executed(calculator, amqp_uri, rpc_client):
    name = calculator.service_name
    raw = _RawCaller(amqp_uri)
    try:
        body = json.dumps({"args": [1, 1], "kwargs": {}}).encode()
        props = {"content_type": "application/json", "correlation_id": "expired",
                 "reply_to": raw.reply_key,
                 "application_headers": {DEADLINE_HEADER: time.time() - 1}}
        raw.channel.basic_publish(amqp.Message(body, **props), "nameko-rpc", f"{name}.add")
        assert rpc_client.call(name, "add", 2, 2) == 4  # queued after the expired one
        assert calculator.service_cls.calls == ["add"]
    finally:
        raw.close()


def test_ack_only_after_reply(calculator, amqp_uri, rpc_client):
    """Nothing stays unacked once replies are in: acks follow the replies' confirms."""
    name = calculator.service_name
    futures = [rpc_client.call_async(name, "add", i, 1) for i in range(200)]
    assert sum(f.result() for f in futures) == sum(range(1, 201))
    with broker_admin(amqp_uri) as channel:
        deadline = time.monotonic() + 10
        while True:
            declared = channel.queue_declare(f"rpc-{name}", passive=True)
            if declared.message_count == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert declared.message_count == 0
    assert os.getpid()
