"""HTTP inputs -> keyword arguments, checked against the method's JSON Schema before any call.

Path and query values are text, so they are converted by the parameter's schema (``"42"``
-> 42 for an integer, ``"true"`` -> True for a boolean, a repeated query key -> a list for
an array). JSON body values are checked as they are, strictly (``"42"`` is not an integer
there; an integer is a number). Anything that does not fit is a 400 that names every
wrong field at once, each by where it came from (``path.user_id``, ``query.limit``,
``body.tags[2]``), with its problem, and nothing is sent to the service (a 422, as for
the field errors a service's own validation finds, docs/contracts.md)::

    {"error": {"status": 422, "code": "validation_error", "message": "2 invalid fields: ...",
               "id": "...", "details": [{"field": "body.name", "problem": "expected string, got integer"},
                                        {"field": "query.limit", "problem": "expected an integer, got 'x'"}]}}

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

from amqprpc import DecodeLimits, MalformedRequest
from amqprpc.discovery import MethodDescriptor, ParamDescriptor, json_type_of

from .errors import ApiError

_INTEGER = re.compile(r"^[+-]?\d{1,40}$")
_MAX_ITEMS_CHECKED = 100_000
_MAX_PROBLEMS = 50  # listed in one answer; a hostile body cannot make it huge
_BODY_VERBS = ("POST", "PUT", "PATCH")


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
    """The call's keyword arguments, or ApiError(422) listing every field that is wrong."""
    found: list[Invalid] = []
    kwargs = _bind(method, path_params, query, body, found)
    if found:
        raise validation_error(found)
    return kwargs


def validation_error(found: list[Invalid]) -> ApiError:
    """The one 422 for invalid arguments: a message for people, ``details`` for programs."""
    found = found[:_MAX_PROBLEMS]
    shown = "; ".join(str(item) for item in found[:5]) + ("; ..." if len(found) > 5 else "")
    message = shown if len(found) == 1 else f"{len(found)} invalid fields: {shown}"
    return ApiError(422, "validation_error", message,
                    details=[{"field": item.where, "problem": item.problem} for item in found])


