"""Build and parse the wire envelopes (requests, replies, events): pure functions, no I/O.

The formats are Nameko 2.x's, so the two interoperate; docs/protocol.md is the contract.

* request: routing key ``<service>.<method>`` on the RPC exchange, body
  ``{"args": [...], "kwargs": {...}}``, ``reply_to``, ``correlation_id``, ``expiration``
  and an absolute deadline header so that a worker never starts a call its caller gave up.
* reply: ``{"result": value, "error": null | {exc_type, exc_path, exc_args, value}}``.
* context: headers ``<prefix>.<key>`` (``nameko.call_id_stack``, ``nameko.user_id``, ...).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from .exceptions import MalformedRequest
from .serialization import Codec, DecodeLimits, decode
from .transport.base import Outgoing

DEADLINE_HEADER = "x-amqprpc-deadline"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
CALL_ID_STACK = "call_id_stack"
MAX_CALL_ID_STACK = 10

Headers = dict[str, Any]
Context = dict[str, Any]


def encode_context(context: Context, prefix: str) -> Headers:
    """Context values as ``<prefix>.<key>`` headers; ``None`` values are left out."""
    return {f"{prefix}.{key}": value for key, value in context.items() if value is not None}


def decode_context(headers: Headers | None, prefix: str) -> Context:
    """The ``<prefix>.<key>`` headers of a message as a context dict."""
    if not headers:
        return {}
    start = len(prefix) + 1
    marker = prefix + "."
    return {
        key[start:]: value
        for key, value in headers.items()
        # Nameko turns every header into context, so our deadline can come back prefixed.
        if key.startswith(marker) and key[start:] != DEADLINE_HEADER
    }


def child_call_stack(context: Context, call_id: str) -> list[str]:
    """The call-id stack a handler's own calls carry: the caller's, plus this call."""
    stack = context.get(CALL_ID_STACK) or []
    if not isinstance(stack, list):
        stack = [str(stack)]
    return [*stack, call_id][-MAX_CALL_ID_STACK:]


def build_request(
    service: str,
    method: str,
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
    *,
    codec: Codec,
    exchange: str,
    reply_to: str,
    correlation_id: str,
    timeout: float | None,
    context: Context | None = None,
    header_prefix: str = "nameko",
    now: float | None = None,
) -> Outgoing:
    """A request for ``service.method``; published ``mandatory`` so a missing service fails fast.

    Persistent (``delivery_mode`` 2, as Nameko's requests are): a call queued in a durable
    service queue survives a broker restart and runs once a worker is back.
    """
    headers = encode_context(context or {}, header_prefix)
    properties: dict[str, Any] = {
        "content_type": codec.content_type,
        "content_encoding": codec.content_encoding,
        "delivery_mode": 2,
        "correlation_id": correlation_id,
        "reply_to": reply_to,
        "application_headers": headers,
    }
    if timeout is not None:
        headers[DEADLINE_HEADER] = (time.time() if now is None else now) + timeout
        properties["expiration"] = str(max(1, int(timeout * 1000)))
    body = codec.dumps({"args": list(args), "kwargs": kwargs})
    return Outgoing(exchange, f"{service}.{method}", body, properties, mandatory=True)


@dataclass(slots=True)
class Request:
    """A decoded request as a worker sees it."""

    args: list[Any]
    kwargs: dict[str, Any]


def parse_request(body: bytes | str, content_type: str | None, limits: DecodeLimits | int) -> Request:
    """Decode a request body; anything but ``{"args": list, "kwargs": dict}`` is malformed.

    ``limits`` bounds what the body may decode to (a bare int: its size, default limits
    otherwise); past one, the MalformedRequest names the limit.
    """
    payload = decode(body, content_type, limits)
    if not isinstance(payload, dict):
        raise MalformedRequest("request body must be an object with `args` and `kwargs`")
    try:
        args, kwargs = payload["args"], payload["kwargs"]
    except KeyError:
        raise MalformedRequest("Message missing `args` or `kwargs`") from None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise MalformedRequest("`args` must be a list and `kwargs` an object")
    if not all(isinstance(key, str) for key in kwargs):
        raise MalformedRequest("`kwargs` keys must be strings")
    return Request(args, kwargs)


def deadline_of(headers: Headers | None) -> float | None:
    """The absolute deadline (unix time) a request carries, if any.

    Only amqprpc callers set it, so anything but a finite number is refused: ``True`` would
    read as 1970 and skip the call unanswered, and NaN would never expire.
    """
    if not headers or DEADLINE_HEADER not in headers:
        return None
    value = headers[DEADLINE_HEADER]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedRequest(f"{DEADLINE_HEADER} must be a finite unix time, got {value!r:.40}")
    return float(value)


def reply_route(reply_to: str, rpc_exchange: str) -> tuple[str, str]:
    """(exchange, routing key) for a reply: direct reply-to goes via the default exchange."""
    if reply_to.startswith(DIRECT_REPLY_TO):
        return "", reply_to
    return rpc_exchange, reply_to


def build_reply(
    result: Any,
    error: dict[str, Any] | None,
    *,
    codec: Codec,
    reply_to: str,
    correlation_id: str | None,
    rpc_exchange: str,
) -> Outgoing:
    """A reply in the request's codec; never ``mandatory`` (direct reply-to returns them all)."""
    exchange, routing_key = reply_route(reply_to, rpc_exchange)
    body = codec.dumps({"result": result, "error": error})
    properties = {
        "content_type": codec.content_type,
        "content_encoding": codec.content_encoding,
        "correlation_id": correlation_id,
    }
    return Outgoing(exchange, routing_key, body, properties)


def parse_reply(body: bytes | str, content_type: str | None,
                limits: DecodeLimits | int) -> tuple[Any, Any]:
    """(result, error) from a reply body; raises MalformedRequest when it is not a reply."""
    payload = decode(body, content_type, limits)
    if not isinstance(payload, dict) or ("result" not in payload and "error" not in payload):
        raise MalformedRequest("reply body must be an object with `result` and `error`")
    return payload.get("result"), payload.get("error")


def build_event(
    source: str,
    event_type: str,
    payload: Any,
    *,
    codec: Codec,
    context: Context | None = None,
    header_prefix: str = "nameko",
) -> Outgoing:
    """An event on ``<source>.events`` with routing key = event type; persistent."""
    properties = {
        "content_type": codec.content_type,
        "content_encoding": codec.content_encoding,
        "delivery_mode": 2,
        "application_headers": encode_context(context or {}, header_prefix),
    }
    return Outgoing(f"{source}.events", event_type, codec.dumps(payload), properties)
