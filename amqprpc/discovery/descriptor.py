"""Service descriptors: what a running instance says about itself. Pure functions, no I/O.

A descriptor names the service and the instance (id, host, pid, versions) and lists every
``@rpc`` method with its parameters as JSON Schema, its return schema, docstring, HTTP
binding, roles and public flag, plus the service's error table (exception name -> HTTP
status). ``build_descriptor`` makes one from a container, ``parse_descriptor`` checks one
that came over the wire (anyone who can publish may send garbage: it is refused with a
reason, never trusted half-way). The format is pinned in docs/protocol.md.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from ..entrypoints.rpc import Rpc
from ..exceptions import AmqpRpcError, ConfigError
from ..extensions import Container
from .schema import Schema, describe_events, describe_parameters, parse_events
from .ws_events import WsEvent, declared_ws_events, parse_ws_events

PROTOCOL_VERSION = 1
EVENTS = ("up", "alive", "down")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PATH = re.compile(r"^(/[A-Za-z0-9._~!$&'()*+,;=:@%{}-]*)+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_METHOD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class DescriptorError(AmqpRpcError, ValueError):
    """A descriptor from the wire does not have the documented shape."""


@dataclass(frozen=True, slots=True)
class HttpBinding:
    """``GET /users/{user_id}``: how the bridge exposes a method."""

    method: str
    path: str

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(_PATH_PARAM.findall(self.path))

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True, slots=True)
class ParamDescriptor:
    name: str
    schema: Schema
    required: bool
    default: Any = None
    has_default: bool = False
    positional_only: bool = False


@dataclass(frozen=True, slots=True)
class MethodDescriptor:
    """One ``@rpc`` method as the bus knows it."""

    name: str
    params: tuple[ParamDescriptor, ...]
    returns: Schema
    doc: str
    http: HttpBinding | None
    roles: tuple[str, ...]
    public: bool
    expected: tuple[str, ...] = ()
    variadic_keywords: bool = False
    idempotent: bool = False  # @rpc(idempotent=True): callers may retry it (docs/resilience.md)

    def param(self, name: str) -> ParamDescriptor | None:
        for param in self.params:
            if param.name == name:
                return param
        return None


@dataclass(frozen=True, slots=True)
class ServiceDescriptor:
    """One instance of a service, as of its last announcement."""

    event: str
    service: str
    instance: str
    host: str
    pid: int
    version: str | None
    amqprpc_version: str | None
    started_at: float
    sent_at: float
    interval: float
    methods: tuple[MethodDescriptor, ...] = ()
    errors: dict[str, int] = field(default_factory=dict)
    events: dict[str, Any] = field(default_factory=dict)  # dispatches/handles (docs/contracts.md)
    ws_events: tuple[WsEvent, ...] = ()  # events WebSocket clients may subscribe to (ws_events.py)


# ---------------------------------------------------------------------- service side


def parse_http_binding(value: str | bool | None, service: str, method: str) -> HttpBinding | None:
    """``@rpc(http=...)`` as a binding; raises ConfigError naming what is wrong."""
    if value is None or value is False:
        return None
    if value is True:
        return HttpBinding("POST", f"/rpc/{service}/{method}")
    if not isinstance(value, str):
        raise ConfigError(f"{service}.{method}: http= must be True or 'VERB /path', got {value!r}")
    verb, _, path = value.strip().partition(" ")
    verb, path = verb.upper(), path.strip()
    if verb not in HTTP_METHODS:
        raise ConfigError(f"{service}.{method}: http verb must be one of {', '.join(HTTP_METHODS)}, "
                          f"got {verb!r}")
    if not path.startswith("/") or not _PATH.match(path) or "//" in path:
        raise ConfigError(f"{service}.{method}: http path must look like /users/{{user_id}}, got {path!r}")
    names = _PATH_PARAM.findall(path)
    if len(set(names)) != len(names):
        raise ConfigError(f"{service}.{method}: http path {path!r} repeats a parameter")
    if _PATH_PARAM.sub("", path).count("{") or _PATH_PARAM.sub("", path).count("}"):
        raise ConfigError(f"{service}.{method}: http path {path!r} has a malformed {{parameter}}")
    return HttpBinding(verb, path)


def describe_method(service_cls: type, service: str, entrypoint: Any) -> dict[str, Any]:
    """The wire form of one ``@rpc`` method (an ``Rpc`` entrypoint bound to a container)."""
    name = entrypoint.method_name
    fn = getattr(service_cls, name)
    params, returns, var_keyword = describe_parameters(fn)
    binding = parse_http_binding(getattr(entrypoint, "http", None), service, name)
    if binding is not None:
        known = {p["name"] for p in params if not p.get("positional_only")}
        for path_param in binding.path_params:
            if path_param not in known and not var_keyword:
                raise ConfigError(f"{service}.{name}: http path names {{{path_param}}}, "
                                  "which is not a parameter of the method")
    return {
        "name": name,
        "params": params,
        "returns": returns,
        "doc": _clean_doc(getattr(fn, "__doc__", None)),
        "http": {"method": binding.method, "path": binding.path} if binding else None,
        "roles": list(getattr(entrypoint, "roles", ())),
        "public": bool(getattr(entrypoint, "public", False)),
        "expected": sorted({cls.__name__ for cls in entrypoint.expected_exceptions}),
        "variadic_keywords": var_keyword,
        "idempotent": bool(getattr(entrypoint, "idempotent", False)),
    }


def service_errors(service_cls: type) -> dict[str, int]:
    """The service's ``http_errors`` table: ``{NotFound: 404}`` -> ``{"NotFound": 404}``."""
    table = getattr(service_cls, "http_errors", None) or {}
    if not isinstance(table, dict):
        raise ConfigError(f"{service_cls.__name__}.http_errors must be a dict of exception -> status")
    errors: dict[str, int] = {}
    for key, status in table.items():
        name = key.__name__ if isinstance(key, type) else key
        if not isinstance(name, str) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigError(f"{service_cls.__name__}.http_errors: {key!r} -> {status!r}; "
                              "expected an exception (or its name) -> an HTTP status 400..599")
        errors[name] = status
    return errors


