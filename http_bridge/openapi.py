"""OpenAPI 3.1 from the live route table: the spec is exactly what the bridge routes now.

Path parameters come from the template; for GET and DELETE the other parameters are query
parameters, for POST, PUT and PATCH a JSON object body. Parameter and result schemas are
the JSON Schema the services announced (OpenAPI 3.1 uses JSON Schema 2020-12 as is).
Every operation lists the errors it can answer, in the one error shape: each status with
the error codes behind it (``x-amqprpc-codes``), the service's own ``http_errors`` included.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from amqprpc import ServiceRegistry

from .errors import ERROR_SCHEMA, _code_of
from .routing import Route, RouteTable

_BODY_VERBS = ("POST", "PUT", "PATCH")
# What the bridge itself may answer on any route, by status: (code, when).
_BRIDGE_ERRORS: dict[int, list[tuple[str, str]]] = {
    400: [("invalid_header", "a header name with an underscore"),
          ("invalid_idempotency_key", "the Idempotency-Key header is malformed")],
    404: [("method_not_found", "the service no longer has this method (during a deploy)")],
    409: [("idempotency_key_in_use", "a request with this Idempotency-Key is still running")],
    422: [("validation_error", "invalid arguments: `details` lists every wrong field "
                               "(`path.<name>`, `query.<name>`, `body.<name>.<field>[<index>]`), "
                               "found by the bridge or by the service's own validation"),
          ("idempotency_key_reused", "this Idempotency-Key came with another request")],
    429: [("rate_limited", "too many requests; see Retry-After")],
    431: [("headers_too_large", "the headers are too large")],
    500: [("internal_error", "internal error: quote the error id")],
    503: [("service_unavailable", "no running instance of the service"),
          ("broker_unavailable", "the message broker is not reachable"),
          ("broker_blocked", "the message broker refuses messages for now"),
          ("overloaded", "too many calls in flight"),
          ("service_overloaded", "the service's queue is full; the call was not run (Retry-After)"),
          ("connection_lost", "the broker connection dropped during the call (it may have run)")],
    504: [("deadline_exceeded", "the service did not answer before the deadline")],
}
_BODY_ERRORS: dict[int, list[tuple[str, str]]] = {
    400: [("invalid_json", "the body is not a JSON object")],
    408: [("request_timeout", "the body did not arrive in time")],
    413: [("payload_too_large", "the body is larger than the bridge accepts")],
    415: [("unsupported_media_type", "the body is not application/json")],
}


def build_openapi(table: RouteTable, *, live: Callable[[str], bool] = lambda service: True,
                  listed: Callable[[str], bool] = lambda service: True, expected_status: int = 422,
                  title: str = "amqprpc HTTP bridge", version: str = "1") -> dict[str, Any]:
    """The spec; ``live(service)`` marks operations of services with no running instance
    (``x-amqprpc-live: false``: they answer 503 until an instance is back), and services
    ``listed`` refuses are left out (gone for long: see ``listed_by``). ``expected_status``
    is the bridge's answer to a method's ``expected_exceptions`` not in ``http_errors``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(table.routes, key=lambda r: (r.template, r.verb)):
        if not listed(route.service):
            continue
        operation = _operation(route, expected_status)
        operation["x-amqprpc-live"] = live(route.service)
        paths.setdefault(route.template, {})[route.verb.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "Generated from the services running on the bus."},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


def listed_by(registry: ServiceRegistry | None, hide_after: float | None = None) -> Callable[[str], bool]:
    """Whether a service belongs in the spec: live, or gone for less than ``hide_after`` seconds
    (default: the config's ``discovery_hide_after``). It still answers 503 until forgotten."""
    if registry is None:
        return lambda service: True
    window = hide_after if hide_after is not None else registry.config.discovery_hide_after

    def listed(service: str) -> bool:
        view = registry.service(service)
        return view is not None and view.down_for <= window

    return listed


