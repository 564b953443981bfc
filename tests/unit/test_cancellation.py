"""Cancellation on ``memory://``: the id set, expiry, bounds, malformed cancels, and whole
calls cancelled while queued, while running (thread and ``async def``), and nested."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import CancelledError
from typing import Any

import pytest

from amqprpc import (
    AsyncRpcClient,
    CallCancelled,
    CallContext,
    ClusterRpcClient,
    Config,
    RpcProxy,
    RpcTimeout,
    rpc,
)
from amqprpc.cancellation.token import CancelToken
from amqprpc.cancellation.wire import (
    CANCEL_TYPE,
    MAX_REMEMBER,
    REASON_HEADER,
    CancelledIds,
    build_cancel,
    parse_cancel,
)
from amqprpc.exceptions import MalformedRequest
from amqprpc.messages import DEADLINE_HEADER
from amqprpc.runner import ServiceRunner
from amqprpc.topology import CONTROL
from amqprpc.transport import Delivery, Outgoing, create_transport
from tests.waiting import wait_until

# ------------------------------------------------------------------ the id set


def test_an_id_is_remembered_until_it_expires() -> None:
    ids = CancelledIds(10)
    now = time.time()
    ids.add("a", now + 60, now)
    ids.add("gone", now - 1, now)  # already past: not kept at all
    assert "a" in ids and "gone" not in ids and "b" not in ids
    ids.add("soon", time.time() + 0.05)
    assert "soon" in ids
    wait_until(lambda: "soon" not in ids, "the id to expire", timeout=5)


def test_the_set_never_grows_past_its_bound_and_sweeps_expired_ids_first() -> None:
    ids = CancelledIds(100)
    now = time.time()
    for n in range(50):
        ids.add(f"short-{n}", now + 0.01, now)
    later = now + 1
    for n in range(10_000):
        ids.add(f"long-{n}", later + 60, later)
        assert len(ids) <= 100
    assert "long-9999" in ids and "long-0" not in ids  # the oldest went first
    assert ids.evicted >= 10_000 - 100


def test_a_flood_costs_constant_time_per_cancel() -> None:
    ids = CancelledIds(20_000)
    now = time.time()
    started = time.perf_counter()
    for n in range(100_000):
        ids.add(f"flood-{n}", now + 60, now)
    assert len(ids) == 20_000
    assert time.perf_counter() - started < 20  # no O(n) work per add (that would be minutes)


def test_max_ids_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_ids"):
        CancelledIds(0)


# ------------------------------------------------------------------ the message


def _delivery(message: Outgoing) -> Delivery:
    return Delivery(1, 1, message.body, message.properties, message.exchange,
                    message.routing_key, False, True)


def _raw(body: bytes = b"", **properties: Any) -> Delivery:
    return Delivery(1, 1, body, properties, CONTROL.name, "cancel.x", False, True)


def test_a_cancel_goes_round_the_wire() -> None:
    now = time.time()
    message = build_cancel("orders", "abc-1", now + 10, "timeout")
    assert (message.exchange, message.routing_key, message.body) == ("amqprpc.control",
                                                                     "cancel.orders", b"")
    assert not message.mandatory and message.properties["delivery_mode"] == 1
    cancel = parse_cancel(_delivery(message), now)
    assert cancel.correlation_id == "abc-1" and cancel.reason == "timeout"
    assert now + 10 < cancel.expires <= now + 16  # the deadline, plus a little grace


@pytest.mark.parametrize("delivery, problem", [
    (_raw(type="other", correlation_id="x"), "not a cancel"),
    (_raw(type=CANCEL_TYPE), "correlation id"),
    (_raw(type=CANCEL_TYPE, correlation_id=""), "correlation id"),
    (_raw(type=CANCEL_TYPE, correlation_id=123), "correlation id"),
    (_raw(type=CANCEL_TYPE, correlation_id="x" * 256), "correlation id"),
    (_raw(b"{}", type=CANCEL_TYPE, correlation_id="x"), "no body"),
    (_raw(type=CANCEL_TYPE, correlation_id="x", application_headers={DEADLINE_HEADER: "soon"}),
     "finite"),
    (_raw(type=CANCEL_TYPE, correlation_id="x", application_headers={DEADLINE_HEADER: True}),
     "finite"),
    (_raw(type=CANCEL_TYPE, correlation_id="x",
          application_headers={DEADLINE_HEADER: float("inf")}), "finite"),
])
def test_malformed_cancels_are_refused_with_a_reason(delivery: Delivery, problem: str) -> None:
    with pytest.raises(MalformedRequest, match=problem):
        parse_cancel(delivery)


def test_a_far_deadline_is_cut_and_an_unknown_reason_is_plain_cancelled() -> None:
    now = time.time()
    cancel = parse_cancel(_raw(type=CANCEL_TYPE, correlation_id="x", application_headers={
        DEADLINE_HEADER: now + 10**9, REASON_HEADER: "<script>"}), now)
    assert cancel.expires == now + MAX_REMEMBER and cancel.reason == "cancelled"
    no_deadline = parse_cancel(_raw(type=CANCEL_TYPE, correlation_id=b"x"), now)
    assert no_deadline.correlation_id == "x" and now < no_deadline.expires < now + MAX_REMEMBER


# ------------------------------------------------------------------ the token


def test_a_token_cancels_once_and_runs_late_callbacks_at_once() -> None:
    token = CancelToken()
    seen: list[str] = []
    token.add_callback(lambda: seen.append("early"))
    assert token.cancel("timeout") and not token.cancel("again")
    token.add_callback(lambda: seen.append("late"))
    assert seen == ["early", "late"] and token.reason == "timeout"


# ------------------------------------------------------------------ whole calls, in memory

STARTED: dict[str, threading.Event] = {}
OBSERVED: dict[str, float] = {}
RAN: list[str] = []


class Slow:
    name = "slow"
    ctx = CallContext()

    @rpc
    def busy(self, key: str, seconds: float) -> str:
        STARTED[key].set()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.ctx.cancelled:
                OBSERVED[key] = time.time()
                self.ctx.raise_if_cancelled()
            time.sleep(0.005)
        return "done"

    @rpc
    async def busy_async(self, key: str, seconds: float) -> str:
        STARTED[key].set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            OBSERVED[key] = time.time()
            raise
        return "done"

    @rpc
    def record(self, key: str) -> None:
        RAN.append(key)


class Front:
    name = "front"
    slow = RpcProxy("slow")

    @rpc
    def relay(self, key: str, seconds: float) -> str:
        result: str = self.slow.busy(key, seconds)
        return result

    @rpc
    async def relay_async(self, key: str, seconds: float) -> str:
        result: str = await self.slow.busy_async(key, seconds)
        return result


@pytest.fixture
def config(request: pytest.FixtureRequest) -> Config:
    return Config(broker_url=f"memory://{request.node.name}", concurrency=2, rpc_timeout=10)


@pytest.fixture
def services(config: Config) -> Any:
    STARTED.clear()
    OBSERVED.clear()
    RAN.clear()
    runner = ServiceRunner(config)
    runner.add_service(Slow)
    runner.add_service(Front)
    runner.start()
    yield runner
    runner.stop()


def _started(key: str) -> threading.Event:
    STARTED[key] = threading.Event()
    return STARTED[key]


@pytest.mark.parametrize("method", ["busy", "busy_async"])
def test_a_running_handler_sees_its_caller_time_out(config: Config, services: Any, method: str) -> None:
    _started(method)
    with ClusterRpcClient(config=config) as client:
        with pytest.raises(RpcTimeout):
            client.call("slow", method, method, 30, _timeout=0.5)
        wait_until(lambda: method in OBSERVED, f"{method} to see the cancel", timeout=10)


@pytest.mark.parametrize("method", ["busy", "busy_async"])
def test_future_cancel_stops_the_handler(config: Config, services: Any, method: str) -> None:
    started = _started(method)
    with ClusterRpcClient(config=config) as client:
        future = client.call_async("slow", method, method, 30)
        assert started.wait(10)
        assert future.cancel() and future.cancel()  # as any Future: True again, sent once
        with pytest.raises(CancelledError):
            future.result()
        wait_until(lambda: method in OBSERVED, f"{method} to see the cancel", timeout=10)


@pytest.mark.parametrize("relay, method", [("relay", "busy"), ("relay_async", "busy_async")])
def test_a_nested_call_stops_with_its_parent(config: Config, services: Any, relay: str,
                                             method: str) -> None:
    started = _started(relay)
    with ClusterRpcClient(config=config) as client:
        future = client.call_async("front", relay, relay, 30)
        assert started.wait(10)
        future.cancel()
        wait_until(lambda: relay in OBSERVED, "the innermost handler to see the cancel", timeout=10)


def test_an_asyncio_task_cancelled_while_awaiting_sends_the_cancel(config: Config,
                                                                   services: Any) -> None:
    started = _started("task")

    async def main() -> None:
        async with AsyncRpcClient(config=config) as client:
            task = asyncio.ensure_future(client.call("slow", "busy_async", "task", 30))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    wait_until(lambda: "task" in OBSERVED, "the handler to see the cancel", timeout=10)


def test_queued_calls_that_were_cancelled_never_run(config: Config, services: Any) -> None:
    with ClusterRpcClient(config=config) as client:
        for n in range(2):
            _started(f"block-{n}")
        blockers = [client.call_async("slow", "busy", f"block-{n}", 30) for n in range(2)]
        assert all(STARTED[f"block-{n}"].wait(10) for n in range(2))
        queued = [client.call_async("slow", "record", f"q{n}") for n in range(50)]
        for future in [*queued, *blockers]:  # the blockers last: the queued ones come next
            future.cancel()
        wait_until(lambda: "block-0" in OBSERVED and "block-1" in OBSERVED, "the blockers to stop",
                   timeout=10)
        assert client.call("slow", "record", "after") is None
    assert RAN == ["after"]


def test_a_hostile_cancel_never_hurts_the_worker(config: Config, services: Any) -> None:
    connection = create_transport(config, name="hostile")
    connection.start()
    try:
        connection.declare(CONTROL)
        for props in ({}, {"type": CANCEL_TYPE}, {"type": CANCEL_TYPE, "correlation_id": "x" * 300},
                      {"type": CANCEL_TYPE, "correlation_id": "x",
                       "application_headers": {DEADLINE_HEADER: "nan"}}):
            connection.publish(Outgoing(CONTROL.name, "cancel.slow", b"junk", props))
    finally:
        connection.stop()
    with ClusterRpcClient(config=config) as client:
        assert client.call("slow", "record", "still") is None
    assert RAN == ["still"]


def test_cancellation_off_sends_nothing_and_handlers_run_on(config: Config) -> None:
    off = config.replace(cancellation=0)
    STARTED.clear()
    OBSERVED.clear()
    runner = ServiceRunner(off)
    runner.add_service(Slow)
    runner.start()
    try:
        started = _started("off")
        with ClusterRpcClient(config=off) as client:
            assert client._caller._cancels is None
            future = client.call_async("slow", "busy", "off", 0.3)
            assert started.wait(10)
            future.cancel()
            runner.stop()  # waits for the handler: it ran to the end
        assert "off" not in OBSERVED
    finally:
        runner.kill()


def test_raise_if_cancelled_is_a_no_op_until_cancelled() -> None:
    from amqprpc.extensions import WorkerContext

    class _Container:
        service_name = "svc"

    class _Entrypoint:
        method_name = "m"

    ctx = WorkerContext(_Container(), _Entrypoint(), cancel=CancelToken())  # type: ignore[arg-type]
    ctx.raise_if_cancelled()
    assert not ctx.cancelled
    assert ctx.cancel_token is not None
    ctx.cancel_token.cancel("timeout")
    assert ctx.cancelled
    with pytest.raises(CallCancelled, match=r"its caller gave up \(timeout\)"):
        ctx.raise_if_cancelled()


def test_a_skipped_call_is_reported_as_cancelled_to_metrics(config: Config) -> None:
    from amqprpc import ServiceContainer
    from amqprpc.entrypoints.rpc import RpcConsumer

    RAN.clear()
    STARTED.clear()
    OBSERVED.clear()
    container = ServiceContainer(Slow, config.replace(concurrency=1))
    container.start()
    unrun: list[tuple[str, str]] = []
    container.shared_extension(RpcConsumer, RpcConsumer).on_unrun = \
        lambda method, outcome: unrun.append((method, outcome))
    try:
        started = _started("hold")
        with ClusterRpcClient(config=config) as client:
            blocker = client.call_async("slow", "busy", "hold", 30)
            assert started.wait(10)
            queued = [client.call_async("slow", "record", f"m{n}") for n in range(5)]
            for future in [*queued, blocker]:
                future.cancel()
            assert client.call("slow", "record", "last") is None
        assert unrun == [("record", "cancelled")] * 5 and RAN == ["last"]
    finally:
        container.stop()
