"""Service discovery on the bus: descriptors, the announcer every container runs, the registry.

The wire format is pinned in docs/protocol.md ("Service discovery").
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
from .schema import schema_of

__all__ = [
    "DISCOVERY_EXCHANGE",
    "DescriptorError",
    "HttpBinding",
    "MethodDescriptor",
    "ParamDescriptor",
    "ServiceAnnouncer",
    "ServiceDescriptor",
    "ServiceRegistry",
    "ServiceView",
    "build_descriptor",
    "parse_descriptor",
    "parse_http_binding",
    "schema_of",
]
