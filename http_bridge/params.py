"""HTTP inputs -> keyword arguments, checked against the method's JSON Schema before any call.

Path and query values are text, so they are converted by the parameter's schema (``"42"``
-> 42 for an integer, ``"true"`` -> True for a boolean, a repeated query key -> a list for
an array). JSON body values are checked as they are, strictly (``"42"`` is not an integer
there; an integer is a number). Anything that does not fit is a 400 that names the field
(``body.tags[2]``) and the problem, and nothing is sent to the service.

The validator covers the JSON Schema that ``amqprpc.discovery.schema`` produces: type,
enum, anyOf, items, prefixItems, properties/required/additionalProperties, and the
date-time/date/uuid formats.
"""

from __future__ import annotations

import datetime
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

from amqprpc import MalformedRequest
from amqprpc.discovery import MethodDescriptor, ParamDescriptor
from amqprpc.serialization import JSON, DecodeLimits, decode, limit_of

from .errors import ApiError

_INTEGER = re.compile(r"^[+-]?\d{1,40}$")
_MAX_ITEMS_CHECKED = 100_000


class Invalid(Exception):
    """One value does not fit its schema; ``where`` names it."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


def bind_arguments(
    method: MethodDescriptor,
    path_params: Mapping[str, str],
    query: list[tuple[str, str]],
    body: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The call's keyword arguments, or ApiError(400) naming the first field that is wrong."""
    try:
        return _bind(method, path_params, query, body)
    except Invalid as exc:
        raise ApiError(400, "validation_error", f"{exc.where}: {exc.problem}",
                       details=[{"field": exc.where, "problem": exc.problem}]) from None


