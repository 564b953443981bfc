"""Service discovery on the bus: descriptors, the announcer every container runs, the registry.

The names below are the descriptor API, the one the bridge and other tools build on:
``ServiceRegistry`` (a live view of the services announced), ``ServiceView``, the
descriptor values (``ServiceDescriptor``, ``MethodDescriptor``, ``ParamDescriptor``,
``HttpBinding``), ``build_descriptor``/``parse_descriptor`` for each side of the wire, and
``schema_of``/``Schema`` for type hints as JSON Schema, and what instances send
besides (``InstanceExtras``, ``MethodStats``: the dashboard's call stats). The submodules are internals. The
runner installs ``ServiceAnnouncer`` in every container it runs. The wire format is pinned
in docs/protocol.md ("Service discovery").
"""

from .announcer import DISCOVERY_EXCHANGE, ServiceAnnouncer
from .descriptor import (
    DescriptorError,
    HttpBinding,
    MethodDescriptor,
    ParamDescriptor,
    ServiceDescriptor,
    build_descriptor,
    parse_descriptor,
    parse_http_binding,
)
from .registry import ServiceRegistry, ServiceView
from .schema import Schema, json_type_of, schema_of
from .stats import InstanceExtras, MethodStats
from .ws_events import WsEvent

__all__ = [
    "DISCOVERY_EXCHANGE",
    "DescriptorError",
    "HttpBinding",
    "InstanceExtras",
    "MethodDescriptor",
    "MethodStats",
    "ParamDescriptor",
    "Schema",
    "ServiceAnnouncer",
    "ServiceDescriptor",
    "ServiceRegistry",
    "ServiceView",
    "WsEvent",
    "build_descriptor",
    "json_type_of",
    "parse_descriptor",
    "parse_http_binding",
    "schema_of",
]
