"""Every container announces itself on the bus: at start, every few seconds, and on stop.

Topology::

    container --(rk "<service>.<event>")--> [amqprpc.discovery, topic, durable]
        --("#")--> exclusive queue of each ServiceRegistry (the bridge, `amqprpc services`)

Each ``up`` and ``alive`` also carries the instance's call stats of the last minute
(``stats.py``), the queues it consumes and its circuit breakers' states, for the bridge's
dashboard; a registry that does not know these keys ignores them.

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
from typing import Any

from .._version import __version__
from ..entrypoints.rpc import Rpc
from ..exceptions import ConfigError
from ..extensions import ExcInfo, Extension, WorkerContext
from ..serialization import JSON, codec_for
from ..topology import DISCOVERY
from ..transport import Outgoing
from ..transport.address import parse_broker_urls
from .descriptor import build_descriptor
from .stats import CallStats
from .trust import SIGNATURE_HEADER, AnnouncementSigner, parse_owners

_log = logging.getLogger(__name__)

DISCOVERY_EXCHANGE = DISCOVERY.name
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
        config = container.config
        self._signer = AnnouncementSigner.from_setting(getattr(config, "discovery_key", ""))
        # Where the registries require an owner for this service, say who we are: the broker
        # checks user_id against our login, so it cannot be claimed by anyone else.
        owner = parse_owners(getattr(config, "discovery_owners", "")).get(container.service_name)
        self._user_id = _broker_user(config.broker_url, container.service_name) if owner else None
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
            amqprpc_version=__version__,
        )
        self.stats = CallStats()
        observers = getattr(container, "worker_observers", None)  # ServiceContainer's; not the protocol's
        if isinstance(observers, list) and not self._stopping:  # announcing off: no per-call work
            observers.append(self._observe)
        self._connection.declare(DISCOVERY)
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

    def _observe(self, worker_ctx: WorkerContext, result: Any, exc_info: ExcInfo) -> None:
        """A worker observer: every finished call goes into the stats window (tiny)."""
        self.stats.record(worker_ctx.entrypoint.method_name,
                          time.perf_counter() - worker_ctx.started, exc_info is None)

    def _extras(self) -> dict[str, Any]:
        """What the dashboard reads besides the descriptor: stats, queues, breakers."""
        container = self.container
        queues: list[str] = []
        if any(isinstance(entrypoint, Rpc) for entrypoint in container.entrypoints):
            queues.append(f"rpc-{container.service_name}")
        for extension in container.entrypoints:
            for attr in ("queue_name", "dead_letter_queue_name"):
                name = getattr(extension, attr, "")
                if isinstance(name, str) and name and name not in queues:
                    queues.append(name)
        breakers: list[dict[str, Any]] = []
        for dependency in container.dependencies.values():
            states = getattr(dependency, "breaker_states", None)
            if callable(states):
                try:
                    breakers.extend(states())
                except Exception:
                    _log.exception("breaker_states() of %r failed", dependency)
        return {"stats": self.stats.snapshot(), "queues": queues, "breakers": breakers}

    # ------------------------------------------------------------ I/O thread

    def _on_connect(self) -> None:
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
        if event != "down":
            payload.update(self._extras())
        ttl_ms = max(1000, int(self.interval * 3000))
        routing_key = f"{self._descriptor['service']}.{event}"
        body = self._codec.dumps(payload)
        properties: dict[str, Any] = {
            "content_type": self._codec.content_type,
            "content_encoding": self._codec.content_encoding,
            "delivery_mode": 1,
            "expiration": str(ttl_ms),
        }
        if self._signer is not None:
            signature = self._signer.sign(routing_key, self._codec.content_type, body)
            properties["application_headers"] = {SIGNATURE_HEADER: signature}
        if self._user_id is not None:
            properties["user_id"] = self._user_id
        self._connection.publish(Outgoing(DISCOVERY_EXCHANGE, routing_key, body, properties))


def _broker_user(broker_url: str, service: str) -> str:
    """The login announcements are stamped with; it must be the one the broker verified."""
    address = parse_broker_urls(broker_url)[0]
    if address.tls is not None and address.tls.external_auth:
        # The user is the certificate's name, which we cannot know: a wrong user_id would
        # make the broker close the channel at every announcement.
        raise ConfigError(f"discovery_owners names {service!r}, but the broker URL logs in by "
                          "certificate (auth=external): log in with a user name for discovery "
                          "owners, or leave this service out of discovery_owners")
    return address.userid
