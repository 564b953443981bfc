"""Body codecs, chosen by AMQP content type, and the bounds on what a decoded body may become.

Only JSON and msgpack are ever decoded. Any other content type (pickle, yaml, unknown)
is refused *before* its bytes are looked at, so a hostile payload is never evaluated.
JSON output matches what kombu (and so Nameko) writes for dates, decimals and UUIDs.

Bounding a body's size is not enough: 1 MiB of ``[{},{},...]`` decodes to ~26 MB of
objects, 1 MiB of msgpack empty maps to ~76 MB. ``DecodeLimits`` bounds depth, the number
of items, string length and integer size, so a decoded message stays within about
``max_items`` x 72 bytes plus its body. The checks that run on every message are C-level
counts over the raw bytes (``bytes.count``, ``translate``, ``in``); the Python-level walk
of the decoded value runs only when those counts cannot rule a limit out (a large or
deeply bracketed body, a long digit run, a big exponent, a NaN bit pattern).

Non-finite numbers (NaN, ±Infinity, ``1e999``) are refused both ways: JSON has no such
numbers and the value would travel as an invalid message.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import gc
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from .exceptions import MalformedRequest

JSON = "application/json"
MSGPACK = "application/x-msgpack"
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What one decoded message may become; config keys in brackets (docs/configuration.md).

    * ``max_size`` (``max_message_size``): bytes of the body, checked before decoding.
    * ``max_depth`` (``decode_max_depth``): nesting of arrays and objects (``[[1]]`` is 2).
    * ``max_items`` (``decode_max_items``): arrays and objects plus their elements and
      members, in the whole message (``{"a": [1, 2]}`` is 5); it also bounds any one container.
    * ``max_string`` (``decode_max_string``): characters of one JSON string (bytes of a
      msgpack str or bin).
    * ``max_digits`` (``decode_max_digits``): digits of one integer (msgpack's are 64-bit).
    """

    max_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_depth: int = 64
    max_items: int = 100_000
    max_string: int = DEFAULT_MAX_MESSAGE_SIZE
    max_digits: int = 100

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DecodeLimits.{name} must be a positive integer, got {value!r}")

    def replace(self, **changes: int) -> DecodeLimits:
        """A copy with some limits changed."""
        return replace(self, **changes)

    @classmethod
    def from_config(cls, config: Any) -> DecodeLimits:
        """The limits a ``Config`` sets: ``max_message_size`` and the ``decode_max_*`` keys.

        Read by name (config and serialization import neither other); the Config has
        checked the values already; owners build it once and reuse it per message.
        """
        limits = object.__new__(cls)
        for name, value in (("max_size", config.max_message_size), ("max_depth", config.decode_max_depth),
                            ("max_items", config.decode_max_items), ("max_string", config.decode_max_string),
                            ("max_digits", config.decode_max_digits)):
            object.__setattr__(limits, name, value)
        return limits

    def decode(self, body: bytes | str, content_type: str | None) -> Any:
        """``decode`` within these limits (for code that sees only the public API)."""
        return decode(body, content_type, self)


def limit_exceeded(limit: str, message: str) -> MalformedRequest:
    """The error for a body past a limit: ``limit`` names the config key that bounds it.

    A plain ``MalformedRequest`` (the type every caller, Nameko's too, rebuilds, and the
    name dead letters record), with the key also in ``.limit`` for the bridge's status.
    """
    error = MalformedRequest(f"{message} (limit: {limit})")
    setattr(error, "limit", limit)  # noqa: B010 -- not a declared attribute of the class
    return error


def limit_of(error: BaseException) -> str | None:
    """The config key a ``limit_exceeded`` error names, else None."""
    return getattr(error, "limit", None)


@dataclass(frozen=True)
class Codec:
    """One serializer: its content type, content encoding and the two functions."""

    name: str
    content_type: str
    content_encoding: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes, DecodeLimits], Any]


# ---------------------------------------------------------------- encoding


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "__json__"):
        return value.__json__()
    return _contract_value(value)


