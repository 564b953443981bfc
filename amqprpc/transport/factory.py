"""The one place a broker connection is built: ``create_transport(config or url, name=...)``."""

from __future__ import annotations

from typing import Protocol

from .base import Transport

__all__ = ["TransportSettings", "create_transport"]

MEMORY_SCHEME = "memory://"


class TransportSettings(Protocol):
    """What a transport takes from a ``Config``."""

    @property
    def broker_url(self) -> str: ...
    @property
    def heartbeat(self) -> float: ...
    @property
    def connect_timeout(self) -> float: ...


def create_transport(settings: TransportSettings | str, *, name: str, confirms: bool = True,
                     heartbeat: float | None = None, connect_timeout: float | None = None,
                     max_backoff: float = 10.0) -> Transport:
    """A transport for ``settings`` (a ``Config``, or a broker URL with the defaults).

    ``memory://[name]`` gives an in-memory transport (for tests); any other URL RabbitMQ
    over py-amqp. Not started: the owner calls ``start``.
    """
    if isinstance(settings, str):
        url, beat, timeout = settings, 20.0, 5.0
    else:
        url, beat, timeout = settings.broker_url, settings.heartbeat, settings.connect_timeout
    beat = beat if heartbeat is None else heartbeat
    timeout = timeout if connect_timeout is None else connect_timeout
    if url.startswith(MEMORY_SCHEME):
        from .memory import MemoryTransport  # product code, but only tests pay for its import

        return MemoryTransport(url, name=name, heartbeat=beat, connect_timeout=timeout,
                               confirms=confirms, max_backoff=max_backoff)
    from .pyamqp import AmqpTransport

    return AmqpTransport(url, name=name, heartbeat=beat, connect_timeout=timeout,
                         confirms=confirms, max_backoff=max_backoff)
