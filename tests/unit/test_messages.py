"""The wire envelopes are the contract with Nameko: pin them."""

import json

import msgpack
import pytest

from amqprpc.exceptions import MalformedRequest
from amqprpc.messages import (
    DEADLINE_HEADER,
    build_event,
    build_reply,
    build_request,
    child_call_stack,
    deadline_of,
    decode_context,
    encode_context,
    parse_reply,
    parse_request,
    reply_route,
)
from amqprpc.serialization import JSON, MSGPACK, codec_for


def test_request_envelope_matches_nameko():
    message = build_request(
        "orders", "create", [1], {"item": "x"}, codec=codec_for(JSON), exchange="nameko-rpc",
        reply_to="amq.rabbitmq.reply-to", correlation_id="cid", timeout=2.5,
        context={"user_id": "u1", "language": None}, now=1000.0,
    )
    assert (message.exchange, message.routing_key, message.mandatory) == ("nameko-rpc", "orders.create", True)
    assert json.loads(message.body) == {"args": [1], "kwargs": {"item": "x"}}
    props = message.properties
    assert props["content_type"] == "application/json"
    assert props["content_encoding"] == "utf-8"
    assert props["correlation_id"] == "cid"
    assert props["reply_to"] == "amq.rabbitmq.reply-to"
    assert props["expiration"] == "2500"
    assert props["delivery_mode"] == 2  # persistent, as Nameko's Publisher sends requests
    assert props["application_headers"] == {"nameko.user_id": "u1", DEADLINE_HEADER: 1002.5}


def test_request_without_timeout_has_no_expiration():
    message = build_request("a", "b", [], {}, codec=codec_for(JSON), exchange="x", reply_to="r",
                            correlation_id="c", timeout=None)
    assert "expiration" not in message.properties
    assert DEADLINE_HEADER not in message.properties["application_headers"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{", "cannot decode"),
        (b"[]", "must be an object"),
        (b'{"args": []}', "missing `args` or `kwargs`"),
        (b'{"args": {}, "kwargs": {}}', "must be a list"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    ],
)
def test_malformed_requests_name_the_problem(body, problem):
    with pytest.raises(MalformedRequest, match=problem):
        parse_request(body, JSON, 10_000_000)


def test_size_is_checked_before_decoding():
    with pytest.raises(MalformedRequest, match="exceeds the limit of 10 bytes"):
        parse_request(b'{"args": [], "kwargs": {}}', JSON, 10)


@pytest.mark.parametrize(
    "content_type", ["application/x-python-serialize", "application/x-yaml", "text/plain"]
)
def test_forbidden_content_types_are_refused_without_decoding(content_type):
    with pytest.raises(MalformedRequest, match="not accepted"):
        parse_request(b"\x80\x04anything", content_type, 1000)


def test_msgpack_round_trip():
    codec = codec_for(MSGPACK)
    body = msgpack.packb({"args": [1, "x"], "kwargs": {"k": b"bytes"}})
    request = parse_request(body, MSGPACK, 1000)
    assert request.args == [1, "x"] and request.kwargs == {"k": b"bytes"}
    assert codec.content_encoding == "binary"


def test_reply_envelope_and_routes():
    reply = build_reply(5, None, codec=codec_for(JSON), reply_to="amq.rabbitmq.reply-to.abc",
                        correlation_id="c", rpc_exchange="nameko-rpc")
    assert (reply.exchange, reply.routing_key, reply.mandatory) == ("", "amq.rabbitmq.reply-to.abc", False)
    assert json.loads(reply.body) == {"result": 5, "error": None}
    assert reply_route("0b4f-uuid", "nameko-rpc") == ("nameko-rpc", "0b4f-uuid")
    assert parse_reply(reply.body, JSON, 100) == (5, None)
    with pytest.raises(MalformedRequest):
        parse_reply(b'{"nothing": 1}', JSON, 100)


def test_context_headers_round_trip_with_prefix():
    headers = encode_context({"user_id": "u", "call_id_stack": ["a.b.1"]}, "nameko")
    assert headers == {"nameko.user_id": "u", "nameko.call_id_stack": ["a.b.1"]}
    assert decode_context({**headers, "other": 1, DEADLINE_HEADER: 2}, "nameko") == {
        "user_id": "u", "call_id_stack": ["a.b.1"]}


def test_a_deadline_echoed_back_as_context_by_nameko_is_dropped():
    assert decode_context({f"nameko.{DEADLINE_HEADER}": 1.0, "nameko.user_id": "u"}, "nameko") == {
        "user_id": "u"}


def test_call_id_stack_is_bounded():
    stack = child_call_stack({"call_id_stack": [str(i) for i in range(20)]}, "me")
    assert len(stack) == 10 and stack[-1] == "me"


def test_event_envelope_is_persistent_on_source_exchange():
    event = build_event("orders", "order_created", {"id": 1}, codec=codec_for(JSON),
                        context={"user_id": "u"})
    assert (event.exchange, event.routing_key) == ("orders.events", "order_created")
    assert event.properties["delivery_mode"] == 2
    assert event.properties["application_headers"] == {"nameko.user_id": "u"}


def test_deadline_header_is_a_finite_number_or_malformed():
    assert deadline_of({}) is None and deadline_of(None) is None
    assert deadline_of({DEADLINE_HEADER: 1700000000}) == 1700000000.0
    assert deadline_of({DEADLINE_HEADER: 1700000000.5}) == 1700000000.5
    # True would read as 1970 (the call skipped, its caller left waiting); NaN never expires.
    for bad in (True, False, float("nan"), float("inf"), "1700000000", None, [1]):
        with pytest.raises(MalformedRequest, match="finite unix time"):
            deadline_of({DEADLINE_HEADER: bad})

