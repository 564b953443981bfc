"""Live routing rules: ``amqprpc route`` sends one, every running caller applies it at once.

A rule sent here overrides the caller's ``[routing.<service>]`` until the caller restarts
(the config file is where a lasting rule lives). Anyone with broker credentials can
publish on ``amqprpc.routing``, so with a ``discovery_key`` a rule must carry its HMAC
(``x-amqprpc-signature``, as announcements do), and one whose ``sent_at`` is older than
the last applied for its service, or off our clock by more than ``discovery_max_skew``,
is dropped: a replayed "canary 100 %" changes nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from concurrent.futures import Future
from typing import TYPE_CHECKING

from .futures import settle
from .routing import Router, RouteRule, parse_rule_message
from .signatures import SIGNATURE_HEADER, MessageSigner
from .topology import ROUTING, route_listener_topology
from .transport import Delivery, Outgoing, create_transport

if TYPE_CHECKING:
    from .config import Config
    from .transport import Transport

_log = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"


def rule_message(config: Config, service: str, rule: RouteRule | None,
                 now: float | None = None) -> Outgoing:
    """The message ``amqprpc route`` publishes (signed when the config has a discovery key)."""
    payload = {"service": service, "sent_at": time.time() if now is None else now,
               **({"off": True} if rule is None else rule.as_dict())}
    body = json.dumps(payload).encode()
    routing_key = f"route.{service}"
    headers = {}
    signer = MessageSigner.from_setting(config.discovery_key)
    if signer is not None:
        headers[SIGNATURE_HEADER] = signer.sign(routing_key, CONTENT_TYPE, body)
    return Outgoing(ROUTING.name, routing_key, body,
                    {"content_type": CONTENT_TYPE, "application_headers": headers})


def send_rule(config: Config, service: str, rule: RouteRule | None, timeout: float = 10.0) -> None:
    """Publish a live rule and wait for the broker's confirm (``amqprpc route``).

    Raises BrokerUnreachable, BrokerError (refused) or TimeoutError (no confirm in time)."""
    connection = create_transport(config, name=f"route-{os.getpid()}")
    connection.start(wait=True)
    try:
        connection.declare(ROUTING)
        confirmed: Future[None] = Future()
        connection.publish(rule_message(config, service, rule),
                           on_confirm=lambda error: settle(confirmed, error, None))
        confirmed.result(timeout)
    finally:
        connection.stop()


class RouteUpdates:
    """Feeds the rules heard on ``amqprpc.routing`` into a ``Router`` (I/O thread)."""

    def __init__(self, connection: Transport, config: Config, router: Router, owner: str) -> None:
        self.router = router
        self._signer = MessageSigner.from_setting(config.discovery_key)
        self._max_skew = config.discovery_max_skew
        self._last: dict[str, float] = {}  # service -> sent_at of the rule applied last
        queue = f"amqprpc.routing-{owner}-{uuid.uuid4().hex[:12]}"
        connection.declare(*route_listener_topology(queue))
        connection.consume(queue, self._on_rule, no_ack=True)

    def _on_rule(self, delivery: Delivery) -> None:
        try:
            if self._signer is not None:
                self._signer.verify(delivery.headers.get(SIGNATURE_HEADER), delivery.routing_key,
                                    str(delivery.properties.get("content_type") or ""), delivery.body)
            service, rule = parse_rule_message(delivery.body)
            sent_at = json.loads(delivery.body).get("sent_at")
            if isinstance(sent_at, bool) or not isinstance(sent_at, (int, float)) \
                    or not math.isfinite(sent_at):
                raise ValueError("sent_at must be a unix time")
            if delivery.routing_key != f"route.{service}":
                raise ValueError(f"routing key {delivery.routing_key!r} names another service")
            if abs(sent_at - time.time()) > self._max_skew:
                raise ValueError(f"sent_at is {sent_at - time.time():+.0f}s off this clock")
            if sent_at <= self._last.get(service, float("-inf")):
                raise ValueError("older than the rule applied last (a replay?)")
        except Exception as exc:  # hostile or broken: say why, change nothing
            _log.warning("ignored a routing rule on %s: %s", delivery.routing_key, exc)
            return
        self._last[service] = sent_at
        self.router.set_rule(service, rule)