def _contract_value(value: Any) -> Any:
    """Values of the types method signatures may name (docs/contracts.md): pydantic models by
    their own JSON dump, dataclass instances as dicts, enum members by value."""
    if hasattr(value, "model_dump") and hasattr(type(value), "model_fields"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_json_encoder = json.JSONEncoder(default=_json_default, separators=(",", ":"), ensure_ascii=False,
                                 allow_nan=False)
_NONFINITE = "NaN and Infinity are not numbers JSON or msgpack messages may carry; send null or a string"


def _json_dumps(value: Any) -> bytes:
    try:
        return _json_encoder.encode(value).encode("utf-8")
    except ValueError as exc:
        if str(exc).startswith("Out of range float"):
            raise ValueError(f"cannot encode a float that is NaN or Infinity: {_NONFINITE}") from None
        raise


def _msgpack_dumps(value: Any) -> bytes:
    try:
        body: bytes = msgpack.packb(value, default=_json_default, use_bin_type=True)
    except OverflowError:
        raise ValueError("cannot encode an integer of more than 64 bits in msgpack; send it as a "
                         "string, or use JSON") from None
    if _maybe_nonfinite_msgpack(body):  # C-level search; the walk only confirms a hit
        decoded = msgpack.unpackb(body, raw=False, strict_map_key=False)
        try:
            _check_tree(decoded, DecodeLimits(max_depth=1 << 30), _scalar_check(floats=True))
        except MalformedRequest:
            raise ValueError(f"cannot encode a float that is NaN or Infinity: {_NONFINITE}") from None
    return body


# ---------------------------------------------------------------- JSON decoding


def _refuse_constant(name: str) -> Any:
    raise MalformedRequest(f"{name} is not a JSON number: {_NONFINITE}")


_json_decoder = json.JSONDecoder(parse_constant=_refuse_constant)
# A string, or an unterminated one up to the end: possessive, so a hostile `"\"\"\"...`
# is one linear match, never a retry from every quote (quadratic).
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# One pass maps a body to its shape: digits and + as 0, e/E as e, [ and { as [, the rest
# blank. "1E+400" becomes "0e0000". The checks on the shape then use ``find`` (memchr)
# where they can, which is many times faster than ``count`` or a multi-byte search.
_SHAPE = bytes(ord("0") if chr(b).isdigit() or b == ord("+") else ord("e") if b in b"eE" else
               ord("[") if b in b"[{" else ord(" ") for b in range(256))
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b"[{,")
_FLOAT_MAX_DIGITS = 309  # a longer digit run can overflow to infinity


def _json_loads(body: bytes, limits: DecodeLimits) -> Any:
    try:
        text = body.decode("utf-8")  # strictly: no UTF-16/32, no encoded lone surrogates
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"JSON body is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    # Upper bounds from C passes (strings' brackets and commas count too): items are at
    # most 2 x opens + commas, depth at most opens. Every open has its close, so that
    # bound is at most the body's length: a body no longer than max_items needs no count.
    if len(body) > limits.max_items:
        marks = body.translate(None, _NOT_STRUCTURE)
        if 2 * (marks.count(b"[") + marks.count(b"{")) + marks.count(b",") > limits.max_items:
            _count_json_items(body, limits)
    shape = body.translate(_SHAPE)
    deep = _occurs_more_than(shape, b"[", limits.max_depth)
    numbers = b"0" in shape and (b"0" * min(limits.max_digits + 1, _FLOAT_MAX_DIGITS) in shape
                                 or b"e000" in shape)
    surrogates = b"\\" in body and _SURROGATE_ESCAPE.search(body) is not None
    strings = len(body) > limits.max_string + 2
    try:
        value = _json_decoder.decode(text)
    except ValueError as exc:  # Python's own bound (int_max_str_digits) on a huge integer
        if "integer string conversion" not in str(exc):
            raise
        raise limit_exceeded("decode_max_digits",
                                  f"an integer has more than {limits.max_digits} digits") from None
    if numbers or surrogates or strings:
        _check_tree(value, limits, _scalar_check(limits, strings=strings, numbers=numbers,
                                                 surrogates=surrogates))
    elif deep:
        _check_depth(value, limits)
    return value


def _occurs_more_than(data: bytes, byte: bytes, limit: int) -> bool:
    """``data.count(byte) > limit``, by stepping ``find`` (memchr) on long data: a long body
    with few brackets is passed over at memory speed, one with many stops at ``limit``."""
    if len(data) <= 16384:  # below this, one count is cheaper than up to limit + 1 finds
        return data.count(byte) > limit
    at = -1
    for _ in range(limit + 1):
        at = data.find(byte, at + 1)
        if at < 0:
            return False
    return True