def _operation(route: Route, expected_status: int = 422) -> dict[str, Any]:
    method = route.method
    path_names = set(_path_params(route.template))
    parameters: list[dict[str, Any]] = []
    body_props: dict[str, Any] = {}
    body_required: list[str] = []
    for param in method.params:
        if param.positional_only:
            continue
        schema = dict(param.schema)
        if param.has_default:
            schema.setdefault("default", param.default)
        if param.name in path_names:
            parameters.append({"name": param.name, "in": "path", "required": True,
                               "schema": param.schema or {"type": "string"}})
        elif route.verb in _BODY_VERBS:
            body_props[param.name] = schema
            if param.required:
                body_required.append(param.name)
        elif _queryable(param.schema):
            query: dict[str, Any] = {"name": param.name, "in": "query", "required": param.required,
                                     "schema": _without_null(schema)}
            if query["schema"].get("type") == "array":
                query.update(style="form", explode=True)
            parameters.append(query)
    doc = method.doc.strip()
    operation: dict[str, Any] = {
        "operationId": f"{route.service}.{method.name}",
        "tags": [route.service],
        "summary": doc.splitlines()[0] if doc else f"{route.service}.{method.name}",
        "parameters": parameters,
        "responses": {
            "200": {"description": "The method's result",
                    "content": {"application/json": {"schema": method.returns or {}}}},
        },
        "x-amqprpc-service": route.service,
        "x-amqprpc-method": method.name,
        "x-amqprpc-deadline": route.deadline,
    }
    if doc:
        operation["description"] = doc
    if route.verb in _BODY_VERBS:
        body_schema: dict[str, Any] = {"type": "object", "properties": body_props,
                                       "additionalProperties": method.variadic_keywords}
        if body_required:
            body_schema["required"] = body_required
        operation["requestBody"] = {"required": bool(body_required),
                                    "content": {"application/json": {"schema": body_schema}}}
    if route.public:
        operation["security"] = []
    else:
        operation["security"] = [{"apiKey": []}, {"bearer": []}]
        if route.roles:
            operation["x-roles"] = list(route.roles)
    operation["responses"].update(_errors(route, expected_status))
    return operation


def _errors(route: Route, expected_status: int) -> dict[str, Any]:
    """Every error status the route can answer, each with its codes: the bridge's own, the
    credentials' and roles' (when not public), the body's (for body verbs), and the service's
    ``http_errors`` and ``expected_exceptions`` (by their codes, e.g. ``invalid_user``)."""
    codes: dict[int, list[tuple[str, str]]] = {status: list(rows) for status, rows in _BRIDGE_ERRORS.items()}

    def add(status: int, code: str, when: str) -> None:
        codes.setdefault(status, []).append((code, when))

    if route.verb in _BODY_VERBS:
        for status, rows in _BODY_ERRORS.items():
            for row in rows:
                add(status, *row)
    if not route.public:
        add(401, "unauthorized", "missing or invalid credentials")
        add(429, "too_many_auth_failures", "too many failed logins from this client")
        if route.roles:
            add(403, "forbidden", f"needs one of the roles: {', '.join(route.roles)}")
    for name, status in sorted(route.errors.items()):
        add(status, _code_of(name), f"the service raised {name}")
    for name in route.method.expected:
        if name not in route.errors:
            add(expected_status, _code_of(name), f"the service raised {name} (expected)")
    return {str(status): _error("; ".join(f"`{code}`: {when}" for code, when in rows),
                                [code for code, _ in rows])
            for status, rows in sorted(codes.items())}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` as a query parameter is just an optional X: a query cannot carry null."""
    options = schema.get("anyOf")
    if not isinstance(options, list):
        return schema
    kept = [option for option in options if option != {"type": "null"}]
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    if len(kept) == 1:
        merged = {**kept[0], **rest}
        if merged.get("default", "") is None:
            del merged["default"]
        return merged
    return {**rest, "anyOf": kept}


def _queryable(schema: dict[str, Any]) -> bool:
    """Objects cannot travel in a query string; such parameters are left out for GET/DELETE."""
    return schema.get("type") != "object"


def _error(description: str, codes: list[str]) -> dict[str, Any]:
    return {"description": description, "x-amqprpc-codes": codes,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _path_params(template: str) -> list[str]:
    return re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", template)
