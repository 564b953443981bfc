"""One trace from an HTTP request through the bridge, two services and an event, on RabbitMQ.

The spans go to the SDK's in-memory exporter of this process (tests/unit/test_tracing.py
installs it); the bridge, the services and the broker hops are real.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.trace import SpanKind, StatusCode

from amqprpc import Config, EventDispatcher, RpcProxy, event_handler, rpc
from http_bridge import BridgeSettings, create_app
from http_bridge.auth import hash_key

from ..unit.test_tracing import _by_name, _parent, _wait_for, install_exporter

pytestmark = pytest.mark.integration

KEY = "ak_tracing-admin"


def make_services(prefix: str, handled: threading.Event) -> list[type]:
    class Front:
        name = f"{prefix}a"
        back = RpcProxy(f"{prefix}b")
        dispatch = EventDispatcher()

        @rpc(http=f"POST /{prefix}/work")
        def work(self, n: int) -> int:
            doubled = int(self.back.double(n))
            self.dispatch("worked", {"n": n})
            return doubled

        @rpc(http=f"POST /{prefix}/fail")
        def fail(self) -> int:
            return int(self.back.double(-1))

    class Back:
        name = f"{prefix}b"

        @rpc
        def double(self, n: int) -> int:
            if n < 0:
                raise ValueError("negative")
            return 2 * n

    class Listener:
        name = f"{prefix}c"

        @event_handler(f"{prefix}a", "worked")
        def on_worked(self, payload: dict[str, Any]) -> None:
            handled.set()

    return [Front, Back, Listener]


def test_http_request_rpc_nested_rpc_and_event_are_one_trace(
        runner_factory: Callable[..., Any], unique_name: Callable[[str], str], amqp_uri: str,
        tmp_path: Any) -> None:
    spans = install_exporter()
    spans.clear()
    prefix = unique_name("tr").replace("-", "").replace("_", "")[:20]
    handled = threading.Event()
    runner_factory(*make_services(prefix, handled), tracing=1, discovery_interval=0.2)
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[keys]]\nsha256 = "{hash_key(KEY)}"\nprincipal = "ops"\nroles = ["admin"]\n')
    config = Config(broker_url=amqp_uri, discovery_interval=0.2, rpc_timeout=5, tracing=1)
    incoming_trace = "0af7651916cd43dd8448eb211c80319c"
    answers: dict[str, Any] = {}

    async def main() -> None:
        app = create_app(config, settings=BridgeSettings(api_keys_file=str(keys)))
        async with TestClient(TestServer(app)) as client:
            deadline = time.monotonic() + 10
            while True:
                response = await client.post(f"/{prefix}/work", json={"n": 4}, headers={
                    "X-API-Key": KEY, "traceparent": f"00-{incoming_trace}-b7ad6b7169203331-01"})
                if response.status != 404 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)  # the route appears once the service is announced
            answers["work"] = (response.status, await response.json(), response.headers.get("traceparent"))
            response = await client.post(f"/{prefix}/fail", json={}, headers={"X-API-Key": KEY})
            answers["fail"] = response.status

    spans.clear()
    asyncio.run(asyncio.wait_for(main(), timeout=30))
    status, body, traceparent = answers["work"]
    assert (status, body) == (200, 8)
    assert traceparent is not None and traceparent.split("-")[1] == incoming_trace
    assert handled.wait(5)

    def mine() -> list[Any]:
        return [s for s in spans.get_finished_spans() if s.context.trace_id == int(incoming_trace, 16)]

    assert _wait_for(lambda: len(mine()) >= 8), [s.name for s in spans.get_finished_spans()]
    found = _by_name(tuple(mine()))
    # the 404s before the route appeared carried the same traceparent: the last one answered
    http = next(s for s in found["POST", SpanKind.SERVER]
            if s.attributes is not None and s.attributes["http.response.status_code"] == 200)
    assert http.attributes is not None and http.attributes["url.path"] == f"/{prefix}/work"
    assert _parent(http) == 0xb7ad6b7169203331  # the HTTP caller's span
    [a_client] = found[f"{prefix}a/work", SpanKind.CLIENT]
    [a_server] = found[f"{prefix}a/work", SpanKind.SERVER]
    [b_client] = found[f"{prefix}b/double", SpanKind.CLIENT]
    [b_server] = found[f"{prefix}b/double", SpanKind.SERVER]
    [producer] = found[f"{prefix}a.events publish", SpanKind.PRODUCER]
    [consumer] = found[f"{prefix}a.events process", SpanKind.CONSUMER]
    assert _parent(a_client) == http.context.span_id
    assert _parent(a_server) == a_client.context.span_id
    assert _parent(b_client) == a_server.context.span_id
    assert _parent(b_server) == b_client.context.span_id
    assert _parent(producer) == a_server.context.span_id
    assert _parent(consumer) == producer.context.span_id
    assert [link.context.span_id for link in consumer.links] == [producer.context.span_id]
    assert a_server.attributes is not None and a_server.attributes["messaging.system"] == "rabbitmq"

    assert answers["fail"] == 500
    failed = [s for s in spans.get_finished_spans()
              if s.name == f"{prefix}b/double" and s.status.status_code is StatusCode.ERROR]
    assert {s.kind for s in failed} == {SpanKind.CLIENT, SpanKind.SERVER}
    assert all(s.attributes is not None and s.attributes["error.type"] == "ValueError" for s in failed)
