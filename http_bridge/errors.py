"""Every error the bridge answers, mapped to an HTTP status in one place.

One JSON shape for every error::

    {"error": {"status": 404, "code": "method_not_found", "message": "...", "id": "<request id>"}}

The ``id`` is also the ``X-Request-Id`` response header and appears in the bridge's log
line for the request, so an operator can find a 500's cause; the body never carries a
traceback or a remote error's text unless the error is one the service declared.

Remote errors (a handler raised): the service's own ``http_errors`` table (announced in its
descriptor) is looked up first, then the bridge's ``error_statuses`` setting; a mapped
error answers that status with the remote message. An unmapped error the method declares
in ``expected_exceptions`` answers ``expected_error_status`` (422 by default) with its
message: it is part of the method's contract, so the client caused it. Anything else is a
500 with a generic message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

from amqprpc import (
    BrokerError,
    CallCancelled,
    CircuitOpen,
    ConnectionLost,
    IdentityRefused,
    IncorrectSignature,
    MalformedRequest,
    MethodNotFound,
    RemoteError,
    RpcTimeout,
    ServiceOverloaded,
    ServiceUnavailable,
    UnknownService,
    ValidationError,
)


@dataclass
class ApiError(Exception):
    """An error answer the bridge decided on: status, a stable code, a message for the client."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    details: list[dict[str, str]] | None = None
    remote_type: str | None = None  # the handler's exception name, when the answer may show it

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


INVALID_CREDENTIALS = "the credentials are invalid or expired"


class CredentialsRefused(ApiError):
    """Credentials that are present but do not verify: one fixed 401 for every reason.

    ``reason`` (why PyJWT or the key store refused them) is for the bridge's log only:
    telling a client "bad signature" from "expired" from "wrong audience" helps whoever
    is probing the bridge's keys and claims more than the client that holds a good token.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(401, "unauthorized", INVALID_CREDENTIALS,
                         headers={"WWW-Authenticate": 'Bearer realm="amqprpc", error="invalid_token"'})
        self.reason = reason


# (exception type, status, code, message shown to the client or None to use str(exc)).
# Order matters: the first matching type wins. Tested for completeness in test_errors.py.
ERROR_TABLE: tuple[tuple[type[BaseException], int, str, str | None], ...] = (
    (MethodNotFound, 404, "method_not_found", None),
    (IncorrectSignature, 400, "incorrect_signature", None),
    (MalformedRequest, 400, "malformed_request", None),
    # The service requires a signed identity and refused the bridge's: its identity key is
    # missing or another (docs/production.md). The bridge's fault, not the client's.
    (IdentityRefused, 502, "identity_refused", "the service refused the bridge's signed identity"),
    (UnknownService, 503, "service_unavailable", "no running instance of the service"),
    (CircuitOpen, 503, "circuit_open", "the service is failing; calls to it are refused for now"),
    (ServiceUnavailable, 503, "service_unavailable", "no running instance of the service"),
    (ConnectionLost, 503, "connection_lost",
     "the bridge lost its broker connection during the call; it may or may not have run"),
    (ServiceOverloaded, 503, "service_overloaded",
     "the service is over its load bounds; the call was not run, try again later"),
    (BrokerError, 503, "broker_unavailable", "the message broker is not reachable"),
    (RpcTimeout, 504, "deadline_exceeded", "the service did not answer before the deadline"),
    # Raised in handlers only; a bridge whose client left is cancelled, and answers no one.
    (CallCancelled, 503, "cancelled", "the call was cancelled"),
)

# Answers a client may simply repeat after a moment: they carry Retry-After (seconds).
RETRY_AFTER = {"service_overloaded": "1"}

INTERNAL = (500, "internal_error", "internal error; quote the error id when reporting it")


@dataclass(frozen=True)
class ErrorContext:
    """What the mapping needs to know about the route whose call failed."""

    service_errors: Mapping[str, int] = field(default_factory=dict)  # from the descriptor
    bridge_errors: Mapping[str, int] = field(default_factory=dict)  # from the settings
    expected: tuple[str, ...] = ()  # exception names the method declares as expected
    expected_status: int = 422
    field_source: Mapping[str, str] = field(default_factory=dict)  # parameter -> path/query/body
    default_source: str = "body"  # of a parameter not in ``field_source``


def map_error(exc: BaseException, context: ErrorContext | None = None) -> ApiError:
    """The answer for an exception raised by a call (or by the bridge itself)."""
    if isinstance(exc, ApiError):
        return exc
    context = context or ErrorContext()
    if isinstance(exc, RemoteError):
        return _map_remote(exc.exc_type, exc.value, context)
    if isinstance(exc, ValidationError):
        return field_errors(exc, context)
    for exc_type, status, code, message in ERROR_TABLE:
        if isinstance(exc, exc_type):
            return ApiError(status, code, message if message is not None else str(exc),
                            headers=_retry_after(exc))
    # A remote error the bridge rebuilt as its own class (a @remote_error type it imports).
    name = type(exc).__name__
    if name in context.service_errors or name in context.bridge_errors or name in context.expected:
        return _map_remote(name, str(exc), context)
    return ApiError(*INTERNAL)


def _retry_after(exc: BaseException) -> dict[str, str]:
    """``Retry-After`` (whole seconds) for answers a client may simply repeat after a moment:
    an open circuit breaker says when it lets a trial through; shed calls, in a second."""
    if isinstance(exc, CircuitOpen):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    if isinstance(exc, ServiceOverloaded):
        return {"Retry-After": RETRY_AFTER["service_overloaded"]}
    return {}


def field_errors(exc: ValidationError, context: ErrorContext) -> ApiError:
    """The worker's ValidationError as the bridge's own 422: each field named by where the
    client put it (``body.order.items[0].qty``), with the validator's reason."""
    details = []
    for error in exc.errors[:50]:
        loc = error.get("loc") if isinstance(error, dict) else None
        if not isinstance(loc, list) or not loc:
            continue
        source = context.field_source.get(str(loc[0]), context.default_source)
        details.append({"field": f"{source}.{_field_path(loc)}", "problem": str(error.get("msg", ""))})
    return ApiError(422, "validation_error", str(exc), details=details or None)


def _field_path(loc: list[object]) -> str:
    """``["order", "items", 0, "qty"]`` -> ``order.items[0].qty``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _map_remote(exc_type: str, value: str, context: ErrorContext) -> ApiError:
    status = context.service_errors.get(exc_type) or context.bridge_errors.get(exc_type)
    if status is None and exc_type in context.expected:
        status = context.expected_status
    if status is None:
        return ApiError(*INTERNAL)
    return ApiError(status, _code_of(exc_type), value or _reason(status), remote_type=exc_type)


def _code_of(exc_type: str) -> str:
    """``OutOfStock`` -> ``out_of_stock``: a stable, machine-readable code."""
    out = []
    for index, char in enumerate(exc_type):
        if char.isupper() and index and not exc_type[index - 1].isupper():
            out.append("_")
        out.append(char.lower())
    return "".join(out)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def error_body(error: ApiError, request_id: str) -> dict[str, object]:
    """The one JSON shape of every error answer."""
    body: dict[str, object] = {
        "status": error.status,
        "code": error.code,
        "message": error.message,
        "id": request_id,
    }
    if error.details:
        body["details"] = error.details
    return {"error": body}


ERROR_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message", "id"],
            "properties": {
                "status": {"type": "integer"},
                "code": {"type": "string"},
                "message": {"type": "string"},
                "id": {"type": "string"},
                "details": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string", "description": "`body.order.items[0].qty`"},
                                   "problem": {"type": "string"}},
                }},
            },
        }
    },
}