def build_descriptor(container: Container, *, event: str, instance: str, host: str,
                     pid: int, started_at: float, sent_at: float, interval: float,
                     amqprpc_version: str | None) -> dict[str, Any]:
    """The wire form of a container's descriptor (a JSON-ready dict)."""
    service = container.service_name
    methods = [
        describe_method(container.service_cls, service, entrypoint)
        for entrypoint in container.entrypoints
        if isinstance(entrypoint, Rpc)
    ]
    # `amqprpc run --version` first: it names the queue callers route to (amqprpc.routing).
    config = getattr(container, "config", None)  # an offline stand-in (contracts) has none
    version = getattr(config, "service_version", "") or getattr(container.service_cls, "version", None)
    descriptor: dict[str, Any] = {
        "protocol": PROTOCOL_VERSION,
        "event": event,
        "service": service,
        "instance": instance,
        "host": host,
        "pid": pid,
        "version": str(version) if version is not None else None,
        "amqprpc": amqprpc_version,
        "started_at": started_at,
        "sent_at": sent_at,
        "interval": interval,
        "methods": sorted(methods, key=lambda m: m["name"]),
        "errors": service_errors(container.service_cls),
        "events": _events(container),
    }
    ws_events = declared_ws_events(container.service_cls)
    if ws_events:  # only when declared: descriptors of other services stay as they were
        descriptor["ws_events"] = ws_events
    return descriptor


def _events(container: Container) -> dict[str, Any]:
    try:
        return describe_events(container.service_cls, container.entrypoints)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None


def _clean_doc(doc: str | None) -> str:
    return inspect.cleandoc(doc) if doc else ""


# ---------------------------------------------------------------------- receiving side


