"""``ws_events``: which of a service's events WebSocket clients of the bridge may subscribe to.

Route-like (as ``@rpc(roles=...)``), on the service class, and announced in its
descriptor, since the bridge holds no service code::

    class OrdersService:
        name = "orders"
        ws_events = {
            "order_paid": ["customer", "support"],   # callers with one of these roles
            "order_created": [],                     # any authenticated caller
        }

An event not listed is never pushed to a socket. Wire form (descriptor key ``ws_events``,
present only when declared)::

    "ws_events": [{"event": "order_paid", "roles": ["customer", "support"]}]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigError

MAX_WS_EVENTS = 256  # per service: what one descriptor may declare
MAX_EVENT_NAME = 200


@dataclass(frozen=True, slots=True)
class WsEvent:
    """One event type a service lets WebSocket clients subscribe to, and the roles that may."""

    event: str
    roles: tuple[str, ...] = ()


def declared_ws_events(service_cls: type) -> list[dict[str, Any]]:
    """The wire form of ``service_cls.ws_events``; ConfigError naming what is wrong."""
    table = getattr(service_cls, "ws_events", None)
    if table is None:
        return []
    where = f"{service_cls.__name__}.ws_events"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a dict of event type -> list of roles")
    if len(table) > MAX_WS_EVENTS:
        raise ConfigError(f"{where} declares {len(table)} events; at most {MAX_WS_EVENTS}")
    out = []
    for event, roles in table.items():
        if not isinstance(event, str) or not 0 < len(event) <= MAX_EVENT_NAME:
            raise ConfigError(f"{where}: {event!r} is not an event type (1..{MAX_EVENT_NAME} characters)")
        if not isinstance(roles, list | tuple) or not all(isinstance(r, str) and r for r in roles):
            raise ConfigError(f"{where}[{event!r}] must be a list of role names ([] for any "
                              f"authenticated caller), got {roles!r}")
        out.append({"event": event, "roles": sorted(set(roles))})
    return sorted(out, key=lambda item: item["event"])


def parse_ws_events(service: str, data: Any) -> tuple[WsEvent, ...]:
    """The ``ws_events`` of a descriptor from the wire; ValueError with the reason."""
    if data is None:
        return ()
    if not isinstance(data, list) or len(data) > MAX_WS_EVENTS:
        raise ValueError(f"{service}: ws_events must be a list of at most {MAX_WS_EVENTS} objects")
    events = []
    for item in data:
        if not isinstance(item, dict):
            raise ValueError(f"{service}: each ws_events entry must be an object")
        event, roles = item.get("event"), item.get("roles") or []
        if not isinstance(event, str) or not 0 < len(event) <= MAX_EVENT_NAME:
            raise ValueError(f"{service}: ws_events entries need an event name "
                             f"(1..{MAX_EVENT_NAME} characters)")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise ValueError(f"{service}: ws_events[{event!r}]: roles must be a list of strings")
        events.append(WsEvent(event, tuple(roles)))
    return tuple(events)
