"""Breaker states on the bus, so ``amqprpc services`` can show the breakers of other processes.

Breakers live in callers (clients, ``RpcProxy`` in a worker, the bridge). Each caller with
breakers on announces them on the topic exchange ``amqprpc.breakers`` (routing key
``<service>.<method>``, ``*`` for a whole-service breaker): on every transition, and again
every ``discovery_interval`` while any of its breakers is not closed, with a TTL of three
intervals, so a listener that joins late hears every open breaker within one interval and
a dead caller's state expires. A closed breaker is announced once (on closing) and then
only by its silence. Nothing is sent while every breaker stays closed.

What a listener receives is informational and possibly hostile: ``BreakerStates`` checks
sizes and types and keeps at most ``MAX_STATES`` entries.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

from ..config import Config
from ..exceptions import MalformedRequest
from ..serialization import DecodeLimits, codec_named, decode
from ..transport import Binding, Delivery, Exchange, Outgoing, Queue, Transport, create_transport
from .breaker import Breakers, CircuitBreaker, State

_log = logging.getLogger(__name__)

BREAKERS: Final = Exchange("amqprpc.breakers", "topic", durable=True, auto_delete=False)
MAX_STATES = 10_000
_MAX_TEXT = 500


class BreakerAnnouncer:
    """Publishes one caller's breaker states; transitions come from any thread."""

    def __init__(self, connection: Transport, breakers: Breakers, config: Config,
                 owner: str) -> None:
        self._connection = connection
        self._breakers = breakers
        self._codec = codec_named("json")
        self.interval = max(0.1, config.discovery_interval)
        self.owner = owner
        self._host = socket.gethostname()
        self._repeating = False
        self._lock = threading.Lock()
        connection.declare(BREAKERS)
        breakers.listeners.append(self._transition)

    def _transition(self, breaker: CircuitBreaker, before: State, to: State, reason: str) -> None:
        self._announce(breaker)
        with self._lock:
            start, self._repeating = not self._repeating and to is not State.CLOSED, True
            if not start and not self._repeating:
                return
        if start:
            self._connection.call_later(self.interval, self._repeat)

    def _repeat(self) -> None:
        """I/O thread: re-announce the breakers that are not closed; stop once all are."""
        unclosed = [b for b in self._breakers.all() if b.state is not State.CLOSED]
        for breaker in unclosed:
            self._announce(breaker)
        with self._lock:
            self._repeating = bool(unclosed)
        if unclosed:
            self._connection.call_later(self.interval, self._repeat)

    def _announce(self, breaker: CircuitBreaker) -> None:
        payload = {
            "owner": self.owner, "host": self._host, "pid": os.getpid(),
            "service": breaker.service, "method": breaker.method,
            "state": breaker.state.value, "reason": breaker.reason[:_MAX_TEXT],
            "retry_after": round(breaker.retry_after, 3), "sent_at": time.time(),
        }
        properties = {"content_type": self._codec.content_type, "delivery_mode": 1,
                      "expiration": str(int(self.interval * 3000))}
        routing_key = f"{breaker.service}.{breaker.method}"[:255]
        try:
            self._connection.publish(Outgoing(BREAKERS.name, routing_key, self._codec.dumps(payload),
                                              properties))
        except Exception as exc:  # telling others is best effort; the breaker works regardless
            _log.debug("could not announce breaker %s: %s", routing_key, exc)


@dataclass(frozen=True, slots=True)
class BreakerStateView:
    """One caller's breaker for one service (or method), as last announced."""

    owner: str
    host: str
    pid: int
    service: str
    method: str
    state: str
    reason: str
    retry_after: float
    received_at: float


class BreakerStates:
    """Listens on ``amqprpc.breakers`` and keeps the newest state per (owner, service, method)."""

    def __init__(self, config: Config, *, name: str | None = None) -> None:
        self.config = config
        self._limits = DecodeLimits.from_config(config).replace(max_size=64 * 1024)
        self._name = name or f"breakers-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._states: dict[tuple[str, str, str], BreakerStateView] = {}
        self._lock = threading.Lock()
        self._connection: Transport | None = None

    def start(self, wait: bool = True) -> None:
        connection = create_transport(self.config, name=self._name, confirms=False)
        queue = f"amqprpc.breakers-{self._name}"
        connection.declare(BREAKERS, Queue(queue, durable=False, exclusive=True, auto_delete=True,
                                           arguments={"x-max-length": 10_000}),
                           Binding(queue, BREAKERS.name, "#"))
        connection.consume(queue, self._on_delivery, no_ack=True)
        self._connection = connection
        connection.start(wait=wait)

    def stop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.stop()

    def of(self, service: str) -> list[BreakerStateView]:
        """The breakers others hold for ``service`` that are not closed, by owner."""
        with self._lock:
            return sorted((v for v in self._states.values()
                           if v.service == service and v.state != State.CLOSED.value),
                          key=lambda v: (v.owner, v.method))

    def services(self) -> set[str]:
        """The services some caller holds a breaker open or half-open for."""
        with self._lock:
            return {v.service for v in self._states.values() if v.state != State.CLOSED.value}

    def receive(self, body: bytes, content_type: str | None) -> BreakerStateView:
        """Check one announcement and keep it; raises MalformedRequest naming the problem."""
        data = decode(body, content_type, self._limits)
        if not isinstance(data, dict):
            raise MalformedRequest("a breaker announcement must be an object")
        text = {key: _text(data, key) for key in ("owner", "host", "service", "method", "state",
                                                  "reason")}
        if text["state"] not in {s.value for s in State}:
            raise MalformedRequest(f"unknown breaker state {text['state']!r}")
        pid, retry_after = data.get("pid"), data.get("retry_after")
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise MalformedRequest("'pid' must be an integer")
        if not isinstance(retry_after, int | float) or isinstance(retry_after, bool):
            raise MalformedRequest("'retry_after' must be a number")
        view = BreakerStateView(pid=pid, retry_after=float(retry_after),
                                received_at=time.monotonic(), **text)
        key = (view.owner, view.service, view.method)
        with self._lock:
            if key in self._states or len(self._states) < MAX_STATES:
                self._states[key] = view
        return view

    def _on_delivery(self, delivery: Delivery) -> None:
        try:
            self.receive(delivery.body, delivery.properties.get("content_type"))
        except MalformedRequest as exc:
            _log.warning("ignored a bad breaker announcement (%s): %s", delivery.routing_key, exc)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise MalformedRequest(f"{key!r} must be a string of at most {_MAX_TEXT} characters")
    return value
