"""Every error amqprpc raises, and how errors cross the wire.

The tree::

    AmqpRpcError
    ├── ConfigError                     bad configuration, found at start
    ├── BrokerError                     talking to RabbitMQ failed
    │   ├── BrokerUnreachable           could not connect (also ConnectionError)
    │   ├── BrokerBlocked               the broker refuses publishes for now (a resource alarm)
    │   ├── ConnectionLost              the connection broke with this call in flight
    │   └── ConfirmTimeout              published, but not confirmed in time (also TimeoutError)
    ├── RpcTimeout                      no reply by the call's deadline (also TimeoutError)
    ├── CallCancelled                   in a handler: its caller gave up (ctx.raise_if_cancelled())
    ├── UnknownService                  no queue is bound for the service
    ├── ServiceUnavailable              its queue is there, but no worker consumes it
    │   └── CircuitOpen                 this caller's circuit breaker for it is open; nothing sent
    ├── RemoteError                     the handler raised; carries the remote type and message
    └── RequestError                    the worker refused the request before running a handler
        ├── MethodNotFound              no @rpc method of that name
        ├── IncorrectSignature          the arguments do not fit the method
        │   └── ValidationError         they bind, but a value does not fit its type hint
        ├── MalformedRequest            undecodable, oversized or incomplete message
        └── IdentityRefused             a trusted_identity service: unsigned, forged or replayed

Defined beside the code that raises them, under the same root (this module holds the
errors a caller of a service can meet; tests/unit/test_architecture.py checks the root):
``entrypoints.events.WorkerLost`` (a run died before it finished; callers see it as a
``RemoteError``), ``discovery.DescriptorError`` (a malformed announcement; also
``ValueError``), ``devservers.DevServerError`` (``amqprpc dev`` could not start a server;
also ``RuntimeError``), and the testing kit's ``ExtensionNotFound`` and ``EntrypointTimeout``.

Errors that cross the wire are data: ``{"exc_type", "exc_path", "exc_args", "value"}``
(Nameko's format). The caller rebuilds only classes on an allow-list and raises
``RemoteError`` for everything else; it never imports a module a message names.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar

__all__ = [
    "AmqpRpcError",
    "BrokerBlocked",
    "BrokerError",
    "BrokerUnreachable",
    "CallCancelled",
    "CircuitOpen",
    "ConfigError",
    "ConfirmTimeout",
    "ConnectionLost",
    "IdentityRefused",
    "IncorrectSignature",
    "MalformedRequest",
    "MethodNotFound",
    "RemoteError",
    "RequestError",
    "RpcTimeout",
    "ServiceUnavailable",
    "UnknownService",
    "ValidationError",
    "deserialize_error",
    "remote_error",
    "serialize_error",
]

_REMOTE_SAFE = "__amqprpc_remote_safe__"
E = TypeVar("E", bound=type[BaseException])


class AmqpRpcError(Exception):
    """Root of every error amqprpc raises."""


class ConfigError(AmqpRpcError):
    """Raised at start when configuration is missing or invalid."""


class BrokerError(AmqpRpcError):
    """Raised when talking to the broker fails."""


class BrokerUnreachable(BrokerError, ConnectionError):
    """Raised when no connection to the broker could be made."""


class BrokerBlocked(BrokerError):
    """Raised at once for a call or event while the broker blocks this connection.

    RabbitMQ blocks publishers during a memory or disk alarm; waiting would only turn the
    refusal into a timeout. Nothing was sent: retrying later is safe.
    """


class ConnectionLost(BrokerError, ConnectionError):
    """Raised for a call whose connection broke before its reply arrived.

    The request may or may not have run: the caller decides whether a retry is safe.
    """


class ConfirmTimeout(BrokerError, TimeoutError):
    """Raised when published messages are still unconfirmed by the broker after a timeout.

    They may yet arrive: the broker has not refused them, it has not answered.
    """


class RpcTimeout(AmqpRpcError, TimeoutError):
    """Raised when no reply arrived by the call's deadline."""


class CallCancelled(AmqpRpcError):
    """Raised in a handler by ``ctx.raise_if_cancelled()`` once its caller gave up (timed
    out, cancelled its future, disconnected): nobody waits for the result any more."""


class UnknownService(AmqpRpcError):
    """Raised at once when the broker returns a request: no queue serves that service."""

    def __init__(self, service: str) -> None:
        super().__init__(service)
        self.service = service

    def __str__(self) -> str:
        return f"unknown service: {self.service!r} (no running worker has declared its queue)"


class ServiceUnavailable(AmqpRpcError):
    """Raised about a second into a call when no worker consumes the service's queue.

    The service ran once (its durable queue ``rpc-<service>`` is still there) but nothing
    consumes it now, so the call would only wait out its timeout (see ``amqprpc.presence``).
    The request stays queued until its deadline: a worker that starts meanwhile may still
    run it, as after an ``RpcTimeout``.
    """

    def __init__(self, service: str) -> None:
        super().__init__(service)
        self.service = service

    def __str__(self) -> str:
        return f"service {self.service!r} is not running: no worker consumes its queue"


class ServiceOverloaded(BrokerError):
    """Raised at once for a call that was refused, never run: the service is over its bounds.

    Its queue is full (``max_queue_length``: RabbitMQ's ``reject-publish`` nacks the request)
    or this client already has ``rpc_max_in_flight`` calls waiting on the service. Nothing
    ran, so trying again later is safe; the HTTP bridge answers 503 with ``Retry-After``
    (docs/resilience.md, "Overload protection").
    """

    def __init__(self, service: str, why: str = "it has no room for more calls") -> None:
        super().__init__(service, why)
        self.service = service
        self.why = why

    def __str__(self) -> str:
        return f"service {self.service!r} is overloaded: {self.why}; the call was not run"


