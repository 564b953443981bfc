"""Events from the bus to WebSocket clients: who may subscribe to what, and the fan-out.

``rule_for`` reads the ``ws_events`` the live instances of a service announce (see
``amqprpc.discovery.ws_events``). Instances that disagree (a rolling deploy) are resolved
toward the narrower rule: an event is offered only if every live instance declares it, and
a role counts only if every instance that names roles names it.

``EventHub`` owns the bridge's one ``EventSubscriber`` (an exclusive, auto-delete, bounded
queue; see ``amqprpc.subscriber``), started at the first subscription, so a bridge no
socket subscribes through opens no second connection. Its binding for an event stays
until the bridge stops (bindings are few: one per event type some service offers).
Each event is encoded once and offered to every subscribed socket (``Sink.offer_event``);
a socket's own buffer is bounded there, so a slow one never slows the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from amqprpc import Config, EventSubscriber
from amqprpc.discovery import ServiceView, WsEvent

_log = logging.getLogger("http_bridge.ws")


class Sink(Protocol):
    """A subscribed socket, as the hub sees it."""

    def offer_event(self, frame: str) -> None: ...


def split_event_key(key: str) -> tuple[str, str] | None:
    """``"orders.order_paid"`` -> ``("orders", "order_paid")``; service names have no dot."""
    source, dot, event_type = key.partition(".")
    if not dot or not source or not event_type:
        return None
    return source, event_type


def rule_for(view: ServiceView | None, event_type: str) -> WsEvent | None:
    """The narrowest rule every live instance of the service agrees on, None when not offered."""
    if view is None or not view.instances:
        return None
    found: list[WsEvent] = []
    for descriptor in view.instances:
        rule = next((item for item in descriptor.ws_events if item.event == event_type), None)
        if rule is None:
            return None
        found.append(rule)
    restricted = [set(rule.roles) for rule in found if rule.roles]
    if not restricted:
        return WsEvent(event_type, ())
    roles = set.intersection(*restricted)
    if not roles:  # they name roles but none in common: nobody may
        return None
    return WsEvent(event_type, tuple(sorted(roles)))


class EventHub:
    """Fan-out of the bridge's event queue to sockets; every method runs on the event loop."""

    def __init__(self, config: Config, *, max_queued: int, name: str) -> None:
        self._config = config
        self._max_queued = max_queued
        self._name = name
        self._subscriber: EventSubscriber | None = None
        self._start_lock = asyncio.Lock()
        self._sinks: dict[str, set[Sink]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.delivered = 0  # events handed to sockets (one per socket)

    async def subscribe(self, key: str, sink: Sink) -> None:
        """Deliver ``key``'s events to ``sink`` from now on; BrokerError if the broker refuses."""
        source, event_type = split_event_key(key) or ("", "")
        subscriber = await self._started()
        if key not in self._sinks:
            await asyncio.get_running_loop().run_in_executor(None, subscriber.subscribe, source, event_type)
        self._sinks.setdefault(key, set()).add(sink)

    def unsubscribe(self, key: str, sink: Sink) -> None:
        sinks = self._sinks.get(key)
        if sinks is not None:
            sinks.discard(sink)

    def forget(self, sink: Sink, keys: Iterable[str]) -> None:
        """A socket closed: it gets nothing more."""
        for key in keys:
            self.unsubscribe(key, sink)

    async def stop(self) -> None:
        subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None:
            await asyncio.get_running_loop().run_in_executor(None, subscriber.stop)

    async def _started(self) -> EventSubscriber:
        async with self._start_lock:
            if self._subscriber is None:
                loop = asyncio.get_running_loop()
                self._loop = loop
                subscriber = EventSubscriber(self._config, self._on_event, name=self._name,
                                             max_queued=self._max_queued)
                await loop.run_in_executor(None, subscriber.start)
                self._subscriber = subscriber
            return self._subscriber

    def _on_event(self, source: str, event_type: str, payload: Any) -> None:
        """On the subscriber's I/O thread: over to the loop at once."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fan_out, f"{source}.{event_type}", payload)

    def _fan_out(self, key: str, payload: Any) -> None:
        sinks = self._sinks.get(key)
        if not sinks:
            return
        try:
            frame = json.dumps({"event": key, "payload": payload}, ensure_ascii=False,
                               separators=(",", ":"), allow_nan=False, default=str)
        except ValueError as exc:
            _log.warning("event %s dropped: it cannot be sent as JSON: %s", key, exc)
            return
        for sink in tuple(sinks):
            sink.offer_event(frame)
            self.delivered += 1
