"""Tracing across a real ``amqprpc run`` process, with the console exporter (docs/observability.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace

from amqprpc import ClusterRpcClient, Config

from ..unit.test_tracing import _wait_for, install_exporter
from .worker_processes import call_when_ready

pytestmark = pytest.mark.integration


def test_a_worker_process_prints_its_server_span_in_the_callers_trace(
        workers: Callable[..., Any], amqp_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    install_exporter()
    monkeypatch.setenv("AMQPRPC_TRACING", "1")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "echo-worker")
    worker = workers("--log-format", "json", "--log-level", "INFO")
    service = workers.service  # type: ignore[attr-defined]
    with trace.get_tracer("tests").start_as_current_span("root") as root, \
            ClusterRpcClient(config=Config(broker_url=amqp_uri, tracing=1)) as client:
        assert call_when_ready(client, service, "echo", "hi") == "hi"
    trace_id = f"0x{root.get_span_context().trace_id:032x}"
    assert _wait_for(lambda: f'"{service}/echo"' in worker.output(), timeout=10), worker.output()
    assert worker.stop() == 0
    spans = [json.loads(block) for block in re.findall(r"^\{\n.*?^\}$", worker.output(), re.M | re.S)]
    [server] = [s for s in spans if s["name"] == f"{service}/echo" and s["kind"] == "SpanKind.SERVER"
                and s["context"]["trace_id"] == trace_id]
    assert server["attributes"]["rpc.service"] == service
    assert server["resource"]["attributes"]["service.name"] == "echo-worker"
    logs = [json.loads(line) for line in worker.output().splitlines() if line.startswith('{"time"')]
    assert logs and all({"trace_id", "span_id", "call_id"} <= set(entry) for entry in logs)