class CircuitOpen(ServiceUnavailable):
    """Raised at once, nothing published, while this caller's circuit breaker for a service is open.

    ``retry_after`` is the number of seconds until the breaker lets a trial call through
    (docs/resilience.md). Retrying is safe: the request was never sent.
    """

    def __init__(self, service: str, method: str = "*", retry_after: float = 0.0) -> None:
        super().__init__(service)
        self.args = (service, method, retry_after)
        self.method = method
        self.retry_after = retry_after

    def __str__(self) -> str:
        return (f"circuit breaker for {self.service!r} is open: failing fast for "
                f"{self.retry_after:.3g}s more")


class RemoteError(AmqpRpcError):
    """Raised by a caller when the remote handler raised a type not on the allow-list."""

    def __init__(self, exc_type: str, value: str = "", exc_path: str = "") -> None:
        super().__init__(exc_type, value)
        self.exc_type = exc_type
        self.value = value
        self.exc_path = exc_path

    def __str__(self) -> str:
        return f"{self.exc_type} {self.value}".strip()


class RequestError(AmqpRpcError):
    """Base of the errors a worker answers with before any handler runs."""


class MethodNotFound(RequestError):
    """Raised when a request names no ``@rpc`` method of the service."""


class IncorrectSignature(RequestError):
    """Raised when a request's arguments do not bind to the method's signature."""


class ValidationError(IncorrectSignature):
    """Raised when the arguments bind but a value does not fit its type hint (docs/contracts.md).

    ``errors`` lists each problem as ``{"loc": [param, field, ...], "msg", "type"}``; on
    the wire it is the second of ``exc_args``, and the ``exc_path`` is Nameko's
    ``IncorrectSignature``, so a Nameko caller still gets the error it knows.
    """

    def __init__(self, message: str = "", errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, list(errors or []))
        self.errors: list[dict[str, Any]] = list(errors or [])

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MalformedRequest(RequestError):
    """Raised when a request cannot be decoded or lacks ``args``/``kwargs``."""


class IdentityRefused(RequestError):
    """Raised when a ``trusted_identity`` service refuses a call's identity: unsigned, forged,
    replayed or expired (``amqprpc.identity``)."""


def remote_error(cls: E) -> E:
    """Mark an exception class as safe to rebuild on the caller's side.

    A caller rebuilds a remote error as this class (instead of ``RemoteError``) when the
    class is marked and its module is already imported in the caller's process.
    """
    setattr(cls, _REMOTE_SAFE, True)
    return cls


# Nameko's own names for the request errors, so errors from Nameko services map too.
_BUILTIN_BY_NAME: dict[str, type[AmqpRpcError]] = {
    "MethodNotFound": MethodNotFound,
    "IncorrectSignature": IncorrectSignature,
    "ValidationError": ValidationError,
    "MalformedRequest": MalformedRequest,
    "UnknownService": UnknownService,
    "ServiceUnavailable": ServiceUnavailable,
    "CircuitOpen": CircuitOpen,
}
for _cls in _BUILTIN_BY_NAME.values():
    remote_error(_cls)
remote_error(IdentityRefused)

# On the wire the request errors carry Nameko's import paths: a Nameko caller rebuilds an
# error as its own class only by exact ``exc_path`` (its registry), else it raises RemoteError.
_WIRE_PATHS: dict[type[BaseException], str] = {
    cls: f"nameko.exceptions.{cls.__name__}"
    for cls in (MethodNotFound, IncorrectSignature, MalformedRequest)
}
_WIRE_PATHS[ValidationError] = "nameko.exceptions.IncorrectSignature"


def serialize_error(exc: BaseException) -> dict[str, Any]:
    """Describe an exception as Nameko does: type name, import path, args, message."""
    cls = type(exc)
    try:
        value = str(exc)
    except Exception:  # a broken __str__ must not break the reply
        value = repr(exc.args)
    return {
        "exc_type": cls.__name__,
        "exc_path": _WIRE_PATHS.get(cls) or f"{cls.__module__}.{cls.__qualname__}",
        "exc_args": [_plain(arg) for arg in exc.args],
        "value": value,
    }


def deserialize_error(data: Any) -> BaseException:
    """Rebuild an allow-listed exception, else a ``RemoteError``."""
    if not isinstance(data, dict):
        return RemoteError("RemoteError", repr(data))
    exc_type = str(data.get("exc_type") or "RemoteError")
    exc_path = str(data.get("exc_path") or "")
    value = str(data.get("value") or "")
    args = data.get("exc_args") or []
    cls = _allowed_class(exc_type, exc_path)
    if cls is not None:
        try:
            return cls(*args) if isinstance(args, list) else cls(value)
        except Exception:
            pass
    return RemoteError(exc_type, value, exc_path)


def _allowed_class(exc_type: str, exc_path: str) -> type[BaseException] | None:
    cls = _lookup_imported(exc_path)
    if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__dict__.get(_REMOTE_SAFE):
        return cls
    return _BUILTIN_BY_NAME.get(exc_type)


def _lookup_imported(path: str) -> Any:
    """Resolve ``module.Qual.Name`` among modules already imported; never import one."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is None:
            continue
        value: Any = module
        for name in parts[split:]:
            value = getattr(value, name, None)
        return value
    return None


def _plain(value: Any, depth: int = 0) -> Any:
    """Exception args as JSON-safe values (strings for anything else); lists and dicts of
    such values stay data, a few levels deep (a ``ValidationError``'s list of errors)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth < 4 and type(value) is list:
        return [_plain(item, depth + 1) for item in value]
    if depth < 4 and type(value) is dict and all(isinstance(key, str) for key in value):
        return {key: _plain(item, depth + 1) for key, item in value.items()}
    return repr(value)
