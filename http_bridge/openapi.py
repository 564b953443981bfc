"""OpenAPI 3.1 from the live route table: the spec is exactly what the bridge routes now.

Path parameters come from the template; for GET and DELETE the other parameters are query
parameters, for POST, PUT and PATCH a JSON object body. Parameter and result schemas are
the JSON Schema the services announced (OpenAPI 3.1 uses JSON Schema 2020-12 as is).
Every operation lists the errors the bridge can answer, in the one error shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import ERROR_SCHEMA
from .routing import Route, RouteTable

_BODY_VERBS = ("POST", "PUT", "PATCH")
_COMMON_ERRORS = {
    "400": "Invalid arguments",
    "404": "No such route",
    "413": "Body too large",
    "429": "Rate limited",
    "500": "Internal error (quote the error id)",
    "503": "Service unavailable",
    "504": "Deadline exceeded",
}


def build_openapi(table: RouteTable, *, live: Callable[[str], bool] = lambda service: True,
                  title: str = "amqprpc HTTP bridge", version: str = "1") -> dict[str, Any]:
    """The spec; ``live(service)`` marks operations of services with no running instance
    (``x-amqprpc-live: false``: they answer 503 until an instance is back)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(table.routes, key=lambda r: (r.template, r.verb)):
        operation = _operation(route)
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


def _operation(route: Route) -> dict[str, Any]:
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
            query = {"name": param.name, "in": "query", "required": param.required,
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
            **{status: _error(text) for status, text in _COMMON_ERRORS.items()},
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
        operation["responses"]["415"] = _error("Body is not application/json")
    if route.public:
        operation["security"] = []
    else:
        operation["security"] = [{"apiKey": []}, {"bearer": []}]
        operation["responses"]["401"] = _error("Missing or invalid credentials")
        if route.roles:
            operation["x-roles"] = list(route.roles)
            operation["responses"]["403"] = _error(f"Needs one of the roles: {', '.join(route.roles)}")
    return operation


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


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _path_params(template: str) -> list[str]:
    return re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", template)