def _bind(method: MethodDescriptor, path_params: Mapping[str, str],
          query: list[tuple[str, str]], body: Mapping[str, Any] | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def put(name: str, value: Any, source: str) -> None:
        if name in sources:
            raise Invalid(name, f"given both in the {sources[name]} and in the {source}")
        sources[name] = source
        kwargs[name] = value

    for name, text in path_params.items():
        param = _param(method, name, "path")
        put(name, coerce_text(text, param.schema if param else {}, name), "path")

    grouped: dict[str, list[str]] = {}
    for name, text in query:
        grouped.setdefault(name, []).append(text)
    for name, texts in grouped.items():
        param = _param(method, name, "query")
        schema = param.schema if param else {}
        if _accepts(schema, "array"):
            items = schema.get("items", {}) if isinstance(schema.get("items"), dict) else {}
            value: Any = [coerce_text(t, items, f"{name}[{i}]") for i, t in enumerate(texts)]
            validate(value, schema, name)
        elif len(texts) > 1:
            raise Invalid(name, "given more than once in the query")
        else:
            value = coerce_text(texts[0], schema, name)
        put(name, value, "query")

    if body is not None:
        for name, value in body.items():
            param = _param(method, name, "body")
            where = f"body.{name}"
            if param is not None:
                validate(value, param.schema, where)
            put(name, value, "body")

    for param in method.params:
        if param.required and param.name not in kwargs:
            raise Invalid(param.name, "required parameter is missing")
    return kwargs


def _param(method: MethodDescriptor, name: str, source: str) -> ParamDescriptor | None:
    param = method.param(name)
    if param is not None and not param.positional_only:
        return param
    if method.variadic_keywords and not name.startswith("_"):
        return None  # accepted by **kwargs; nothing to check it against
    where = f"body.{name}" if source == "body" else name
    raise Invalid(where, f"unknown parameter (in the {source})")


def _accepts(schema: Mapping[str, Any], kind: str) -> bool:
    declared = schema.get("type")
    if declared == kind or (isinstance(declared, list) and kind in declared):
        return True
    return any(_accepts(option, kind) for option in schema.get("anyOf", ()) if isinstance(option, dict))


def coerce_text(text: str, schema: Mapping[str, Any], where: str) -> Any:
    """A path or query value converted to what ``schema`` expects, then validated."""
    options = schema.get("anyOf")
    if isinstance(options, list) and options:
        # Text cannot carry null (the OpenAPI spec leaves it out): omit the parameter instead.
        for option in [option for option in options if option.get("type") != "null"] or options:
            try:
                return coerce_text(text, option, where)
            except Invalid:
                continue
        raise Invalid(where, f"{text!r} matches none of the accepted types")
    kind = schema.get("type")
    value: Any = text
    if kind == "integer":
        if not _INTEGER.match(text):
            raise Invalid(where, f"expected an integer, got {text!r}")
        value = int(text)
    elif kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise Invalid(where, f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise Invalid(where, f"expected a finite number, got {text!r}")
        if value.is_integer() and _INTEGER.match(text):
            value = int(text)
    elif kind == "boolean":
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise Invalid(where, f"expected true or false, got {text!r}")
        value = lowered in ("true", "1")
    elif kind == "null":
        if text not in ("", "null"):
            raise Invalid(where, f"expected null, got {text!r}")
        value = None
    elif kind in ("object", "array"):
        raise Invalid(where, f"an {kind} cannot be given as text; send it in the JSON body")
    validate(value, schema, where)
    return value


def validate(value: Any, schema: Mapping[str, Any], where: str) -> None:
    """Raise Invalid unless ``value`` fits ``schema`` (the subset described above)."""
    if not schema:
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"][:10])
        raise Invalid(where, f"must be one of {allowed}")
    options = schema.get("anyOf")
    if isinstance(options, list) and options:
        failures: list[Invalid] = []
        for option in options:
            try:
                validate(value, option, where)
                return
            except Invalid as exc:
                failures.append(exc)
        # Report the option of the value's own JSON type (list[str] | None: the bad item).
        same_type = [exc for exc, option in zip(failures, options, strict=True)
                     if option.get("type") == _json_type(value)]
        if len(same_type) == 1:
            raise same_type[0]
        raise Invalid(where, "matches none of the accepted types")
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is_type(value, k) for k in kinds):
            raise Invalid(where, f"expected {' or '.join(kinds)}, got {_json_type(value)}")
    if isinstance(value, str):
        _check_format(value, schema.get("format"), where)
    elif isinstance(value, list):
        _validate_array(value, schema, where)
    elif isinstance(value, dict):
        _validate_object(value, schema, where)


def _validate_array(value: list[Any], schema: Mapping[str, Any], where: str) -> None:
    if len(value) > _MAX_ITEMS_CHECKED:
        raise Invalid(where, f"more than {_MAX_ITEMS_CHECKED} items")
    prefix = schema.get("prefixItems")
    if isinstance(prefix, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            raise Invalid(where, f"expected {len(prefix)} items, got {len(value)}")
        for index, (item, item_schema) in enumerate(zip(value, prefix, strict=False)):
            validate(item, item_schema, f"{where}[{index}]")
    items = schema.get("items")
    if isinstance(items, dict) and items:
        for index, item in enumerate(value):
            validate(item, items, f"{where}[{index}]")


def _validate_object(value: dict[str, Any], schema: Mapping[str, Any], where: str) -> None:
    properties = schema.get("properties") or {}
    for name in schema.get("required") or ():
        if name not in value:
            raise Invalid(f"{where}.{name}", "required field is missing")
    extra = schema.get("additionalProperties")
    for name, item in value.items():
        if name in properties:
            validate(item, properties[name], f"{where}.{name}")
        elif isinstance(extra, dict):
            validate(item, extra, f"{where}.{name}")
        elif extra is False:
            raise Invalid(f"{where}.{name}", "unknown field")


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return True


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _check_format(value: str, fmt: Any, where: str) -> None:
    try:
        if fmt == "date-time":
            datetime.datetime.fromisoformat(value)
        elif fmt == "date":
            datetime.date.fromisoformat(value)
        elif fmt == "uuid":
            uuid.UUID(value)
    except ValueError:
        raise Invalid(where, f"expected a {fmt} string, got {value[:40]!r}") from None


# ---------------------------------------------------------------- the JSON body

_TOO_LARGE = frozenset({"max_message_size", "decode_max_items", "decode_max_string"})


def parse_json_body(data: bytes, limits: DecodeLimits) -> dict[str, Any]:
    """The body's JSON object of named arguments; 400 (413 for size limits) naming the problem.

    Decoded as a worker decodes a request: strictly UTF-8, no NaN or Infinity (``1e999``
    neither), within ``limits`` (depth, items, string length, integer digits).
    """
    try:
        body = decode(data, JSON, limits)
    except MalformedRequest as exc:
        limit = limit_of(exc)
        if limit is None:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
        status, code = (413, "payload_too_large") if limit in _TOO_LARGE else (400, "limit_exceeded")
        raise ApiError(status, code, f"the JSON body is refused: {exc}",
                       details=[{"field": "body", "problem": str(exc), "limit": limit}]) from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object of named arguments")
    return body