def _count_json_items(body: bytes, limits: DecodeLimits) -> None:
    """Depth, then item count, of a JSON text with its strings left out (bodies near the limit).

    Depth first: ``[[[[...`` is refused as too deep (or unbalanced), not as too many items.
    """
    bare = _JSON_STRING.sub(b"", body) if b'"' in body else body
    brackets = bare.translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(limits.max_depth):  # each pass takes off the innermost level
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):
            break
        brackets = inner
    if brackets:
        raise limit_exceeded("decode_max_depth", f"the message is nested more than "
                                  f"{limits.max_depth} levels deep (or its brackets do not match)")
    opens = bare.count(b"[") + bare.count(b"{")
    items = 2 * opens + bare.count(b",") - bare.count(b"[]") - bare.count(b"{}")
    if items > limits.max_items:
        raise limit_exceeded("decode_max_items", f"the message has about {items} items, "
                                  f"more than {limits.max_items}")


_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


# ---------------------------------------------------------------- msgpack decoding

_CONTAINER_BYTES = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
_NOT_CONTAINER_BYTES = bytes(b for b in range(256) if b not in _CONTAINER_BYTES)
# float 64 / float 32 markers (f) followed by an all-ones exponent's first byte (x): NaN, ±Infinity
_FLOAT_SHAPE = bytes(ord("f") if b in (0xCA, 0xCB) else ord("x") if b in (0x7F, 0xFF) else ord(" ")
                     for b in range(256))
_MSGPACK_LIMIT = re.compile(r"exceeds max_(str|bin|array|map|ext)_len")
_MSGPACK_LIMIT_KEYS = {"str": "decode_max_string", "bin": "decode_max_string", "ext": "decode_max_string",
                       "array": "decode_max_items", "map": "decode_max_items"}


def _maybe_nonfinite_msgpack(body: bytes) -> bool:
    return (b"\xcb" in body or b"\xca" in body) and b"fx" in body.translate(_FLOAT_SHAPE)


