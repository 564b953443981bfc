"""``amqprpc services``: the services running on the bus, from their announcements."""

from __future__ import annotations

import json
from typing import Any

import click

from ..discovery import ServiceRegistry, ServiceView
from ..discovery.schema import Schema
from . import _build_config, _friendly, broker_option, config_option


@click.command()
@broker_option
@config_option
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), metavar="SECONDS",
              help="How long to listen before printing (default: 1.25 x discovery_interval, "
                   "long enough for every running instance to announce itself).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def services(broker_url: str | None, config_path: str | None, wait_seconds: float | None,
             as_json: bool) -> None:
    """List services, their live instances, methods and HTTP routes."""
    config = _build_config(config_path, broker_url=broker_url)
    registry = ServiceRegistry(config)
    _friendly(registry.start)
    try:
        wait = config.discovery_interval * 1.25 if wait_seconds is None else wait_seconds
        registry.wait_for(lambda r: False, wait)  # listen for one full heartbeat round
        views = registry.services()
    finally:
        registry.stop()
    if as_json:
        click.echo(json.dumps([_as_dict(view) for view in views], indent=2))
        return
    if not views:
        click.echo("no service announced itself (are workers running, on this broker?)")
        return
    for view in views:
        click.echo(_headline(view))
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


def _headline(view: ServiceView) -> str:
    if not view.instances:
        return f"{view.name}  (no live instance)"
    hosts = ", ".join(f"{d.host}:{d.pid}" for d in view.instances)
    version = f"  version {view.version}" if view.version else ""
    return f"{view.name}  {len(view.instances)} instance(s): {hosts}{version}"


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
