"""A service's contract as data: what callers may rely on, from its descriptor.

The contract of a set of services is one JSON document (``amqprpc contract dump``)::

    {"amqprpc_contract": 1,
     "services": {"orders": {"methods": {"create": {"params": [...], "returns": {...},
                                                    "http": "POST /orders", "roles": [], "public": false,
                                                    "variadic_keywords": false}},
                             "dispatches": {"order_created": {...payload schema...}},
                             "handles": [{"source", "event", "handler_type", "method", "schema"}]}}}

It comes from live descriptors (what the running instances announce) or offline, from
the service classes of a module, built exactly as a worker would announce them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..containers import service_name_of
from ..discovery import MethodDescriptor, ServiceDescriptor, build_descriptor, parse_descriptor
from ..exceptions import ConfigError
from ..extensions import Entrypoint, entrypoints_of

CONTRACT_VERSION = 1


def describe_offline(service_cls: type) -> ServiceDescriptor:
    """The descriptor a worker of ``service_cls`` would announce, without a broker."""
    offline: Any = _Offline(service_cls)  # the attributes build_descriptor reads, nothing more
    return parse_descriptor(build_descriptor(
        offline, event="up", instance="offline", host="", pid=0, started_at=0.0,
        sent_at=0.0, interval=1.0, amqprpc_version=None))


def contract_of(descriptors: Iterable[ServiceDescriptor]) -> dict[str, Any]:
    """The contract document of these services (one descriptor per service)."""
    ordered = sorted(descriptors, key=lambda d: d.service)
    services = {d.service: service_contract(d) for d in ordered}
    return {"amqprpc_contract": CONTRACT_VERSION, "services": services}


def service_contract(descriptor: ServiceDescriptor) -> dict[str, Any]:
    events = descriptor.events or {}
    return {
        "version": descriptor.version,
        "methods": {m.name: method_contract(m) for m in sorted(descriptor.methods, key=lambda m: m.name)},
        "errors": dict(sorted(descriptor.errors.items())),
        "dispatches": {row["event"]: row.get("schema", {}) for row in events.get("dispatches", [])},
        "handles": list(events.get("handles", [])),
    }


def method_contract(method: MethodDescriptor) -> dict[str, Any]:
    params = []
    for param in method.params:
        entry: dict[str, Any] = {"name": param.name, "schema": param.schema, "required": param.required}
        if param.has_default:
            entry["default"] = param.default
        if param.positional_only:
            entry["positional_only"] = True
        params.append(entry)
    return {"params": params, "returns": method.returns,
            "http": str(method.http) if method.http else None,
            "roles": sorted(method.roles), "public": method.public,
            "variadic_keywords": method.variadic_keywords}


def load_contract(path: str | Path) -> dict[str, Any]:
    """A contract document from a file; ConfigError naming what is wrong."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read a contract: {exc}") from None
    if not isinstance(data, dict) or data.get("amqprpc_contract") != CONTRACT_VERSION or \
            not isinstance(data.get("services"), dict):
        raise ConfigError(f"{path}: not an amqprpc contract (made by `amqprpc contract dump`)")
    return data


class _Offline:
    """The part of a container ``build_descriptor`` reads, for a class that is not running."""

    def __init__(self, service_cls: type) -> None:
        self.service_cls = service_cls
        self.service_name = service_name_of(service_cls)
        self.entrypoints: list[Entrypoint] = []
        for attr in sorted(dir(service_cls)):
            if attr.startswith("_"):
                continue
            for entrypoint in entrypoints_of(getattr(service_cls, attr, None)):
                self.entrypoints.append(entrypoint.bind_method(self, attr))  # type: ignore[arg-type]
        if not self.entrypoints:
            raise ConfigError(f"{service_cls.__name__} has no entrypoints")
