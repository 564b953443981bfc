"""M2/M6 on a real worker: a request past a decode limit, or with NaN, is answered
``MalformedRequest`` naming the problem, acked (never requeued), and the worker serves on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from amqprpc import MalformedRequest, rpc
from amqprpc.testing.pytest import with_name

from .test_rpc import _RawCaller

pytestmark = pytest.mark.integration


class Echo:
    name = "echo"

    @rpc
    def echo(self, value: Any) -> Any:
        return value

    @rpc
    def nan(self) -> float:
        return float("nan")


@pytest.fixture
def echo(container_factory, unique_name):
    return container_factory(with_name(Echo, unique_name("limits")), decode_max_depth=8,
                             decode_max_items=200, decode_max_string=100, decode_max_digits=12)


def body(value: str) -> bytes:
    return ('{"args": [' + value + '], "kwargs": {}}').encode()


def test_m6_requests_past_a_limit_are_malformed_and_the_worker_serves_on(echo, amqp_uri, rpc_client):
    name = echo.service_name
    raw = _RawCaller(amqp_uri)
    try:
        cases = {
            "decode_max_depth": body("[" * 9 + "]" * 9),
            "decode_max_items": body(json.dumps([{}] * 150)),
            "decode_max_string": body(json.dumps("x" * 101)),
            "decode_max_digits": body("1" * 13),
            "NaN and Infinity": body("1e999"),
        }
        for problem, request in cases.items():
            reply = raw.request(f"{name}.echo", request)
            assert reply["result"] is None
            assert reply["error"]["exc_type"] == "MalformedRequest", reply
            assert problem in reply["error"]["value"]

        queue = raw.channel.queue_declare(f"rpc-{name}", passive=True)
        assert queue.message_count == 0  # every refused request was acked, none requeued
        assert getattr(rpc_client, name).echo([[1, 2], {"a": "b"}]) == [[1, 2], {"a": "b"}]
    finally:
        raw.close()


def test_m6_a_nan_result_is_a_clear_error_not_an_invalid_message(echo, rpc_client):
    with pytest.raises(Exception) as caught:
        getattr(rpc_client, echo.service_name).nan()
    assert "NaN or Infinity" in str(caught.value)
    assert not isinstance(caught.value, MalformedRequest)
