"""Canary routing: a share of a service's calls goes to the workers of one version.

A worker started with ``--version V`` consumes a queue of its own version beside the
shared one (docs/protocol.md, "Versions and canary routing")::

    caller --(rk "<service>.<method>")------> rpc-<service>      (every stable worker)
    caller --(rk "<service>@<token>.<method>")-> rpc-<service>@<V> (the workers of version V)

``<token>`` is the version with its dots as ``_`` (a topic word holds no dot), so the
shared binding ``<service>.*`` never matches a versioned key, and the worker still finds
the method after the first dot. Nameko callers know nothing of this and reach the shared
queue. A ``--canary`` worker consumes only its version's queue: it gets exactly the share
routed to it.

The caller decides, per call, with a ``Router``: the rule for the service (from
``[routing.<service>]`` in the config, or set live by ``amqprpc route``) says which version
gets which share, optionally sticky by a hash of the caller's identity or of a context
value. A version is chosen only while its queue has consumers, which the router learns by
asking the broker in the background (never on the calling thread); a request whose
version queue is gone is returned by the broker and sent again to the shared queue.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .exceptions import ConfigError

_log = logging.getLogger(__name__)

_VERSION = re.compile(r"^[0-9A-Za-z]+(?:[.+-][0-9A-Za-z]+)*$")  # 2.1.0, 2.1.0-rc.1, 2.1.0+b7
_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,199}$")  # one topic word, as services are named
_STICKY = re.compile(r"^(identity|context:[A-Za-z0-9_-]{1,64})$")
GOLDEN: Final = (math.sqrt(5) - 1) / 2  # the low-discrepancy step: shares converge fastest
LIVENESS_TTL: Final = 1.0  # seconds a version's "has consumers" answer is trusted
QUESTION_TIMEOUT: Final = 2.0


def check_version(version: str) -> str:
    """``version`` if a worker may announce it (``2.1.0``, ``2.1.0-rc.1+abc``); ConfigError otherwise."""
    if not isinstance(version, str):
        raise ConfigError(f"version {version!r}: must be a string such as \"2.1.0\"")
    return _checked_version(version)


@functools.lru_cache(maxsize=1024)  # checked on every routed call: once per name is enough
def _checked_version(version: str) -> str:
    if len(version) > 64 or not _VERSION.match(version):
        raise ConfigError(f"version {version!r}: at most 64 letters and digits, in parts joined "
                          "by one of . + - (2.1.0, 2.1.0-rc.1)")
    return version


def check_service(service: str) -> str:
    """``service`` if rules may name it (one topic word); ConfigError otherwise."""
    if not isinstance(service, str) or not _SERVICE.match(service):
        raise ConfigError(f"service name {service!r}: letters, digits, _ and -, starting with a "
                          "letter or digit")
    return service


def version_token(version: str) -> str:
    """The version as one topic word: ``2.1.0`` -> ``2_1_0`` (versions never hold ``_``)."""
    return check_version(version).replace(".", "_")


@functools.lru_cache(maxsize=1024)
def version_queue(service: str, version: str) -> str:
    """The queue of the workers of ``version``: ``rpc-<service>@<version>``."""
    return f"rpc-{service}@{check_version(version)}"


def version_binding(service: str, version: str) -> str:
    return f"{service}@{version_token(version)}.*"


def versioned_key(service: str, version: str, method: str) -> str:
    return f"{service}@{version_token(version)}.{method}"


def canonical_key(routing_key: str) -> str:
    """``orders@2_1_0.create`` -> ``orders.create``: what identities are signed over."""
    head, dot, method = routing_key.partition(".")
    return f"{head.partition('@')[0]}{dot}{method}" if "@" in head else routing_key


@dataclass(frozen=True, slots=True)
class RouteRule:
    """``weight`` of ``service``'s calls go to ``canary``; the rest to the shared queue.

    ``sticky``: ``identity`` (the caller's ``user_id``) or ``context:<key>`` (a context value,
    such as a header the bridge forwards) makes the choice a hash of that value, so one
    user always sees the same version; calls without the value are spread by weight.
    """

    service: str
    canary: str
    weight: float
    sticky: str = ""

    def __post_init__(self) -> None:
        check_service(self.service)
        check_version(self.canary)
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) \
                or not 0.0 <= self.weight <= 1.0:
            raise ConfigError(f"routing.{self.service}.weight must be a number from 0 to 1, "
                              f"got {self.weight!r}")
        if self.sticky and not _STICKY.match(self.sticky):
            raise ConfigError(f"routing.{self.service}.sticky must be 'identity' or "
                              f"'context:<key>', got {self.sticky!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "canary": self.canary, "weight": self.weight,
                "sticky": self.sticky}


def rules_from_config(routing: Any) -> dict[str, RouteRule]:
    """The ``[routing.<service>]`` tables of a config file, checked; ConfigError names the problem."""
    if routing is None:
        return {}
    if not isinstance(routing, Mapping):
        raise ConfigError("routing must be a table of [routing.<service>] tables")
    rules = {}
    for service, table in routing.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"routing.{service} must be a table (canary = \"2.1.0\", weight = 0.1)")
        unknown = set(table) - {"canary", "weight", "sticky"}
        if unknown:
            raise ConfigError(f"routing.{service}: unknown setting(s) {', '.join(sorted(unknown))} "
                              "(canary, weight, sticky)")
        if "canary" not in table or "weight" not in table:
            raise ConfigError(f"routing.{service} needs canary (a version) and weight (0 to 1)")
        rules[str(service)] = RouteRule(str(service), table["canary"], table["weight"],
                                        str(table.get("sticky", "")))
    return rules


def parse_rule_message(body: bytes) -> tuple[str, RouteRule | None]:
    """A live rule from ``amqprpc route``: ``(service, rule)``; rule None switches routing off.

    ValueError (ConfigError included) for anything but the documented shape."""
    payload = json.loads(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("service"), str):
        raise ValueError("a route message is a JSON object naming its service")
    service = payload["service"]
    if payload.get("off") is True:
        return service, None
    return service, RouteRule(service, payload.get("canary"), payload.get("weight"),  # type: ignore[arg-type]
                              str(payload.get("sticky") or ""))


class Router:
    """Chooses, per call, the version a call goes to (None: the shared queue).

    Callers' threads call ``choose``; the rules change from the I/O thread (live updates)
    and the liveness answers from short question threads: each is one dict store, and a
    reader sees either the old or the new value.
    """

    def __init__(self, rules: Mapping[str, RouteRule],
                 has_consumers: Callable[[str], bool | None]) -> None:
        self._config_rules = dict(rules)
        self.rules: dict[str, RouteRule] = dict(rules)
        self._has_consumers = has_consumers  # queue -> consumers > 0 (None: no such queue)
        self._position: dict[str, float] = {}  # service -> where its sequence stands
        self._live: dict[str, tuple[bool, float]] = {}  # version queue -> (live, when learnt)
        self._asking: set[str] = set()
        self._lock = threading.Lock()  # the sequences: calls come from many threads

    def choose(self, service: str, context: Mapping[str, Any] | None) -> str | None:
        """The canary version for this call, or None for the shared queue."""
        rule = self.rules.get(service)
        if rule is None or rule.weight <= 0.0 or not self._is_live(service, rule.canary):
            return None
        key = _sticky_value(rule.sticky, context)
        if key is not None:
            digest = hashlib.blake2b(f"{service}\0{key}".encode(), digest_size=8).digest()
            return rule.canary if int.from_bytes(digest, "big") / 2.0**64 < rule.weight else None
        with self._lock:
            position = (self._position.get(service, 0.0) + GOLDEN) % 1.0
            self._position[service] = position
        return rule.canary if position < rule.weight else None

    def set_rule(self, service: str, rule: RouteRule | None) -> None:
        """A live rule (``amqprpc route``); None: routing of ``service`` off until restart."""
        if rule is None:
            self.rules.pop(service, None)
        else:
            self.rules[service] = rule
        _log.info("routing of %s: %s", service,
                  f"{rule.weight:.0%} to {rule.canary}" if rule else "off, all to the shared queue")

    def version_gone(self, service: str, version: str) -> None:
        """The broker returned a request to ``version``'s queue: route nothing there for now."""
        self._live[version_queue(service, version)] = (False, time.monotonic())

    def _is_live(self, service: str, version: str) -> bool:
        """Served, by an answer at most ``LIVENESS_TTL`` old (asked again from half that age,
        so a fresh one is usually in before it expires). No answer or an old one: not served,
        which bounds how long calls go to a version whose last worker left."""
        queue = version_queue(service, version)
        known = self._live.get(queue)
        age = float("inf") if known is None else time.monotonic() - known[1]
        if age > LIVENESS_TTL / 2:
            self._ask(queue)
        return known is not None and known[0] and age <= LIVENESS_TTL

    def _ask(self, queue: str) -> None:
        with self._lock:
            if queue in self._asking:
                return
            self._asking.add(queue)
        threading.Thread(target=self._question, args=(queue,), name=f"amqprpc-route-{queue}",
                         daemon=True).start()

    def _question(self, queue: str) -> None:
        """Off every caller's thread: a passive declare on a short connection of its own."""
        try:
            live = bool(self._has_consumers(queue))
        except Exception as exc:  # broker unreachable: keep what we knew, ask again later
            _log.debug("cannot ask about %s: %s", queue, exc)
            previous = self._live.get(queue)
            live = previous[0] if previous else False
        self._live[queue] = (live, time.monotonic())
        with self._lock:
            self._asking.discard(queue)


def _sticky_value(sticky: str, context: Mapping[str, Any] | None) -> str | None:
    if not sticky or not context:
        return None
    value = context.get("user_id") if sticky == "identity" else context.get(sticky[len("context:"):])
    return None if value is None or value == "" else str(value)
