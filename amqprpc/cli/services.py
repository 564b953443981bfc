"""``amqprpc services``: the services running on the bus, from their announcements.

A service none of whose instances has been heard from for longer than ``--down-for``
(default: the ``discovery_hide_after`` setting, 10 minutes) is hidden, so a shared
broker's leftovers from other people's runs do not crowd the list; ``--all`` shows them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import click

from ..discovery import ServiceRegistry, ServiceView
from ..discovery.schema import Schema
from ..resilience.announce import BreakerStates, BreakerStateView
from ..routing import RouteRule, rules_from_config
from . import _build_config, _friendly, broker_option, config_option


@click.command()
@broker_option
@config_option
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), metavar="SECONDS",
              help="How long to listen before printing (default: 1.25 x discovery_interval, "
                   "long enough for every running instance to announce itself).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--down-for", "down_for", metavar="DURATION", callback=lambda ctx, param, value: (
                  None if value is None else parse_duration(value)),
              help="Hide services with no instance heard from for longer than this: 90s, 10m, "
                   "1h (default: the discovery_hide_after setting, 10m).")
@click.option("--all", "show_all", is_flag=True, help="Also list services that are long gone.")
def services(broker_url: str | None, config_path: str | None, wait_seconds: float | None,
             as_json: bool, down_for: float | None, show_all: bool) -> None:
    """List services, their live instances, methods and HTTP routes."""
    config = _build_config(config_path, broker_url=broker_url)
    window = config.discovery_hide_after if down_for is None else down_for
    registry = ServiceRegistry(config)
    breakers = BreakerStates(config)  # callers' circuit breakers that are not closed
    _friendly(registry.start)
    _friendly(breakers.start)
    try:
        wait = config.discovery_interval * 1.25 if wait_seconds is None else wait_seconds
        registry.wait_for(lambda r: False, wait)  # listen for one full heartbeat round
        views, hidden = select(registry.services(), None if show_all else window)
    finally:
        registry.stop()
        breakers.stop()
    rules = rules_from_config(config.extra.get("routing"))
    if as_json:
        unannounced = sorted(breakers.services() - {view.name for view in views})
        click.echo(json.dumps([{**_as_dict(view), "routing": (
            rules[view.name].as_dict() if view.name in rules else None), "breakers": [
            _breaker_dict(b) for b in breakers.of(view.name)]} for view in views] + [
            {"service": name, "version": None, "down_for": None, "instances": [], "methods": [],
             "breakers": [_breaker_dict(b) for b in breakers.of(name)]} for name in unannounced],
            indent=2))
        return
    if not views:
        click.echo("no service announced itself (are workers running, on this broker?)")
    for view in views:
        click.echo(_headline(view))
        if view.name in rules:
            click.echo(f"  {routing_line(rules[view.name])}")
        for state in breakers.of(view.name):
            click.echo(f"  {_breaker_line(state)}")
        width = max((len(m.name) for m in view.methods), default=0)
        for method in view.methods:
            route = str(method.http) if method.http else "-"
            access = "public" if method.public else (
                "roles: " + ",".join(method.roles) if method.roles else "authenticated")
            if not method.http:
                access = ""
            signature = ", ".join(
                f"{p.name}: {_type(p.schema)}" + ("" if p.required else "?") for p in method.params)
            click.echo(f"  {method.name:<{width}}  ({signature}) -> {_type(method.returns)}")
            click.echo(f"  {'':<{width}}  http: {route}  {access}".rstrip())
    for name in sorted(breakers.services() - {view.name for view in views}):
        click.echo(f"{name}  (not announced)")
        for state in breakers.of(name):
            click.echo(f"  {_breaker_line(state)}")
    if hidden:
        click.echo(f"({hidden} service(s) gone for longer than {format_duration(window)} not shown; "
                   "--all shows them)")


def select(views: Sequence[ServiceView], window: float | None) -> tuple[list[ServiceView], int]:
    """The views to list (live, or gone for at most ``window`` seconds; None: all) and how
    many were left out."""
    shown = [view for view in views if window is None or view.down_for <= window]
    return shown, len(views) - len(shown)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1.5h``, ``2d`` -> seconds; BadParameter otherwise."""
    found = _DURATION.match(text)
    if found is None:
        raise click.BadParameter(f"expected a duration such as 90s, 10m or 1h, got {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2) or "s"]


def format_duration(seconds: float) -> str:
    """The shortest of ``45s``, ``10m``, ``2h``, ``3d`` that says it (rounded down)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _headline(view: ServiceView) -> str:
    if not view.instances:
        return f"{view.name}  (no live instance; last heard {format_duration(view.down_for)} ago)"
    hosts = ", ".join(f"{d.host}:{d.pid}" for d in view.instances)
    return f"{view.name}  {len(view.instances)} instance(s): {hosts}{_versions(view)}"


def _versions(view: ServiceView) -> str:
    """``  versions 2.0.0 x2, 2.1.0 x1`` (one version: ``  version 2.0.0``)."""
    counts = Counter(d.version for d in view.instances if d.version)
    if len(counts) <= 1:
        return f"  version {view.version}" if view.version else ""
    return "  versions " + ", ".join(f"{version} x{count}" for version, count in sorted(counts.items()))


def routing_line(rule: RouteRule) -> str:
    """How this process's config routes the service's calls (live rules are not retained)."""
    sticky = f", sticky by {rule.sticky}" if rule.sticky else ""
    return (f"routing (config): {rule.weight:.0%} of calls to {rule.canary}{sticky}, "
            f"{1 - rule.weight:.0%} to the shared queue")


def _breaker_line(state: BreakerStateView) -> str:
    method = "" if state.method == "*" else f" ({state.method})"
    return (f"breaker{method} {state.state} at {state.owner} on {state.host}:{state.pid}: "
            f"{state.reason}; next trial in {state.retry_after:.1f}s")


def _breaker_dict(state: BreakerStateView) -> dict[str, Any]:
    return {"owner": state.owner, "host": state.host, "pid": state.pid, "method": state.method,
            "state": state.state, "reason": state.reason, "retry_after": state.retry_after}


def _type(schema: Schema) -> str:
    """A short, readable name for a JSON Schema."""
    if not schema:
        return "any"
    if "anyOf" in schema:
        return " | ".join(_type(option) for option in schema["anyOf"])
    if "enum" in schema:
        return "enum"
    kind = schema.get("type", "any")
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"array[{_type(schema['items'])}]"
    return str(kind)


def _as_dict(view: ServiceView) -> dict[str, Any]:
    return {
        "service": view.name,
        "version": view.version,
        "down_for": round(view.down_for, 1),
        "instances": [{"instance": d.instance, "host": d.host, "pid": d.pid, "version": d.version}
                      for d in view.instances],
        "methods": [{
            "name": m.name,
            "params": [{"name": p.name, "schema": p.schema, "required": p.required} for p in m.params],
            "returns": m.returns,
            "http": str(m.http) if m.http else None,
            "roles": list(m.roles),
            "public": m.public,
        } for m in view.methods],
    }
