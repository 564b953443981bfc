"""Tracing on ``memory://``: one trace across a client, nested calls and an event (docs/observability.md)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from amqprpc import (
    ClusterRpcClient,
    Config,
    EventDispatcher,
    RemoteError,
    RpcProxy,
    event_handler,
    rpc,
    timer,
)
from amqprpc.exceptions import ConfigError
from amqprpc.runner import ServiceRunner
from amqprpc.tracing import LogContextFilter
from amqprpc.tracing.setup import TracingOwner, tracing_enabled

_EXPORTER = InMemorySpanExporter()


def install_exporter() -> InMemorySpanExporter:
    """One SDK provider per process (OpenTelemetry allows one global); tests clear its exporter."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_amqprpc_test_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        provider._amqprpc_test_exporter = True  # type: ignore[attr-defined]
    return _EXPORTER


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = install_exporter()
    exporter.clear()
    yield exporter
    exporter.clear()


class Leaf:
    name = "leaf"

    @rpc
    def double(self, n: int) -> int:
        if n < 0:
            raise ValueError("negative")
        logging.getLogger("tests.leaf").info("doubling %d", n)
        return 2 * n


class AsyncLeaf:
    name = "aleaf"
    leaf = RpcProxy("leaf")

    @rpc
    async def double(self, n: int) -> int:
        await asyncio.sleep(0)  # the worker's span stays current across awaits
        return int(await self.leaf.double(n))


class Front:
    name = "front"
    leaf = RpcProxy("leaf")
    aleaf = RpcProxy("aleaf")
    dispatch = EventDispatcher()

    @rpc
    def work(self, n: int) -> int:
        result = self.leaf.double(n) + self.aleaf.double(n)
        self.dispatch("worked", {"n": n})
        return int(result)


def _listener(done: threading.Event) -> type:
    class Listener:
        name = "listener"

        @event_handler("front", "worked")
        def on_worked(self, payload: dict[str, int]) -> None:
            done.set()

    return Listener


