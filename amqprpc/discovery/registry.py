"""``ServiceRegistry``: a live view of the services on the bus, built from their announcements.

::

    registry = ServiceRegistry(config)
    registry.start()                      # its own connection and I/O thread
    registry.wait_for(lambda r: r.is_live("users"), timeout=5)
    view = registry.service("users")      # methods, HTTP bindings, live instances
    registry.stop()

An instance is live from its ``up`` or ``alive`` until its ``down``, or until it misses
about three heartbeats (``expire_beats`` x its announced interval, measured on this
process's clock, so senders' clock skew does not matter). A service with no live
instance stays known, with the methods it last had, for ``forget_after`` seconds: the
bridge answers 503 for it at once instead of 404. Its methods come from its most recently
started live instance (during a rolling deploy, the newest code wins).

A fresh registry knows only what is announced after it subscribed: it is complete one
heartbeat interval after it connected (``ready``).

Trust (see ``trust.py``): what arrives on the bus goes through ``receive``, which refuses
announcements that are unsigned or badly signed (when the registry has a signer), not from
the broker user that owns the service (``owners``), routed under another service's name,
or timed impossibly. Where live instances disagree about a method, the most restrictive
rule of theirs applies. ``ingest`` takes an announcement on trust: for tests and callers
that vouch for what they feed.

Besides descriptors, the registry keeps what each live instance last sent in its heartbeat
for the bridge's dashboard (``stats.py``): ``extras(service)``; and ``queue_info`` asks the
broker, on the registry's own connection, how deep a queue is.

Thread-safety: the I/O thread writes, any thread reads; a lock guards the state and
readers get immutable values. ``ingest()`` is public so a registry can be fed without a
broker (tests, other transports).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..exceptions import MalformedRequest
from ..serialization import DecodeLimits, decode
from ..topology import DISCOVERY
from ..transport import Binding, Delivery, Queue, QueueInfo, Transport, create_transport
from .announcer import DEFAULT_INTERVAL, DISCOVERY_EXCHANGE
from .descriptor import DescriptorError, MethodDescriptor, ServiceDescriptor, parse_descriptor
from .stats import NO_EXTRAS, InstanceExtras, parse_extras
from .trust import (
    DEFAULT_MAX_SKEW,
    SIGNATURE_HEADER,
    AnnouncementSigner,
    check_clock,
    narrowest,
    parse_owners,
)

_log = logging.getLogger(__name__)

Listener = Callable[["ServiceRegistry"], None]
_MAX_GONE = 4096  # ids of instances that said ``down``, so a late ``alive`` cannot revive them
_MAX_SERVICES = 10_000  # a hostile publisher cannot grow the registry without bound


@dataclass(frozen=True, slots=True)
class ServiceView:
    """A service as the registry sees it now."""

    name: str
    instances: tuple[ServiceDescriptor, ...]  # live ones, newest first
    methods: tuple[MethodDescriptor, ...]
    errors: dict[str, int]
    version: str | None
    down_for: float = 0.0  # seconds since an instance was last heard from; 0 while live

    @property
    def is_live(self) -> bool:
        return bool(self.instances)

    def method(self, name: str) -> MethodDescriptor | None:
        for method in self.methods:
            if method.name == name:
                return method
        return None


class _Instance:
    __slots__ = ("descriptor", "expires_at", "extras")

    def __init__(self, descriptor: ServiceDescriptor, expires_at: float,
                 extras: InstanceExtras = NO_EXTRAS) -> None:
        self.descriptor = descriptor
        self.expires_at = expires_at
        self.extras = extras


class _Service:
    __slots__ = ("errors", "instances", "last", "last_live_at", "methods")

    def __init__(self) -> None:
        self.instances: dict[str, _Instance] = {}
        self.last: ServiceDescriptor | None = None  # the representative descriptor
        self.methods: tuple[MethodDescriptor, ...] = ()  # its methods, narrowed by the others
        self.errors: dict[str, int] = {}
        self.last_live_at = 0.0


class ServiceRegistry:
    """Consumes service announcements into a live view; see the module docstring."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        expire_beats: float = 3.5,
        forget_after: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
        signer: AnnouncementSigner | None = None,
        owners: Mapping[str, str] | None = None,
        max_skew: float | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or Config()
        self._limits = DecodeLimits.from_config(self.config)
        self.expire_beats = expire_beats
        self.forget_after = forget_after
        settings = self.config
        self.signer = signer or AnnouncementSigner.from_setting(getattr(settings, "discovery_key", ""))
        # service -> the broker user that alone may announce it
        self.owners = dict(owners) if owners is not None else parse_owners(
            getattr(settings, "discovery_owners", ""))
        self.max_skew = max_skew if max_skew is not None else float(
            getattr(settings, "discovery_max_skew", DEFAULT_MAX_SKEW))
        self._clock = clock
        self._wall_clock = wall_clock
        self._name = name or f"registry-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._services: OrderedDict[str, _Service] = OrderedDict()
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._listeners: list[Listener] = []
        self._generation = 0
        self._connection: Transport | None = None
        self._subscribed_at: float | None = None
        self._sweeping = False

    # ------------------------------------------------------------ lifecycle

    def start(self, wait: bool = True) -> None:
        """Connect and subscribe; with ``wait``, raise BrokerUnreachable if the broker is down."""
        if self.signer is None:
            _log.warning("discovery announcements are not authenticated: anyone who can publish "
                         "on %s can change routes and roles; set discovery_key (docs/production.md)",
                         DISCOVERY_EXCHANGE)
        connection = create_transport(self.config, name=self._name, confirms=False)
        queue = f"amqprpc.registry-{self._name}"  # this registry's own: gone when it stops
        connection.declare(DISCOVERY, Queue(queue, durable=False, exclusive=True, auto_delete=True,
                                            arguments={"x-max-length": 10_000}),
                           Binding(queue, DISCOVERY.name, "#"))
        connection.consume(queue, self._on_delivery, no_ack=True)
        connection.on_connect(self._on_connect)
        connection.on_lost(self._on_lost)
        self._connection = connection
        connection.start(wait=wait)

    def stop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.stop()

    @property
    def is_connected(self) -> bool:
        return self._connection is not None and self._connection.is_connected

    @property
    def ready(self) -> bool:
        """Connected for a heartbeat interval: every running instance has announced itself."""
        subscribed = self._subscribed_at
        interval = float(getattr(self.config, "discovery_interval", DEFAULT_INTERVAL))
        return (self.is_connected and subscribed is not None
                and self._clock() - subscribed >= interval * 1.2)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(registry)`` after every change (on the thread that made it)."""
        self._listeners.append(listener)

    # ------------------------------------------------------------ reading

    @property
    def generation(self) -> int:
        """Bumped whenever a service appears, is forgotten, or its methods change."""
        return self._generation

    def service(self, name: str) -> ServiceView | None:
        with self._lock:
            state = self._services.get(name)
            return self._view(name, state, self._clock()) if state is not None else None

    def services(self) -> list[ServiceView]:
        """Every known service (live or not), by name."""
        with self._lock:
            now = self._clock()
            return [self._view(name, state, now) for name, state in sorted(self._services.items())]

    def is_live(self, name: str) -> bool:
        """True if at least one instance of ``name`` is alive now."""
        with self._lock:
            state = self._services.get(name)
            if state is None:
                return False
            now = self._clock()
            return any(inst.expires_at > now for inst in state.instances.values())

    def is_idempotent(self, service: str, method: str) -> bool:
        """True if ``service`` announces ``method`` as ``@rpc(idempotent=True)`` (every live
        instance agreeing): a caller's retries look it up here (docs/resilience.md)."""
        view = self.service(service)
        found = view.method(method) if view is not None else None
        return found is not None and found.idempotent

    def extras(self, name: str) -> dict[str, InstanceExtras]:
        """What each live instance of ``name`` last sent besides its descriptor, by instance id."""
        with self._lock:
            state = self._services.get(name)
            if state is None:
                return {}
            now = self._clock()
            return {key: inst.extras for key, inst in state.instances.items() if inst.expires_at > now}

    def queue_info(self, queue: str, timeout: float = 2.0) -> QueueInfo | None:
        """Depth and consumers of ``queue`` (a passive declare; blocks up to ``timeout``).

        None when the queue does not exist or the registry is not connected.
        """
        connection = self._connection
        if connection is None or not connection.is_connected:
            return None
        return connection.queue_info(queue, timeout)

    def wait_for(self, predicate: Callable[[ServiceRegistry], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds (re-checked on every change); False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                self._changed.wait(min(remaining, 0.25))  # expiry is time-driven: re-check

    # ------------------------------------------------------------ writing

    def receive(self, body: bytes, routing_key: str, properties: Mapping[str, Any]) -> ServiceDescriptor:
        """Verify and apply one announcement from the bus; DescriptorError says why not."""
        content_type = properties.get("content_type") or "application/json"
        if self.signer is not None:
            headers = properties.get("application_headers") or {}
            self.signer.verify(headers.get(SIGNATURE_HEADER), routing_key, content_type, body)
        try:
            payload = decode(body, content_type, self._limits)
        except MalformedRequest as exc:
            raise DescriptorError(str(exc)) from None
        descriptor = parse_descriptor(payload)
        extras = parse_extras(payload)
        if routing_key != f"{descriptor.service}.{descriptor.event}":
            # Topic permissions grant a service's broker user its own routing keys only.
            raise DescriptorError(f"announcement for {descriptor.service!r} sent with routing key "
                                  f"{routing_key!r}")
        owner = self.owners.get(descriptor.service)
        if owner is not None and properties.get("user_id") != owner:
            raise DescriptorError(f"{descriptor.service!r} may only be announced by broker user "
                                  f"{owner!r}, not {properties.get('user_id')!r}")
        check_clock(descriptor, self._wall_clock(), self.max_skew)
        return self._ingest(descriptor, extras)

    def ingest(self, payload: dict[str, Any] | ServiceDescriptor) -> ServiceDescriptor:
        """Apply one announcement taken on trust; raises DescriptorError if it is malformed."""
        if isinstance(payload, ServiceDescriptor):
            return self._ingest(payload, NO_EXTRAS)
        return self._ingest(parse_descriptor(payload), parse_extras(payload))

    def _ingest(self, descriptor: ServiceDescriptor, extras: InstanceExtras) -> ServiceDescriptor:
        with self._changed:
            now = self._clock()
            changed = self._apply(descriptor, now, extras)
            self._changed.notify_all()
        if changed:
            self._notify()
        return descriptor

    def sweep(self) -> None:
        """Drop expired instances and long-dead services (runs on a timer once started)."""
        with self._changed:
            changed = self._sweep(self._clock())
            if changed:
                self._changed.notify_all()
        if changed:
            self._notify()

    def _apply(self, descriptor: ServiceDescriptor, now: float, extras: InstanceExtras = NO_EXTRAS) -> bool:
        instance_id = descriptor.instance
        state = self._services.get(descriptor.service)
        if descriptor.event == "down":
            self._gone[instance_id] = None
            while len(self._gone) > _MAX_GONE:
                self._gone.popitem(last=False)
            if state is None or state.instances.pop(instance_id, None) is None:
                return False
            return self._elect(state, now)
        if instance_id in self._gone:
            return False  # a heartbeat that overtook nothing: the instance already left
        if state is None:
            if len(self._services) >= _MAX_SERVICES:
                _log.warning("registry full (%d services): ignored %s", _MAX_SERVICES, descriptor.service)
                return False
            state = self._services[descriptor.service] = _Service()
        ttl = descriptor.interval * self.expire_beats
        known = state.instances.get(instance_id)
        state.instances[instance_id] = _Instance(descriptor, now + ttl, extras)
        state.last_live_at = now
        if known is not None and known.descriptor.methods == descriptor.methods:
            return False
        return self._elect(state, now) or known is None

    def _elect(self, state: _Service, now: float) -> bool:
        """Make the newest live instance the service's representative; True if methods changed."""
        live = [inst.descriptor for inst in state.instances.values() if inst.expires_at > now]
        if not live:
            return True  # liveness changed: listeners may want to know
        newest = max(live, key=lambda d: (d.started_at, d.instance))
        methods, conflicts = narrowest(newest.methods, [d.methods for d in live if d is not newest])
        for conflict in conflicts:
            _log.warning("%s.%s", newest.service, conflict)
        state.last = newest
        if methods != state.methods or newest.errors != state.errors:
            state.methods, state.errors = methods, dict(newest.errors)
            self._generation += 1
        return True

    def _sweep(self, now: float) -> bool:
        changed = False
        for name in list(self._services):
            state = self._services[name]
            expired = [key for key, inst in state.instances.items() if inst.expires_at <= now]
            for key in expired:
                del state.instances[key]
            if expired:
                changed = self._elect(state, now) or changed
            if not state.instances and now - state.last_live_at > self.forget_after:
                del self._services[name]
                self._generation += 1
                changed = True
        return changed

    def _view(self, name: str, state: _Service, now: float) -> ServiceView:
        live = sorted((inst.descriptor for inst in state.instances.values() if inst.expires_at > now),
                      key=lambda d: (d.started_at, d.instance), reverse=True)
        last = live[0] if live else state.last
        return ServiceView(
            name=name,
            instances=tuple(live),
            methods=state.methods,
            errors=dict(state.errors),
            version=last.version if last else None,
            down_for=0.0 if live else max(0.0, now - state.last_live_at),
        )

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener(self)
            except Exception:
                _log.exception("registry listener %r failed", listener)

    # ------------------------------------------------------------ I/O thread

    def _on_connect(self) -> None:
        connection = self._connection
        if connection is None:
            return  # stopped while the first connect was under way (start(wait=False))
        self._subscribed_at = self._clock()
        if not self._sweeping:
            self._sweeping = True
            connection.call_later(self._sweep_interval(), self._sweep_tick)

    def _on_lost(self, error: BaseException) -> None:
        self._subscribed_at = None  # the sweep timer survives reconnects: it is not re-armed

    def _sweep_interval(self) -> float:
        interval = float(getattr(self.config, "discovery_interval", DEFAULT_INTERVAL))
        return max(0.05, min(1.0, interval / 4))

    def _sweep_tick(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self.sweep()
        connection.call_later(self._sweep_interval(), self._sweep_tick)

    def _on_delivery(self, delivery: Delivery) -> None:
        try:
            self.receive(delivery.body, delivery.routing_key, delivery.properties)
        except DescriptorError as exc:
            _log.warning("ignored a bad announcement on %s (%s): %s",
                         DISCOVERY_EXCHANGE, delivery.routing_key, exc)
