"""Python type hints as JSON Schema, for service descriptors (and so for the HTTP bridge).

Only what a JSON body can carry is described precisely; anything else becomes ``{}``
("any value"), so an exotic hint never stops a service from announcing itself::

    int -> {"type": "integer"}            list[int] -> {"type": "array", "items": {...}}
    float -> {"type": "number"}           dict[str, X] -> {"type": "object", "additionalProperties": X}
    str / bool / None                     X | None -> {"anyOf": [X, {"type": "null"}]}
    Literal["a", "b"] -> {"enum": [...]}  Enum subclass -> {"enum": [values]}
    datetime / date / UUID -> string with "format"; Decimal -> string
    TypedDict / dataclass -> object with properties and required
    pydantic model -> its own ``model_json_schema()``, references inlined

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

from ..entrypoints.topic import TopicHandler

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
        if hasattr(hint, "model_json_schema") and hasattr(hint, "model_fields"):
            return _pydantic_schema(hint)
        if issubclass(hint, enum.Enum):
            return {"enum": [member.value for member in hint]}
        if typing.is_typeddict(hint) or (issubclass(hint, dict) and hasattr(hint, "__required_keys__")):
            return _object_schema(hint, _hints(hint), set(getattr(hint, "__required_keys__", ())), depth)
        if dataclasses.is_dataclass(hint):
            required = {
                f.name for f in dataclasses.fields(hint)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            }
            return _object_schema(hint, _hints(hint), required, depth)
    return {}


def _pydantic_schema(model: Any) -> Schema:
    """A pydantic model's schema with its ``$defs`` inlined: a descriptor's schemas sit
    inside other documents (OpenAPI, AsyncAPI), where ``#/$defs/...`` would point elsewhere.
    A model that contains itself ends as ``{}`` at the repeat."""
    try:
        schema = model.model_json_schema()
    except Exception:  # a field type pydantic cannot describe: any value, as for other hints
        return {}
    defs = schema.pop("$defs", {})
    return dict(_inline(schema, defs, ()))


def _inline(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref[len("#/$defs/"):]
        if name in seen or name not in defs or len(seen) > _MAX_DEPTH:
            return {}
        rest = {key: value for key, value in node.items() if key != "$ref"}
        return {**_inline(defs[name], defs, (*seen, name)), **_inline(rest, defs, seen)}
    return {key: _inline(value, defs, seen) for key, value in node.items()}


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


_EVENT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_MAX_EVENTS = 500


def describe_events(service_cls: type, entrypoints: Sequence[Any]) -> dict[str, Any]:
    """The events a service dispatches (its ``event_types``: ``{"order_created": OrderCreated}``,
    each payload as JSON Schema) and those it handles (source, type, handler type, method)."""
    declared = getattr(service_cls, "event_types", None) or {}
    if not isinstance(declared, Mapping):
        raise TypeError(f"{service_cls.__name__}.event_types must map event names to payload types")
    dispatches = [{"event": str(name), "schema": schema_of(hint)} for name, hint in sorted(declared.items())]
    handles = sorted(
        ({"source": ep.source, "event": ep.event_type, "handler_type": ep.handler_type,
          "method": ep.method_name, "schema": _payload_schema(service_cls, ep.method_name)}
         for ep in entrypoints if isinstance(getattr(ep, "event_type", None), str)
         and isinstance(getattr(ep, "source", None), str)
         # MQTT topic filters are patterns on amq.topic, not events a service dispatches
         and not isinstance(ep, TopicHandler)),
        key=lambda row: (row["source"], row["event"], row["method"]))
    return {"dispatches": dispatches, "handles": handles}


def _payload_schema(service_cls: type, method: str) -> Schema:
    """The hint of an event handler's payload parameter (its first after ``self``)."""
    params, _, _ = describe_parameters(getattr(service_cls, method))
    return params[0]["schema"] if params else {}


def parse_events(data: Any) -> dict[str, Any]:
    """A descriptor's ``events`` from the wire, checked (ValueError naming the problem)."""
    if data is None:
        return {"dispatches": [], "handles": []}
    if not isinstance(data, dict):
        raise ValueError("events must be an object")
    dispatches = data.get("dispatches") or []
    handles = data.get("handles") or []
    if not isinstance(dispatches, list) or not isinstance(handles, list) or \
            len(dispatches) + len(handles) > _MAX_EVENTS:
        raise ValueError(f"events.dispatches and events.handles must be lists (at most {_MAX_EVENTS})")
    for row in dispatches:
        if not isinstance(row, dict) or not _event_name(row.get("event")) or \
                not isinstance(row.get("schema", {}), dict):
            raise ValueError("each dispatched event needs an event name and a schema object")
    for row in handles:
        if not isinstance(row, dict) or not all(_event_name(row.get(key))
                                                for key in ("source", "event", "handler_type", "method")) \
                or not isinstance(row.get("schema", {}), dict):
            raise ValueError("each handled event needs source, event, handler_type and method names")
    return {"dispatches": [dict(row) for row in dispatches], "handles": [dict(row) for row in handles]}


def _event_name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 255 and set(value) <= _EVENT_NAME_CHARS


def json_type_of(value: Any) -> str:
    """The JSON Schema ``type`` a decoded JSON value has (``True`` is a boolean, not an integer)."""
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
    return "array" if isinstance(value, list) else "object"
