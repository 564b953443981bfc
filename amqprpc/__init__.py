"""amqprpc: microservices that talk RPC and events over RabbitMQ, wire-compatible with Nameko.

Importing this package is inert: it opens no connection, reads no environment, configures
no logging and imports no optional dependency (SQLAlchemy, pymongo, aiohttp, click).
"""

from ._version import __version__ as __version__  # not in __all__: `amqprpc.__version__`
from .calls import RpcFuture
from .client import AsyncRpcClient, ClusterRpcClient
from .config import Config
from .containers import ServiceContainer, WorkerContext
from .dependencies.context import CallContext
from .dependencies.events import EventDispatcher
from .dependencies.rpc import RpcProxy
from .dependencies.topic import TopicPublisher
from .discovery import ServiceRegistry
from .entrypoints.events import EventHandler, event_handler
from .entrypoints.rpc import Rpc, rpc
from .entrypoints.timer import Timer, timer
from .entrypoints.topic import TopicHandler, topic_handler
from .exceptions import (
    AmqpRpcError,
    BrokerBlocked,
    BrokerError,
    BrokerUnreachable,
    CallCancelled,
    CircuitOpen,
    ConfigError,
    ConfirmTimeout,
    ConnectionLost,
    IdentityRefused,
    IncorrectSignature,
    MalformedRequest,
    MethodNotFound,
    RemoteError,
    RequestError,
    RpcTimeout,
    ServiceOverloaded,
    ServiceUnavailable,
    UnknownService,
    ValidationError,
    remote_error,
)
from .extensions import DependencyProvider, Entrypoint, Extension
from .publisher import EventPublisher, dispatch_event
from .runner import ServiceRunner
from .serialization import DecodeLimits
from .subscriber import EventSubscriber
from .topology import BROADCAST, SERVICE_POOL, SINGLETON

__all__ = [  # noqa: RUF022 (plain sorted(), as tests/unit/test_public_api.py checks)
    "AmqpRpcError",
    "AsyncRpcClient",
    "BROADCAST",
    "BrokerBlocked",
    "BrokerError",
    "BrokerUnreachable",
    "CallCancelled",
    "CallContext",
    "CircuitOpen",
    "ClusterRpcClient",
    "Config",
    "ConfigError",
    "ConfirmTimeout",
    "ConnectionLost",
    "Database",
    "DecodeLimits",
    "DependencyProvider",
    "Entrypoint",
    "EventDispatcher",
    "EventHandler",
    "EventPublisher",
    "EventSubscriber",
    "Extension",
    "IdentityRefused",
    "IncorrectSignature",
    "MalformedRequest",
    "MethodNotFound",
    "Mongo",
    "RemoteError",
    "RequestError",
    "Rpc",
    "RpcFuture",
    "RpcProxy",
    "RpcTimeout",
    "SERVICE_POOL",
    "SINGLETON",
    "ServiceContainer",
    "ServiceOverloaded",
    "ServiceRegistry",
    "ServiceRunner",
    "ServiceUnavailable",
    "Timer",
    "TopicHandler",
    "TopicPublisher",
    "UnknownService",
    "ValidationError",
    "WorkerContext",
    "dispatch_event",
    "event_handler",
    "remote_error",
    "rpc",
    "timer",
    "topic_handler",
]

# Dependencies with heavy optional requirements load on first use, so `import amqprpc`
# never imports SQLAlchemy or pymongo: `from amqprpc import Database` does.
_LAZY = {
    "Database": "amqprpc.dependencies.sqlalchemy",
    "Mongo": "amqprpc.dependencies.mongo",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'amqprpc' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
