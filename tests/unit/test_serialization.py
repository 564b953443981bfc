"""The codecs' bounds (M2, M6): what a decoded body may become, and NaN/Infinity both ways."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import msgpack
import pytest

from amqprpc import Config, MalformedRequest
from amqprpc.exceptions import ConfigError
from amqprpc.messages import parse_request
from amqprpc.serialization import CODECS, JSON, MSGPACK, DecodeLimits, decode
from amqprpc.serialization import limit_of as limit_named

LIMITS = DecodeLimits()
MiB = 1024 * 1024


def refused(body: bytes, content_type: str = JSON, limits: DecodeLimits = LIMITS) -> MalformedRequest:
    with pytest.raises(MalformedRequest) as caught:
        decode(body, content_type, limits)
    return caught.value


def limit_of(body: bytes, content_type: str = JSON, limits: DecodeLimits = LIMITS) -> str:
    error = refused(body, content_type, limits)
    limit = limit_named(error)
    assert limit is not None and limit in str(error), error
    return limit


@pytest.mark.parametrize("value", [
    {"args": [1, "two", 3.5, None, True], "kwargs": {"nested": {"list": [[], {}]}}},
    {"emoji": "😀", "accents": "déjà vu", "big": 2**63, "small": -(2**63), "float": 1e300},
    ["a,b,c" * 1000],  # commas in strings are not items
    [[[[[[[[[[1]]]]]]]]]],
])
@pytest.mark.parametrize("content_type", [JSON, MSGPACK])
def test_ordinary_values_round_trip(value: Any, content_type: str) -> None:
    assert decode(CODECS[content_type].dumps(value), content_type, LIMITS) == value


def test_m6_depth_is_bounded_in_both_codecs() -> None:
    limits = LIMITS.replace(max_depth=10)
    assert decode(b"[" * 10 + b"]" * 10, JSON, limits)
    assert limit_of(b"[" * 11 + b"]" * 11, JSON, limits) == "decode_max_depth"
    assert limit_of(b'{"a":' * 11 + b"1" + b"}" * 11, JSON, limits) == "decode_max_depth"
    assert limit_of(b"[" * 100_000, JSON) == "decode_max_depth"  # unclosed: depth, not items
    assert decode(b"\x91" * 10 + b"\xc0", MSGPACK, limits)
    assert limit_of(b"\x91" * 11 + b"\xc0", MSGPACK, limits) == "decode_max_depth"
    assert limit_of(b"\x91" * 5000 + b"\xc0", MSGPACK) == "decode_max_depth"


def test_m6_nesting_past_the_interpreters_recursion_is_a_depth_refusal() -> None:
    # Too short for the item count to be scanned, too deep for the json module's own recursion.
    assert limit_of(b"[" * 3000 + b"]" * 3000, JSON) == "decode_max_depth"
    assert limit_of(b"[" * 3000, JSON) == "decode_max_depth"
    assert limit_of(b'{"a":' * 3000 + b"1" + b"}" * 3000, JSON) == "decode_max_depth"


def test_m6_brackets_inside_strings_cannot_hide_depth() -> None:
    limits = LIMITS.replace(max_depth=10, max_items=50)
    hidden = json.dumps(["]" * 40, [[[[[[[[[[[[1]]]]]]]]]]]], "[" * 40]).encode()
    assert limit_of(hidden, JSON, limits) == "decode_max_depth"


def test_m6_items_are_bounded_in_both_codecs() -> None:
    limits = LIMITS.replace(max_items=1000)
    # {"a": [1, 2]} is 5: two containers, one member, two elements
    assert decode(b'{"a":[1,2]}', JSON, LIMITS.replace(max_items=5))
    assert limit_of(b'{"a":[1,2]}', JSON, LIMITS.replace(max_items=4)) == "decode_max_items"
    assert limit_of(json.dumps([{}] * 600).encode(), JSON, limits) == "decode_max_items"
    assert limit_of(msgpack.packb([{}] * 600), MSGPACK, limits) == "decode_max_items"
    assert limit_of(msgpack.packb(list(range(1001))), MSGPACK, limits) == "decode_max_items"
    assert limit_of(msgpack.packb([[[]] * 40] * 40), MSGPACK, limits) == "decode_max_items"


def test_m6_strings_and_integers_are_bounded() -> None:
    limits = LIMITS.replace(max_string=100, max_digits=20)
    assert limit_of(json.dumps(["x" * 101]).encode(), JSON, limits) == "decode_max_string"
    assert limit_of(json.dumps({"x" * 101: 1}).encode(), JSON, limits) == "decode_max_string"
    assert limit_of(msgpack.packb(["x" * 101]), MSGPACK, limits) == "decode_max_string"
    assert limit_of(msgpack.packb([b"x" * 101]), MSGPACK, limits) == "decode_max_string"
    assert decode(b"[" + b"9" * 20 + b"]", JSON, limits)
    assert limit_of(b"[" + b"9" * 21 + b"]", JSON, limits) == "decode_max_digits"
    assert limit_of(b"[-" + b"9" * 21 + b"]", JSON, limits) == "decode_max_digits"
    assert limit_of(b"[" + b"9" * 5000 + b"]", JSON) == "decode_max_digits"  # past Python's own 4300
    assert decode(json.dumps(["9" * 50]).encode(), JSON, limits) == ["9" * 50]  # a string of digits


@pytest.mark.parametrize("body", [b'{"amount": 1e999}', b'{"amount": -1E+400}', b"[NaN]", b"[Infinity]",
                                  b"[-Infinity]", b"[1" + b"0" * 400 + b".0]"])
def test_m6_json_non_finite_numbers_are_refused(body: bytes) -> None:
    error = refused(body, JSON, LIMITS.replace(max_digits=1000))
    assert "NaN and Infinity" in str(error)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_m6_msgpack_non_finite_numbers_are_refused_both_ways(value: float) -> None:
    body = b"\x92\x01\xcb" + msgpack.packb(value)[1:]
    assert "NaN and Infinity" in str(refused(body, MSGPACK))
    float32 = b"\x91\xca" + (b"\x7f\xc0\x00\x00" if value != value else b"\x7f\x80\x00\x00")
    assert "NaN and Infinity" in str(refused(float32, MSGPACK))
    for codec in CODECS.values():
        with pytest.raises(ValueError, match="NaN or Infinity"):
            codec.dumps({"result": [1, {"x": value}]})


def test_m2_json_must_be_utf8() -> None:
    for body in ('{"a": 1}'.encode("utf-16"), '{"a": 1}'.encode("utf-16-le"), '{"a": 1}'.encode("utf-32"),
                 b"\xef\xbb\xbf{}", b'["\xed\xa0\x80"]', b'["\xff"]'):
        refused(body)
    assert "lone UTF-16 surrogate" in str(refused(b'["\\ud800"]'))
    assert "lone UTF-16 surrogate" in str(refused(b'{"\\udc00": 1}'))
    assert decode(b'["\\ud83d\\ude00"]', JSON, LIMITS) == ["😀"]  # a pair is a character


def test_m2_msgpack_extension_types_are_refused() -> None:
    assert "extension type 5" in str(refused(msgpack.packb(msgpack.ExtType(5, b"x")), MSGPACK))


def test_size_and_a_bare_int_limit() -> None:
    assert limit_of(b"[" + b"1," * 600 + b"1]", JSON, LIMITS.replace(max_size=1000)) == "max_message_size"
    assert decode(b"[1]", JSON, 10) == [1]  # an int is the size, the rest defaults
    assert limit_named(refused(b"[1,2,3]", JSON, 5)) == "max_message_size"


def test_a_request_over_a_limit_is_a_plain_malformed_request() -> None:
    """On the wire it must be MalformedRequest: Nameko callers know no other type."""
    with pytest.raises(MalformedRequest) as caught:
        parse_request(b'{"args": [' + b"[" * 100 + b"]" * 100 + b'], "kwargs": {}}', JSON, LIMITS)
    assert type(caught.value) is MalformedRequest
    assert "decode_max_depth" in str(caught.value)


def test_limits_come_from_config() -> None:
    config = Config.load(env={"AMQPRPC_DECODE_MAX_DEPTH": "5", "AMQPRPC_DECODE_MAX_ITEMS": "70",
                              "AMQPRPC_DECODE_MAX_STRING": "9", "AMQPRPC_DECODE_MAX_DIGITS": "3"})
    expected = DecodeLimits(max_size=MiB, max_depth=5, max_items=70, max_string=9, max_digits=3)
    assert DecodeLimits.from_config(config) == expected
    with pytest.raises(ConfigError, match="decode_max_items"):
        Config(decode_max_items=0)
    with pytest.raises(ValueError, match="max_depth"):
        DecodeLimits(max_depth=0)


@pytest.mark.parametrize(("content_type", "body"), [
    (JSON, b"[" + b"{}," * (MiB // 3 - 1) + b"{}]"),
    (MSGPACK, b"\xdd" + (MiB - 5).to_bytes(4, "big") + b"\x80" * (MiB - 5)),
    (MSGPACK, msgpack.packb([[[]] * 15] * (MiB // 17))),
])
def test_m6_a_hostile_mebibyte_stays_small(content_type: str, body: bytes) -> None:
    """Unbounded, these became 26 MB (JSON) and 76 MB (msgpack) of objects."""
    tracemalloc.start()
    try:
        refused(body[:MiB], content_type)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * MiB, peak


def test_m6_the_string_aware_count_is_linear_on_hostile_escapes() -> None:
    """Unterminated strings full of escaped quotes once cost a regex retry from every quote."""
    body = b"[" * 60_000 + b'"' + b'\\"' * 200_000
    refused(body)
    refused(b"[1," * 40_000 + b'"' + b'\\"' * 200_000 + b"\\")
