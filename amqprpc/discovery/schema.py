"""Python type hints as JSON Schema, for service descriptors (and so for the HTTP bridge).

Only what a JSON body can carry is described precisely; anything else becomes ``{}``
("any value"), so an exotic hint never stops a service from announcing itself::

    int -> {"type": "integer"}            list[int] -> {"type": "array", "items": {...}}
    float -> {"type": "number"}           dict[str, X] -> {"type": "object", "additionalProperties": X}
    str / bool / None                     X | None -> {"anyOf": [X, {"type": "null"}]}
    Literal["a", "b"] -> {"enum": [...]}  Enum subclass -> {"enum": [values]}
    datetime / date / UUID -> string with "format"; Decimal -> string
    TypedDict / dataclass -> object with properties and required

The output is JSON Schema 2020-12, which OpenAPI 3.1 uses as is.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import inspect
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Schema = dict[str, Any]

_MAX_DEPTH = 8  # recursive types (a TypedDict that names itself) end as {}

_SIMPLE: dict[Any, Schema] = {
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    bytes: {"type": "string"},
    type(None): {"type": "null"},
    datetime.datetime: {"type": "string", "format": "date-time"},
    datetime.date: {"type": "string", "format": "date"},
    datetime.time: {"type": "string", "format": "time"},
    uuid.UUID: {"type": "string", "format": "uuid"},
    decimal.Decimal: {"type": "string", "format": "decimal"},
}


def schema_of(hint: Any, _depth: int = 0) -> Schema:
    """The JSON Schema of a type hint; ``{}`` for anything it cannot describe."""
    if _depth > _MAX_DEPTH or hint is inspect.Parameter.empty or hint is Any or hint is object:
        return {}
    if hint is None:
        return {"type": "null"}
    simple = _SIMPLE.get(hint)
    if simple is not None:
        return dict(simple)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    depth = _depth + 1
    if origin is typing.Annotated:
        return schema_of(args[0], depth)
    if origin is typing.Literal:
        return {"enum": [value for value in args if isinstance(value, str | int | float | bool | None)]}
    if origin is typing.Union or origin is types.UnionType:
        options = [schema_of(arg, depth) for arg in args]
        return {} if any(option == {} for option in options) else {"anyOf": options}
    if origin in (list, set, frozenset, Sequence, typing.Sequence) or hint in (list, set, frozenset):
        items = schema_of(args[0], depth) if args else {}
        return {"type": "array", "items": items} if items else {"type": "array"}
    if origin is tuple or hint is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": schema_of(args[0], depth)}
        if args:
            return {"type": "array", "prefixItems": [schema_of(arg, depth) for arg in args],
                    "minItems": len(args), "maxItems": len(args)}
        return {"type": "array"}
    if origin in (dict, Mapping, typing.Mapping) or hint is dict:
        values = schema_of(args[1], depth) if len(args) == 2 else {}
        schema: Schema = {"type": "object"}
        if values:
            schema["additionalProperties"] = values
        return schema
    if isinstance(hint, type):
        if issubclass(hint, enum.Enum):
            return {"enum": [member.value for member in hint]}
        if typing.is_typeddict(hint):
            return _object_schema(hint, _hints(hint), set(getattr(hint, "__required_keys__", ())), depth)
        if dataclasses.is_dataclass(hint):
            required = {
                f.name for f in dataclasses.fields(hint)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            }
            return _object_schema(hint, _hints(hint), required, depth)
    return {}


def _object_schema(cls: type, hints: dict[str, Any], required: set[str], depth: int) -> Schema:
    schema: Schema = {
        "type": "object",
        "title": cls.__name__,
        "properties": {name: schema_of(hint, depth) for name, hint in hints.items()},
    }
    if required:
        schema["required"] = sorted(required)
    return schema


def _hints(obj: Any) -> dict[str, Any]:
    """Resolved type hints; unresolvable ones (forward references) stay as they are."""
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception:
        return dict(getattr(obj, "__annotations__", {}))


def describe_parameters(fn: Callable[..., Any]) -> tuple[list[dict[str, Any]], Schema, bool]:
    """(parameters, return schema, accepts extra keywords) of a method, ``self`` left out.

    Each parameter: ``{"name", "schema", "required", "default"?}``. Positional-only and
    ``*args`` parameters cannot be named by a caller that only sends keywords, so they
    are listed with ``"positional_only": true``.
    """
    signature = inspect.signature(fn)
    hints = _hints(fn)
    params: list[dict[str, Any]] = []
    var_keyword = False
    for index, param in enumerate(signature.parameters.values()):
        if index == 0 and param.name in ("self", "cls"):
            continue
        if param.kind is param.VAR_KEYWORD:
            var_keyword = True
            continue
        entry: dict[str, Any] = {
            "name": param.name,
            "schema": schema_of(hints.get(param.name, param.annotation)),
            "required": param.default is param.empty and param.kind is not param.VAR_POSITIONAL,
        }
        if param.default is not param.empty and _is_json_value(param.default):
            entry["default"] = param.default
        if param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL):
            entry["positional_only"] = True
        params.append(entry)
    returns = schema_of(hints.get("return", signature.return_annotation))
    return params, returns, var_keyword


def _is_json_value(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_is_json_value(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_value(v) for k, v in value.items())
    return False