class _ItemCounter:
    """msgpack hooks that count containers and their items as they complete."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.left = self.limit = limit

    def __call__(self, container: Any) -> Any:
        self.left -= len(container) + 1
        if self.left < 0:
            raise limit_exceeded("decode_max_items", f"the message has more than {self.limit} items")
        return container


def _refuse_ext(code: int, data: bytes) -> Any:
    raise MalformedRequest(f"msgpack extension type {code} is not accepted")


def _msgpack_loads(body: bytes, limits: DecodeLimits) -> Any:
    options: dict[str, Any] = {}
    size = len(body)
    if size > limits.max_string:  # msgpack's own max_*_len default to the body's length
        options.update(max_str_len=limits.max_string, max_bin_len=limits.max_string,
                       max_ext_len=limits.max_string)
    if size > limits.max_items:
        options.update(max_array_len=limits.max_items, max_map_len=limits.max_items)
    if 2 * size > limits.max_items:  # every item takes at least half a byte
        counter = _ItemCounter(limits.max_items)
        options.update(list_hook=counter, object_hook=counter)
    try:
        value = msgpack.unpackb(  # timestamps as datetimes: every value is a dict, list or scalar
            body, raw=False, strict_map_key=False, ext_hook=_refuse_ext, timestamp=3, **options)
    except msgpack.StackError:
        raise limit_exceeded("decode_max_depth", "the message is nested too deeply") from None
    except MalformedRequest:
        raise
    except ValueError as exc:
        match = _MSGPACK_LIMIT.search(str(exc))
        if match is None:
            raise
        raise limit_exceeded(_MSGPACK_LIMIT_KEYS[match.group(1)], str(exc)) from None
    floats = _maybe_nonfinite_msgpack(body)
    deep = len(body) > limits.max_depth and \
        len(body.translate(None, _NOT_CONTAINER_BYTES)) > limits.max_depth
    if floats:
        _check_tree(value, limits, _scalar_check(floats=True))
    elif deep:
        _check_depth(value, limits)
    return value


# ---------------------------------------------------------------- the walk

_CONTAINERS = (dict, list)


def _check_depth(value: Any, limits: DecodeLimits) -> None:
    """Depth alone, at C speed: each ``gc.get_referents`` call takes one level down at once.

    Decoded values hold only dicts, lists and scalars (str, int, float, bool, None, bytes,
    datetime), and scalars have no referents, so the levels run out after the deepest one.
    """
    level = [value]
    for _ in range(limits.max_depth):
        level = gc.get_referents(*level)
        if not level:
            return
    if any(type(node) in _CONTAINERS for node in level):
        raise limit_exceeded("decode_max_depth", f"the message is nested more than "
                                  f"{limits.max_depth} levels deep")


def _check_tree(value: Any, limits: DecodeLimits, check: Callable[[Any], None] | None = None) -> None:
    """Depth and ``check`` on every scalar and key, level by level (no recursion): Python speed."""
    if type(value) not in _CONTAINERS:
        if check is not None:
            check(value)
        return
    level = [value]
    depth = 0
    while level:
        depth += 1
        if depth > limits.max_depth:
            raise limit_exceeded("decode_max_depth", f"the message is nested more than "
                                      f"{limits.max_depth} levels deep")
        following = []
        for node in level:
            if type(node) is dict:
                if check is not None:
                    for key in node:
                        check(key)
                children = node.values()
            else:
                children = node
            for child in children:
                if type(child) in _CONTAINERS:
                    following.append(child)
                elif check is not None:
                    check(child)
        level = following


def _scalar_check(limits: DecodeLimits | None = None, *, strings: bool = False, numbers: bool = False,
                  surrogates: bool = False, floats: bool = False) -> Callable[[Any], None]:
    """A check of one scalar against the limits the C-level scan could not rule out."""
    max_string = limits.max_string if limits is not None else 0
    max_digits = limits.max_digits if limits is not None else 0
    too_big = 10 ** max_digits
    floats = floats or numbers

    def check(value: Any) -> None:
        kind = type(value)
        if kind is str:
            if strings and len(value) > max_string:
                raise limit_exceeded("decode_max_string", f"a string of {len(value)} characters "
                                          f"is longer than {max_string}")
            if surrogates and not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise MalformedRequest("a JSON string holds a lone UTF-16 surrogate "
                                           f"(\\u{ord(value[_surrogate_at(value)]):04x})") from None
        elif kind is int:
            if numbers and not -too_big < value < too_big:
                raise limit_exceeded("decode_max_digits",
                                          f"an integer has more than {max_digits} digits")
        elif kind is float and floats and not math.isfinite(value):
            raise MalformedRequest(f"{value} is not a finite number: {_NONFINITE}")

    return check


def _surrogate_at(value: str) -> int:
    return next(i for i, char in enumerate(value) if 0xD800 <= ord(char) <= 0xDFFF)


# ---------------------------------------------------------------- the registry

CODECS: dict[str, Codec] = {
    JSON: Codec("json", JSON, "utf-8", _json_dumps, _json_loads),
    MSGPACK: Codec("msgpack", MSGPACK, "binary", _msgpack_dumps, _msgpack_loads),
}
_BY_NAME = {codec.name: codec for codec in CODECS.values()}
DEFAULT_LIMITS = DecodeLimits()


def codec_named(name: str) -> Codec:
    """The codec for a serializer name from config (``json`` or ``msgpack``)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown serializer {name!r}: choose one of {sorted(_BY_NAME)}"
        ) from None


def codec_for(content_type: str | None) -> Codec:
    """The codec for a message's content type; raises MalformedRequest for any other."""
    codec = CODECS.get(content_type or JSON)
    if codec is None:
        raise MalformedRequest(
            f"content type {content_type!r} is not accepted (accepted: {', '.join(CODECS)})"
        )
    return codec


def decode(body: bytes | str, content_type: str | None, limits: DecodeLimits | int) -> Any:
    """Decode a body after checking its content type and size; errors are MalformedRequest.

    ``limits`` as a bare int is the body size, with the default limits for the rest.
    """
    codec = codec_for(content_type)
    if not isinstance(limits, DecodeLimits):
        limits = DEFAULT_LIMITS.replace(max_size=limits)
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")  # a lone surrogate then fails as bad UTF-8
    if len(body) > limits.max_size:
        raise limit_exceeded("max_message_size", f"message of {len(body)} bytes exceeds the "
                                  f"limit of {limits.max_size} bytes")
    try:
        return codec.loads(body, limits)
    except MalformedRequest:
        raise
    except RecursionError:
        raise limit_exceeded("decode_max_depth", "message is nested too deeply to decode") from None
    except Exception as exc:
        raise MalformedRequest(f"cannot decode {codec.name} body: {exc}") from None