@pytest.fixture
def traced(request: pytest.FixtureRequest,
           spans: InMemorySpanExporter) -> Iterator[tuple[Config, threading.Event]]:
    config = Config(broker_url=f"memory://{request.node.name}", tracing=1, rpc_timeout=5)
    done = threading.Event()
    runner = ServiceRunner(config)
    for cls in (Front, Leaf, AsyncLeaf, _listener(done)):
        runner.add_service(cls)
    runner.start()
    try:
        yield config, done
    finally:
        runner.stop()


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[tuple[str, SpanKind], list[ReadableSpan]]:
    found: dict[tuple[str, SpanKind], list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault((span.name, span.kind), []).append(span)
    return found


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_a_call_its_nested_calls_and_its_event_are_one_trace(
        traced: tuple[Config, threading.Event], spans: InMemorySpanExporter) -> None:
    config, done = traced
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("root") as root, ClusterRpcClient(config=config) as client:
        assert client.front.work(3) == 12
    assert done.wait(5)
    assert _wait_for(lambda: len(spans.get_finished_spans()) >= 11), spans.get_finished_spans()
    found = _by_name(spans.get_finished_spans())
    trace_ids = {span.context.trace_id for span in spans.get_finished_spans()}
    assert trace_ids == {root.get_span_context().trace_id}

    [client_span] = found["front/work", SpanKind.CLIENT]
    [server_span] = found["front/work", SpanKind.SERVER]
    assert _parent(client_span) == root.get_span_context().span_id
    assert _parent(server_span) == client_span.context.span_id
    assert server_span.attributes is not None
    assert server_span.attributes["rpc.service"] == "front"
    assert server_span.attributes["rpc.method"] == "work"
    assert server_span.attributes["messaging.system"] == "rabbitmq"

    leaf_clients = found["leaf/double", SpanKind.CLIENT]
    leaf_servers = found["leaf/double", SpanKind.SERVER]
    [aleaf_client] = found["aleaf/double", SpanKind.CLIENT]
    [aleaf_server] = found["aleaf/double", SpanKind.SERVER]
    assert len(leaf_clients) == len(leaf_servers) == 2
    assert _parent(aleaf_client) == server_span.context.span_id
    assert _parent(aleaf_server) == aleaf_client.context.span_id
    # front -> leaf directly, and front -> aleaf (async) -> leaf
    assert sorted(_parent(c) for c in leaf_clients) == sorted(
        [server_span.context.span_id, aleaf_server.context.span_id])
    for leaf_server in leaf_servers:
        assert _parent(leaf_server) in {c.context.span_id for c in leaf_clients}

    [producer] = found["front.events publish", SpanKind.PRODUCER]
    [consumer] = found["front.events process", SpanKind.CONSUMER]
    assert _parent(producer) == server_span.context.span_id
    assert _parent(consumer) == producer.context.span_id
    assert [link.context.span_id for link in consumer.links] == [producer.context.span_id]


def test_a_remote_error_marks_both_spans_with_the_exception_type(
        traced: tuple[Config, threading.Event], spans: InMemorySpanExporter) -> None:
    config, _ = traced
    with ClusterRpcClient(config=config) as client, pytest.raises(RemoteError, match="negative"):
        client.leaf.double(-1)
    assert _wait_for(lambda: len(spans.get_finished_spans()) >= 2)
    found = _by_name(spans.get_finished_spans())
    for kind in (SpanKind.CLIENT, SpanKind.SERVER):
        [span] = found["leaf/double", kind]
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes["error.type"] == "ValueError"
    [client_span] = found["leaf/double", SpanKind.CLIENT]
    [server_span] = found["leaf/double", SpanKind.SERVER]
    assert server_span.context.trace_id == client_span.context.trace_id  # no parent: the client's trace


def test_log_records_in_a_call_carry_the_trace_and_call_ids(
        traced: tuple[Config, threading.Event], spans: InMemorySpanExporter) -> None:
    config, _ = traced
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(LogContextFilter())
    logger = logging.getLogger("tests.leaf")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with ClusterRpcClient(config=config) as client:
            assert client.leaf.double(2) == 4
    finally:
        logger.removeHandler(handler)
    [record] = records
    assert _wait_for(lambda: len(spans.get_finished_spans()) >= 2)
    [server_span] = _by_name(spans.get_finished_spans())["leaf/double", SpanKind.SERVER]
    assert record.trace_id == format(server_span.context.trace_id, "032x")  # type: ignore[attr-defined]
    assert record.span_id == format(server_span.context.span_id, "016x")  # type: ignore[attr-defined]
    assert record.call_id.startswith("leaf.double.")  # type: ignore[attr-defined]


def test_each_timer_tick_starts_a_root_span(request: pytest.FixtureRequest,
                                            spans: InMemorySpanExporter) -> None:
    ticked = threading.Event()

    class Ticker:
        name = "ticker"
        leaf = RpcProxy("leaf")

        @timer(interval=0.01, eager=True)
        def tick(self) -> None:
            self.leaf.double(1)
            ticked.set()

    runner = ServiceRunner(Config(broker_url=f"memory://{request.node.name}", tracing=1, rpc_timeout=5))
    runner.add_service(Ticker)
    runner.add_service(Leaf)
    runner.start()
    try:
        assert ticked.wait(5)
    finally:
        runner.stop()
    found = _by_name(spans.get_finished_spans())
    tick = found["ticker/tick", SpanKind.INTERNAL][0]
    assert tick.parent is None
    [call] = [c for c in found["leaf/double", SpanKind.CLIENT] if c.context.trace_id == tick.context.trace_id]
    assert _parent(call) == tick.context.span_id


def test_the_filter_leaves_empty_ids_outside_a_call() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    assert LogContextFilter().filter(record)
    assert (record.trace_id, record.span_id, record.call_id) == ("", "", "")  # type: ignore[attr-defined]


def test_tracing_off_imports_no_opentelemetry(request: pytest.FixtureRequest) -> None:
    code = f"""
import sys
from amqprpc import ClusterRpcClient, Config, rpc, EventDispatcher
from amqprpc.runner import ServiceRunner

class S:
    name = "s"
    dispatch = EventDispatcher()
    @rpc
    def ping(self):
        self.dispatch("pinged", {{}})
        return "pong"

config = Config(broker_url="memory://{request.node.name}")
runner = ServiceRunner(config)
runner.add_service(S)
runner.start()
with ClusterRpcClient(config=config, timeout=5) as client:
    assert client.s.ping() == "pong"
runner.stop()
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_owner_reads_the_otel_variables() -> None:
    on = Config(broker_url="memory://owner", tracing=1)
    assert not tracing_enabled(Config(broker_url="memory://owner"), {})
    assert tracing_enabled(on, {})
    assert not tracing_enabled(on, {"OTEL_SDK_DISABLED": "true"})
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER must be one of otlp, console, none"):
        TracingOwner(on, env={"OTEL_TRACES_EXPORTER": "zipkin"})._exporter()
    assert TracingOwner(on, env={"OTEL_TRACES_EXPORTER": "none"})._exporter() is None
    assert type(TracingOwner(on, env={"OTEL_TRACES_EXPORTER": "console"})._exporter()).__name__ == \
        "ConsoleSpanExporter"
    assert "OTLP" in type(TracingOwner(on, env={})._exporter()).__name__


def test_the_config_key_reads_from_toml_and_the_environment(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "amqprpc.toml"  # type: ignore[operator]
    path.write_text("tracing = true\n")
    assert Config.load(path, env={}).tracing
    assert Config.load(env={"AMQPRPC_TRACING": "1"}).tracing
    assert not Config.load(env={}).tracing


def _wait_for(condition: object, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return bool(condition())  # type: ignore[operator]
