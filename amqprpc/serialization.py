"""Body codecs, chosen by AMQP content type.

Only JSON and msgpack are ever decoded. Any other content type (pickle, yaml, unknown)
is refused *before* its bytes are looked at, so a hostile payload is never evaluated.
JSON output matches what kombu (and so Nameko) writes for dates, decimals and UUIDs.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from .exceptions import MalformedRequest

JSON = "application/json"
MSGPACK = "application/x-msgpack"
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024


@dataclass(frozen=True)
class Codec:
    """One serializer: its content type, content encoding and the two functions."""

    name: str
    content_type: str
    content_encoding: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "__json__"):
        return value.__json__()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_json_encoder = json.JSONEncoder(default=_json_default, separators=(",", ":"), ensure_ascii=False)


def _json_dumps(value: Any) -> bytes:
    return _json_encoder.encode(value).encode("utf-8")


def _json_loads(body: bytes) -> Any:
    return json.loads(body)


def _msgpack_dumps(value: Any) -> bytes:
    return msgpack.packb(value, default=_json_default, use_bin_type=True)


def _msgpack_loads(body: bytes) -> Any:
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


CODECS: dict[str, Codec] = {
    JSON: Codec("json", JSON, "utf-8", _json_dumps, _json_loads),
    MSGPACK: Codec("msgpack", MSGPACK, "binary", _msgpack_dumps, _msgpack_loads),
}
_BY_NAME = {codec.name: codec for codec in CODECS.values()}


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


def decode(body: bytes | str, content_type: str | None, max_size: int) -> Any:
    """Decode a body after checking its content type and size; errors are MalformedRequest."""
    codec = codec_for(content_type)
    if isinstance(body, str):
        body = body.encode("utf-8")
    if len(body) > max_size:
        raise MalformedRequest(f"message of {len(body)} bytes exceeds the limit of {max_size} bytes")
    try:
        return codec.loads(body)
    except RecursionError:
        raise MalformedRequest("message is nested too deeply to decode") from None
    except Exception as exc:
        raise MalformedRequest(f"cannot decode {codec.name} body: {exc}") from None
