"""M2/M6 as properties: whatever bytes arrive, ``decode`` returns a value within its limits or
raises MalformedRequest, and nothing else (no other exception, no crash, no NaN)."""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amqprpc import MalformedRequest
from amqprpc.serialization import CODECS, JSON, MSGPACK, DecodeLimits, decode

SMALL = DecodeLimits(max_size=4096, max_depth=6, max_items=60, max_string=40, max_digits=12)
PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=60)
           | st.binary(max_size=60))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=8)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=8), max_leaves=80)


def within(value: Any, limits: DecodeLimits) -> None:
    """Assert the decoded ``value`` keeps every limit; returns its item count via the walk."""
    items = 0
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            depth += 1
            assert depth <= limits.max_depth
            items += 1 + len(node)
            children = list(node.values()) + list(node) if isinstance(node, dict) else node
            stack.extend((child, depth) for child in children)
        elif isinstance(node, float):
            assert math.isfinite(node)
        elif isinstance(node, int) and not isinstance(node, bool):
            assert len(str(abs(node))) <= max(limits.max_digits, 20)  # msgpack: 64-bit
        elif isinstance(node, str | bytes):
            assert len(node) <= limits.max_string
            if isinstance(node, str):
                node.encode("utf-8")  # no lone surrogate
    assert items <= limits.max_items


def decodes_within_or_refuses(body: bytes, content_type: str, limits: DecodeLimits = SMALL) -> None:
    try:
        value = decode(body, content_type, limits)
    except MalformedRequest:
        return
    within(value, limits)


@PROFILE
@given(st.binary(max_size=300))
def test_m2_random_bytes_never_escape_as_another_error(body: bytes) -> None:
    for content_type in (JSON, MSGPACK):
        decodes_within_or_refuses(body, content_type)


@PROFILE
@given(values)
def test_m6_any_value_packed_decodes_within_limits_or_is_refused(value: Any) -> None:
    try:
        decodes_within_or_refuses(msgpack.packb(value, use_bin_type=True), MSGPACK)
    except OverflowError:
        pass  # an integer msgpack has no room for
    text = json.dumps(value, default=lambda b: b.decode("latin-1"))  # NaN and all: hostile JSON
    decodes_within_or_refuses(text.encode("utf-8", "surrogatepass"), JSON)
    decodes_within_or_refuses(json.dumps(value, default=repr, ensure_ascii=True).encode(), JSON)


@PROFILE
@given(values, st.data())
def test_m2_corrupted_bodies_are_refused_or_within_limits(value: Any, data: st.DataObject) -> None:
    for content_type in (JSON, MSGPACK):
        try:
            body = bytearray(CODECS[content_type].dumps(value))
        except (ValueError, TypeError):
            continue  # NaN, bytes in JSON: the encoder refuses them, as it should
        if body:
            for _ in range(data.draw(st.integers(1, 4))):
                at = data.draw(st.integers(0, len(body) - 1))
                body[at] = data.draw(st.integers(0, 255))
        decodes_within_or_refuses(bytes(body), content_type)


@PROFILE
@given(st.integers(1, 3000), st.sampled_from([b"[", b"{\"a\":", b"\x91", b"\x81\xa1a", b"\xdc\x00\x01"]))
def test_m6_deep_nesting_is_refused_not_recursed(depth: int, opener: bytes) -> None:
    body = opener * depth + (b"]" * depth if opener == b"[" else b"")
    for content_type in (JSON, MSGPACK):
        decodes_within_or_refuses(body, content_type, DecodeLimits())


@PROFILE
@given(st.text(alphabet="0123456789eE+-.", min_size=1, max_size=400))
def test_m6_huge_numbers_are_finite_and_bounded_or_refused(number: str) -> None:
    decodes_within_or_refuses(f'{{"n": {number}}}'.encode(), JSON)
    decodes_within_or_refuses(f"[{number}]".encode(), JSON, DecodeLimits())


@PROFILE
@given(values)
def test_encoding_either_works_or_raises_a_clear_error(value: Any) -> None:
    for codec in CODECS.values():
        try:
            body = codec.dumps(value)
        except (ValueError, TypeError) as exc:
            assert any(reason in str(exc) for reason in ("NaN or Infinity", "serializable", "surrogate",
                                                          "64 bits")), exc
            continue
        decodes_within_or_refuses(body, codec.content_type, DecodeLimits())