def parse_descriptor(payload: Any) -> ServiceDescriptor:
    """Check a descriptor from the wire; raises DescriptorError with the reason."""
    if not isinstance(payload, dict):
        raise DescriptorError("a descriptor must be a JSON object")
    if payload.get("protocol") != PROTOCOL_VERSION:
        raise DescriptorError(f"unsupported descriptor protocol {payload.get('protocol')!r}")
    event = _get(payload, "event", str)
    if event not in EVENTS:
        raise DescriptorError(f"event must be one of {EVENTS}, got {event!r}")
    service = _get(payload, "service", str)
    if not _NAME.match(service):
        raise DescriptorError(f"invalid service name {service!r}")
    methods = payload.get("methods") or []
    if not isinstance(methods, list):
        raise DescriptorError("methods must be a list")
    errors = payload.get("errors") or {}
    if not isinstance(errors, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 400 <= v <= 599
        for k, v in errors.items()
    ):
        raise DescriptorError("errors must map exception names to HTTP statuses 400..599")
    version = payload.get("version")
    amqprpc_version = payload.get("amqprpc")
    try:
        ws_events = parse_ws_events(service, payload.get("ws_events"))
    except ValueError as exc:
        raise DescriptorError(str(exc)) from None
    return ServiceDescriptor(
        event=event,
        service=service,
        instance=_get(payload, "instance", str),
        host=_get(payload, "host", str),
        pid=_get(payload, "pid", int),
        version=version if isinstance(version, str) else None,
        amqprpc_version=amqprpc_version if isinstance(amqprpc_version, str) else None,
        started_at=float(_get(payload, "started_at", (int, float))),
        sent_at=float(_get(payload, "sent_at", (int, float))),
        interval=_interval(payload),
        methods=tuple(_parse_method(service, m) for m in methods),
        errors=dict(errors),
        events=_parsed_events(payload.get("events")),
        ws_events=ws_events,
    )


def _parsed_events(data: Any) -> dict[str, Any]:
    try:
        return parse_events(data)
    except ValueError as exc:
        raise DescriptorError(str(exc)) from None


def _interval(payload: dict[str, Any]) -> float:
    interval = float(_get(payload, "interval", (int, float)))
    if not 0.05 <= interval <= 3600:
        raise DescriptorError(f"interval must be between 0.05 and 3600 s, got {interval}")
    return interval


def _parse_method(service: str, data: Any) -> MethodDescriptor:
    if not isinstance(data, dict):
        raise DescriptorError("each method must be an object")
    name = _get(data, "name", str)
    if not _METHOD_NAME.match(name):
        raise DescriptorError(f"invalid method name {name!r}")
    params = []
    for raw in data.get("params") or []:
        if not isinstance(raw, dict) or not isinstance(raw.get("schema", {}), dict):
            raise DescriptorError(f"{service}.{name}: each parameter must be an object with a schema")
        params.append(ParamDescriptor(
            name=_get(raw, "name", str),
            schema=raw.get("schema") or {},
            required=bool(raw.get("required", True)),
            default=raw.get("default"),
            has_default="default" in raw,
            positional_only=bool(raw.get("positional_only", False)),
        ))
    http = data.get("http")
    binding = None
    if http is not None:
        if not isinstance(http, dict):
            raise DescriptorError(f"{service}.{name}: http must be an object or null")
        try:
            binding = parse_http_binding(f"{http.get('method')} {http.get('path')}", service, name)
        except ConfigError as exc:
            raise DescriptorError(str(exc)) from None
    roles = data.get("roles") or []
    expected = data.get("expected") or []
    if not all(isinstance(r, str) for r in roles) or not all(isinstance(e, str) for e in expected):
        raise DescriptorError(f"{service}.{name}: roles and expected must be lists of strings")
    returns = data.get("returns") or {}
    return MethodDescriptor(
        name=name,
        params=tuple(params),
        returns=returns if isinstance(returns, dict) else {},
        doc=str(data.get("doc") or ""),
        http=binding,
        roles=tuple(roles),
        public=data.get("public") is True,
        expected=tuple(expected),
        variadic_keywords=data.get("variadic_keywords") is True,
        idempotent=data.get("idempotent") is True,
    )


def _get(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DescriptorError(f"{key!r} is missing or not {getattr(kind, '__name__', kind)}")
    return value
