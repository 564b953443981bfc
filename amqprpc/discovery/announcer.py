"""Every container announces itself on the bus: at start, every few seconds, and on stop.

Topology::

    container --(rk "<service>.<event>")--> [amqprpc.discovery, topic, durable]
        --("#")--> exclusive queue of each ServiceRegistry (the bridge, `amqprpc services`)

Events: ``up`` after every (re)connect, once the service queue is declared and consumed
(so a registry that sees ``up`` can call at once); ``alive`` every ``discovery_interval``
seconds; ``down`` as the container stops taking calls (graceful stop or kill). Messages
are transient and expire after three intervals, so nothing stale piles up in a slow
registry's queue. A registry forgets an instance that misses about three ``alive``s.

The announcer publishes on the container's own connection: no extra connection, and a
container that lost its broker stops announcing by itself.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from importlib import metadata
from typing import Any

from ..extensions import Extension
from ..messages import Outgoing
from ..serialization import JSON, codec_for
from .descriptor import build_descriptor

_log = logging.getLogger(__name__)

DISCOVERY_EXCHANGE = "amqprpc.discovery"
DEFAULT_INTERVAL = 2.0


class ServiceAnnouncer(Extension):
    """Publishes the container's service descriptor (a shared extension, one per container)."""

    def __init__(self) -> None:
        self.instance_id = uuid.uuid4().hex
        self._stopping = False
        self._beating = False

    def setup(self) -> None:
        container = self.container
        self.interval = float(getattr(container.config, "discovery_interval", DEFAULT_INTERVAL))
        self._connection = container.connection
        if self.interval <= 0:  # discovery turned off: announce nothing
            self._stopping = True
        self._codec = codec_for(JSON)
        # Built once, at start: a bad ``http=`` binding is a ConfigError now, not later.
        self._descriptor = build_descriptor(
            container,
            event="up",
            instance=self.instance_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=time.time(),
            sent_at=time.time(),
            interval=self.interval,
            amqprpc_version=_package_version(),
        )
        self._connection.on_connect(self._on_connect)

    def start(self) -> None:
        if not self._stopping and not self._beating:
            self._beating = True
            self._connection.call_later(self.interval, self._beat)

    def stop(self) -> None:
        """Say ``down`` first, so registries route no new call here while we drain."""
        if not self._stopping and getattr(self, "interval", 0) > 0:
            self._stopping = True
            self._announce("down")

    def kill(self) -> None:
        self.stop()

    @property
    def descriptor(self) -> dict[str, Any]:
        """The descriptor as last built (event ``up``); for tests and ``amqprpc services``."""
        return dict(self._descriptor)

    # ------------------------------------------------------------ I/O thread

    def _on_connect(self, channel: Any) -> None:
        channel.exchange_declare(DISCOVERY_EXCHANGE, "topic", durable=True, auto_delete=False)
        if not self._stopping:
            self._announce("up")

    def _beat(self) -> None:
        if self._stopping:
            return
        if self._connection.is_connected:
            self._announce("alive")
        self._connection.call_later(self.interval, self._beat)

    # ------------------------------------------------------------ any thread

    def _announce(self, event: str) -> None:
        payload = {**self._descriptor, "event": event, "sent_at": time.time()}
        ttl_ms = max(1000, int(self.interval * 3000))
        message = Outgoing(
            DISCOVERY_EXCHANGE,
            f"{self._descriptor['service']}.{event}",
            self._codec.dumps(payload),
            {
                "content_type": self._codec.content_type,
                "content_encoding": self._codec.content_encoding,
                "delivery_mode": 1,
                "expiration": str(ttl_ms),
            },
        )
        self._connection.publish(message)


def _package_version() -> str | None:
    try:
        return metadata.version("amqprpc")
    except metadata.PackageNotFoundError:
        return None
