"""A Nameko 2.14 service between two traced amqprpc hops: it answers, and both hops are one trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from amqprpc import ClusterRpcClient, Config, rpc
from amqprpc.runner import service_container
from amqprpc.testing.broker import delete_queues, queues_declared_by

from ..unit.test_tracing import _by_name, _parent, _wait_for, install_exporter
from .conftest import NamekoProcess, Names


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = install_exporter()
    exporter.clear()
    yield exporter


def test_amqprpc_then_nameko_then_amqprpc_is_one_trace(
        nameko_service: NamekoProcess, names: Names, amqp_uri: str, spans: InMemorySpanExporter) -> None:
    class Adder:
        name = names.amqprpc

        @rpc
        def add(self, a: int, b: int) -> int:
            return a + b

    config = Config(broker_url=amqp_uri, tracing=1, rpc_timeout=10)
    container = service_container(Adder, config)
    container.start()
    try:
        with trace.get_tracer("tests").start_as_current_span("root") as root, \
                ClusterRpcClient(config=config, direct_reply_to=False) as client:
            assert getattr(client, names.nameko).relay("add", 1, 2) == 3  # Nameko calls us back
    finally:
        container.stop(grace=5)
        delete_queues(amqp_uri, queues_declared_by(container))
    assert _wait_for(lambda: len(spans.get_finished_spans()) >= 3)
    found = _by_name(spans.get_finished_spans())
    [to_nameko] = found[f"{names.nameko}/relay", SpanKind.CLIENT]
    [after_nameko] = found[f"{names.amqprpc}/add", SpanKind.SERVER]
    assert to_nameko.context.trace_id == after_nameko.context.trace_id == root.get_span_context().trace_id
    assert _parent(after_nameko) == to_nameko.context.span_id  # Nameko makes no span of its own