def _bind(method: MethodDescriptor, path_params: Mapping[str, str], query: list[tuple[str, str]],
          body: Mapping[str, Any] | None, found: list[Invalid]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    sources: dict[str, str] = {}  # every name given, valid or not: it is not "missing"

    def put(name: str, value: Any, ok: bool, source: str) -> None:
        if name in sources:
            found.append(Invalid(f"{source}.{name}", f"also given in the {sources[name]}"))
            return
        sources[name] = source
        if ok:
            kwargs[name] = value

    def known(name: str, source: str) -> tuple[bool, Mapping[str, Any]]:
        """Whether the method takes ``name``, and its schema ({}: anything)."""
        try:
            param = _param(method, name, source)
        except Invalid as exc:
            found.append(exc)
            return False, {}
        return True, param.schema if param is not None else {}

    for name, text in path_params.items():
        ok, schema = known(name, "path")
        if ok:
            put(name, *_coerced(text, schema, f"path.{name}", found), "path")

    grouped: dict[str, list[str]] = {}
    for name, text in query:
        grouped.setdefault(name, []).append(text)
    for name, texts in grouped.items():
        ok, schema = known(name, "query")
        if not ok:
            continue
        where = f"query.{name}"
        if _accepts(schema, "array"):
            items = _array_items(schema)
            before = len(found)
            value: Any = [_coerced(text, items, f"{where}[{index}]", found)[0]
                          for index, text in enumerate(texts)]
            put(name, value, len(found) == before and _check(value, schema, where, found), "query")
        elif len(texts) > 1:
            found.append(Invalid(where, "given more than once in the query"))
        else:
            put(name, *_coerced(texts[0], schema, where, found), "query")

    if body is not None:
        for name, value in body.items():
            ok, schema = known(name, "body")
            if ok:
                put(name, value, _check(value, schema, f"body.{name}", found), "body")

    missing_in = "body" if method.http is not None and method.http.method in _BODY_VERBS else "query"
    for param in method.params:
        if param.required and param.name not in sources:
            found.append(Invalid(f"{missing_in}.{param.name}", "required parameter is missing"))
    return kwargs


def _coerced(text: str, schema: Mapping[str, Any], where: str, found: list[Invalid]) -> tuple[Any, bool]:
    """``coerce_text`` with its problem noted in ``found``: (value, whether it fits)."""
    try:
        return coerce_text(text, schema, where), True
    except Invalid as exc:
        found.append(exc)
        return None, False


def _param(method: MethodDescriptor, name: str, source: str) -> ParamDescriptor | None:
    param = method.param(name)
    if param is not None and not param.positional_only:
        return param
    if method.variadic_keywords and not name.startswith("_"):
        return None  # accepted by **kwargs; nothing to check it against
    raise Invalid(f"{source}.{name}", f"unknown parameter (in the {source})")


def _array_items(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The item schema of the array ``schema`` accepts (``list[int] | None`` too)."""
    if schema.get("type") == "array":
        items = schema.get("items")
        return items if isinstance(items, dict) else {}
    for option in schema.get("anyOf", ()):
        if isinstance(option, dict) and _accepts(option, "array"):
            return _array_items(option)
    return {}


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
    """Raise Invalid (the first problem) unless ``value`` fits ``schema`` (the subset above)."""
    found: list[Invalid] = []
    if not _check(value, schema, where, found):
        raise found[0]


def problems(value: Any, schema: Mapping[str, Any], where: str) -> list[Invalid]:
    """Every way ``value`` does not fit ``schema`` (empty when it fits)."""
    found: list[Invalid] = []
    _check(value, schema, where, found)
    return found


def _check(value: Any, schema: Mapping[str, Any], where: str, found: list[Invalid]) -> bool:
    """Whether ``value`` fits ``schema``; each problem is appended to ``found``."""
    if not schema:
        return True
    if len(found) >= _MAX_PROBLEMS:
        return False
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"][:10])
        found.append(Invalid(where, f"must be one of {allowed}"))
        return False
    options = schema.get("anyOf")
    if isinstance(options, list) and options:
        attempts: list[list[Invalid]] = []
        for option in options:
            attempt: list[Invalid] = []
            if _check(value, option, where, attempt):
                return True
            attempts.append(attempt)
        # Report the option of the value's own JSON type (list[str] | None: the bad items).
        same_type = [attempt for attempt, option in zip(attempts, options, strict=True)
                     if option.get("type") == json_type_of(value)]
        found.extend(same_type[0] if len(same_type) == 1
                     else [Invalid(where, "matches none of the accepted types")])
        return False
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is_type(value, k) for k in kinds):
            found.append(Invalid(where, f"expected {' or '.join(kinds)}, got {json_type_of(value)}"))
            return False
    before = len(found)
    if isinstance(value, str):
        _check_format(value, schema.get("format"), where, found)
    elif isinstance(value, list):
        _check_array(value, schema, where, found)
    elif isinstance(value, dict):
        _check_object(value, schema, where, found)
    return len(found) == before


def _check_array(value: list[Any], schema: Mapping[str, Any], where: str, found: list[Invalid]) -> None:
    if len(value) > _MAX_ITEMS_CHECKED:
        found.append(Invalid(where, f"more than {_MAX_ITEMS_CHECKED} items"))
        return
    prefix = schema.get("prefixItems")
    if isinstance(prefix, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            found.append(Invalid(where, f"expected {len(prefix)} items, got {len(value)}"))
            return
        for index, (item, item_schema) in enumerate(zip(value, prefix, strict=False)):
            _check(item, item_schema, f"{where}[{index}]", found)
    items = schema.get("items")
    if isinstance(items, dict) and items:
        for index, item in enumerate(value):
            _check(item, items, f"{where}[{index}]", found)


def _check_object(value: dict[str, Any], schema: Mapping[str, Any], where: str,
                  found: list[Invalid]) -> None:
    properties = schema.get("properties") or {}
    for name in schema.get("required") or ():
        if name not in value:
            found.append(Invalid(f"{where}.{name}", "required field is missing"))
    extra = schema.get("additionalProperties")
    for name, item in value.items():
        if name in properties:
            _check(item, properties[name], f"{where}.{name}", found)
        elif isinstance(extra, dict):
            _check(item, extra, f"{where}.{name}", found)
        elif extra is False:
            found.append(Invalid(f"{where}.{name}", "unknown field"))


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



def _check_format(value: str, fmt: Any, where: str, found: list[Invalid]) -> None:
    try:
        if fmt == "date-time":
            datetime.datetime.fromisoformat(value)
        elif fmt == "date":
            datetime.date.fromisoformat(value)
        elif fmt == "uuid":
            uuid.UUID(value)
    except ValueError:
        found.append(Invalid(where, f"expected a {fmt} string, got {value[:40]!r}"))


# ---------------------------------------------------------------- the JSON body

_TOO_LARGE = frozenset({"max_message_size", "decode_max_items", "decode_max_string"})


def parse_json_body(data: bytes, limits: DecodeLimits) -> dict[str, Any]:
    """The body's JSON object of named arguments; 400 (413 for size limits) naming the problem.

    Decoded as a worker decodes a request: strictly UTF-8, no NaN or Infinity (``1e999``
    neither), within ``limits`` (depth, items, string length, integer digits).
    """
    try:
        body = limits.decode(data, "application/json")
    except MalformedRequest as exc:
        limit = getattr(exc, "limit", None)  # set on errors past a limit (serialization.limit_exceeded)
        if limit is None:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
        status, code = (413, "payload_too_large") if limit in _TOO_LARGE else (400, "limit_exceeded")
        raise ApiError(status, code, f"the JSON body is refused: {exc}",
                       details=[{"field": "body", "problem": str(exc), "limit": limit}]) from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object of named arguments")
    return body
