"""Breaking changes between two contracts (``amqprpc contract diff OLD NEW``).

A change is *breaking* when a caller written against OLD can fail against NEW, and
*additive* when every such caller still works. Requests and replies are judged in opposite
directions: a parameter's schema may only widen (accept more), a result's or an event
payload's may only narrow (promise more), so ``str`` -> ``str | None`` is additive for a
parameter and breaking for a result. Each finding is one line::

    BREAKING orders.create: parameter 'coupon' is new and required
    additive orders.create: result field 'eta' is new
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..discovery.schema import json_type_of

BREAKING = "BREAKING"
ADDITIVE = "additive"

_TIGHTER_WHEN_LARGER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_TIGHTER_WHEN_SMALLER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_MAX_DEPTH = 16


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # BREAKING or ADDITIVE
    where: str  # service or service.method or service.event
    what: str

    @property
    def breaking(self) -> bool:
        return self.kind == BREAKING

    def __str__(self) -> str:
        return f"{self.kind} {self.where}: {self.what}"


def diff_contracts(old: dict[str, Any], new: dict[str, Any]) -> list[Finding]:
    """Every change from ``old`` to ``new`` (contract documents), breaking ones first."""
    out: list[Finding] = []
    old_services, new_services = old.get("services", {}), new.get("services", {})
    for name in sorted(old_services.keys() - new_services.keys()):
        out.append(Finding(BREAKING, name, "service removed"))
    for name in sorted(new_services.keys() - old_services.keys()):
        out.append(Finding(ADDITIVE, name, "service added"))
    for name in sorted(old_services.keys() & new_services.keys()):
        _service(name, old_services[name], new_services[name], out)
    return sorted(out, key=lambda f: (not f.breaking,))  # stable: order within each kind kept


def _service(name: str, old: dict[str, Any], new: dict[str, Any], out: list[Finding]) -> None:
    old_methods, new_methods = old.get("methods", {}), new.get("methods", {})
    for method in sorted(old_methods.keys() - new_methods.keys()):
        out.append(Finding(BREAKING, f"{name}.{method}", "method removed"))
    for method in sorted(new_methods.keys() - old_methods.keys()):
        out.append(Finding(ADDITIVE, f"{name}.{method}", "method added"))
    for method in sorted(old_methods.keys() & new_methods.keys()):
        _method(f"{name}.{method}", old_methods[method], new_methods[method], out)
    old_events, new_events = old.get("dispatches", {}), new.get("dispatches", {})
    for event in sorted(old_events.keys() - new_events.keys()):
        out.append(Finding(BREAKING, f"{name}.{event}", "event no longer dispatched"))
    for event in sorted(new_events.keys() - old_events.keys()):
        out.append(Finding(ADDITIVE, f"{name}.{event}", "event added"))
    for event in sorted(old_events.keys() & new_events.keys()):
        _schema(old_events[event], new_events[event], Where(out, f"{name}.{event}", "payload"), "out")
    old_errors, new_errors = old.get("errors", {}), new.get("errors", {})
    for error in sorted(old_errors):
        if error not in new_errors:
            out.append(Finding(BREAKING, name, f"error {error} no longer maps to HTTP {old_errors[error]}"))
        elif new_errors[error] != old_errors[error]:
            out.append(Finding(BREAKING, name, f"error {error} now answers HTTP {new_errors[error]} "
                                               f"(was {old_errors[error]})"))
    for error in sorted(new_errors.keys() - old_errors.keys()):
        out.append(Finding(ADDITIVE, name, f"error {error} maps to HTTP {new_errors[error]}"))


def _method(where: str, old: dict[str, Any], new: dict[str, Any], out: list[Finding]) -> None:
    old_params = {p["name"]: p for p in old.get("params", [])}
    new_params = {p["name"]: p for p in new.get("params", [])}
    old_order = [p["name"] for p in old.get("params", [])]
    new_order = [p["name"] for p in new.get("params", [])]
    for name in old_order:
        if name not in new_params:
            if new.get("variadic_keywords") and not old_params[name].get("positional_only"):
                out.append(Finding(ADDITIVE, where, f"parameter '{name}' is now taken by **kwargs"))
            else:
                out.append(Finding(BREAKING, where, f"parameter '{name}' removed"))
    for name in new_order:
        if name not in old_params:
            required = new_params[name].get("required", True)
            out.append(Finding(BREAKING if required else ADDITIVE, where,
                               f"parameter '{name}' is new and {'required' if required else 'optional'}"))
    kept_old = [n for n in old_order if n in new_params]
    kept_new = [n for n in new_order if n in old_params]
    for index, name in enumerate(kept_old):
        if kept_new.index(name) != index:
            out.append(Finding(BREAKING, where, f"parameter '{name}' moved (positional callers break)"))
            break
    for name in kept_old:
        before, after = old_params[name], new_params[name]
        if after.get("required", True) and not before.get("required", True):
            out.append(Finding(BREAKING, where, f"parameter '{name}' is now required"))
        elif before.get("required", True) and not after.get("required", True):
            out.append(Finding(ADDITIVE, where, f"parameter '{name}' is now optional"))
        if "default" in before and "default" in after and before["default"] != after["default"]:
            out.append(Finding(BREAKING, where, f"parameter '{name}' default changed from "
                                                f"{before['default']!r} to {after['default']!r}"))
        if after.get("positional_only") and not before.get("positional_only"):
            out.append(Finding(BREAKING, where, f"parameter '{name}' is now positional-only"))
        _schema(before.get("schema", {}), after.get("schema", {}),
                Where(out, where, f"parameter '{name}'"), "in")
    if old.get("variadic_keywords") and not new.get("variadic_keywords"):
        out.append(Finding(BREAKING, where, "no longer accepts extra keyword arguments"))
    elif new.get("variadic_keywords") and not old.get("variadic_keywords"):
        out.append(Finding(ADDITIVE, where, "now accepts extra keyword arguments"))
    _schema(old.get("returns", {}), new.get("returns", {}), Where(out, where, "result"), "out")
    _route(where, old, new, out)


def _route(where: str, old: dict[str, Any], new: dict[str, Any], out: list[Finding]) -> None:
    before, after = old.get("http"), new.get("http")
    if before and not after:
        out.append(Finding(BREAKING, where, f"HTTP route {before} removed"))
    elif after and not before:
        out.append(Finding(ADDITIVE, where, f"HTTP route {after} added"))
    elif before != after:
        out.append(Finding(BREAKING, where, f"HTTP route changed from {before} to {after}"))
    if not before or not after:
        return
    if old.get("public") and not new.get("public"):
        out.append(Finding(BREAKING, where, "now needs credentials (was public)"))
    elif new.get("public") and not old.get("public"):
        out.append(Finding(ADDITIVE, where, "now public"))
    old_roles, new_roles = set(old.get("roles", [])), set(new.get("roles", []))
    if new_roles and (not old_roles or old_roles - new_roles):
        out.append(Finding(BREAKING, where, f"roles narrowed from {sorted(old_roles) or 'any'} "
                                            f"to {sorted(new_roles)}"))
    elif old_roles and (not new_roles or new_roles - old_roles):
        out.append(Finding(ADDITIVE, where, f"roles widened from {sorted(old_roles)} "
                                            f"to {sorted(new_roles) or 'any'}"))


# ---------------------------------------------------------------- schemas


@dataclass(frozen=True, slots=True)
class Where:
    out: list[Finding]
    where: str
    path: str  # "parameter 'order'", "result", "payload", with .field and [] appended

    def at(self, suffix: str) -> Where:
        return Where(self.out, self.where, self.path + suffix)

    def add(self, breaking: bool, what: str) -> None:
        self.out.append(Finding(BREAKING if breaking else ADDITIVE, self.where, f"{self.path}: {what}"))


def _schema(old: Any, new: Any, at: Where, mode: str, depth: int = 0) -> None:
    """Findings for ``old`` -> ``new``; ``mode`` "in" (values callers send) or "out" (values they get)."""
    old, new = old if isinstance(old, dict) else {}, new if isinstance(new, dict) else {}
    if old == new or depth > _MAX_DEPTH:
        return
    old_types, new_types = _types(old), _types(new)
    if old_types != new_types:
        narrowed = new_types is not None and (old_types is None or not old_types <= new_types)
        widened = old_types is not None and (new_types is None or not new_types <= old_types)
        label = f"type {_show(old_types)} -> {_show(new_types)}"
        if narrowed and widened:
            at.add(True, f"retyped: {label}")
            return
        if narrowed:
            at.add(mode == "in", f"narrowed: {label}")
        elif widened:
            at.add(mode == "out", f"widened: {label}")
    _enum(old, new, at, mode)
    _format(old, new, at, mode)
    _bounds(old, new, at, mode)
    both = (old_types or set()) & (new_types or set())
    if "object" in both:
        _object(_option(old, "object"), _option(new, "object"), at, mode, depth)
    if "array" in both:
        old_items, new_items = _option(old, "array").get("items", {}), _option(new, "array").get("items", {})
        _schema(old_items, new_items, at.at("[]"), mode, depth + 1)


def _object(old: dict[str, Any], new: dict[str, Any], at: Where, mode: str, depth: int) -> None:
    old_props, new_props = old.get("properties") or {}, new.get("properties") or {}
    old_required, new_required = set(old.get("required") or ()), set(new.get("required") or ())
    for name in sorted(old_props.keys() - new_props.keys()):
        at.at(f".{name}").add(True, "field removed")
    for name in sorted(new_props.keys() - old_props.keys()):
        required = name in new_required
        at.at(f".{name}").add(mode == "in" and required,
                              f"field is new{' and required' if mode == 'in' and required else ''}")
    for name in sorted(old_props.keys() & new_props.keys()):
        field = at.at(f".{name}")
        if name in new_required and name not in old_required:
            field.add(mode == "in", "field is now required")
        elif name in old_required and name not in new_required:
            field.add(mode == "out", "field is now optional" + (" (may be missing)" if mode == "out" else ""))
        _schema(old_props[name], new_props[name], field, mode, depth + 1)
    closed = old.get("additionalProperties") is not False and new.get("additionalProperties") is False
    if mode == "in" and closed:
        at.add(True, "unknown fields are now refused")


def _enum(old: dict[str, Any], new: dict[str, Any], at: Where, mode: str) -> None:
    old_values, new_values = _enum_values(old), _enum_values(new)
    if old_values == new_values:
        return
    if old_values is None or new_values is None:
        narrowed = new_values is not None
        at.add(narrowed == (mode == "in"), f"{'now limited to' if narrowed else 'no longer limited to'} "
                                          f"{_values(new_values or old_values or set())}")
        return
    if old_values - new_values:
        at.add(mode == "in", f"values removed: {_values(old_values - new_values)}")
    if new_values - old_values:
        at.add(mode == "out", f"values added: {_values(new_values - old_values)}")


def _values(values: set[str]) -> str:
    return ", ".join(sorted(values))


def _format(old: dict[str, Any], new: dict[str, Any], at: Where, mode: str) -> None:
    before, after = _option(old, "string").get("format"), _option(new, "string").get("format")
    if before == after:
        return
    if before and after:
        at.add(True, f"format {before} -> {after}")
    else:  # a format added narrows what is accepted, one removed widens it
        at.add((after is not None) == (mode == "in"), f"format {before or 'none'} -> {after or 'none'}")


def _bounds(old: dict[str, Any], new: dict[str, Any], at: Where, mode: str) -> None:
    for key in (*_TIGHTER_WHEN_LARGER, *_TIGHTER_WHEN_SMALLER, "pattern"):
        before, after = _find(old, key), _find(new, key)
        if before == after:
            continue
        if key == "pattern":
            tighter = after is not None
            looser = before is not None
        elif before is None or after is None:
            tighter, looser = after is not None, before is not None
        else:
            tighter = after > before if key in _TIGHTER_WHEN_LARGER else after < before
            looser = not tighter
        change = f"{key} {'none' if before is None else json.dumps(before)} -> " \
                 f"{'none' if after is None else json.dumps(after)}"
        at.add(True if tighter and looser else tighter == (mode == "in"), change)


def _types(schema: dict[str, Any]) -> set[str] | None:
    """The JSON types a schema admits; None for any value."""
    if "enum" in schema and isinstance(schema["enum"], list):
        return {json_type_of(value) for value in schema["enum"]}
    if "const" in schema:
        return {json_type_of(schema["const"])}
    declared = schema.get("type")
    if isinstance(declared, str):
        found = {declared}
    elif isinstance(declared, list):
        found = {str(t) for t in declared}
    elif isinstance(schema.get("anyOf"), list) or isinstance(schema.get("oneOf"), list):
        found = set()
        for option in schema.get("anyOf") or schema.get("oneOf") or ():
            option_types = _types(option) if isinstance(option, dict) else None
            if option_types is None:
                return None
            found |= option_types
    else:
        return None
    if "number" in found:
        found.add("integer")
    return found


def _option(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    """The part of a schema for one JSON type (``X | None``: the X)."""
    for option in schema.get("anyOf") or schema.get("oneOf") or ():
        if isinstance(option, dict) and kind in (_types(option) or ()):
            return option
    return schema


def _find(schema: dict[str, Any], key: str) -> Any:
    if key in schema:
        return schema[key]
    for option in schema.get("anyOf") or ():
        if isinstance(option, dict) and key in option:
            return option[key]
    return None


def _enum_values(schema: dict[str, Any]) -> set[str] | None:
    for candidate in (schema, *(schema.get("anyOf") or ())):
        if isinstance(candidate, dict) and isinstance(candidate.get("enum"), list):
            return {json.dumps(value, sort_keys=True) for value in candidate["enum"]}
    return None



def _show(types: set[str] | None) -> str:
    if types is None:
        return "any"
    shown = sorted(types - {"integer"} if "number" in types else types)
    return "|".join(shown)
