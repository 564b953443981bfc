"""The cancel message, and the bounded set of cancelled ids a worker remembers.

A cancel is a bodyless message on the control exchange (``topology.CONTROL``) with routing
key ``cancel.<service>``. It names the call by the request's ``correlation_id`` and carries
the call's deadline (``x-amqprpc-deadline``, unix time), until which a worker remembers the
id: a request still queued, or not even prefetched yet, is then acked and dropped when it
arrives. The reason (``x-amqprpc-cancel-reason``: ``timeout`` or ``cancelled``) is for logs.

Anyone with broker credentials can publish one, so parsing is strict and memory bounded:
a cancel with no usable correlation id is refused, a deadline past ``MAX_REMEMBER`` is cut
to it, and ``CancelledIds`` holds at most ``max_ids`` ids (the oldest go first).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from ..exceptions import MalformedRequest
from ..messages import DEADLINE_HEADER
from ..topology import CONTROL, cancel_routing_key
from ..transport.base import Delivery, Outgoing

__all__ = ["CANCEL_TYPE", "REASON_HEADER", "Cancel", "CancelledIds", "build_cancel", "parse_cancel"]

CANCEL_TYPE: Final = "amqprpc.cancel"
REASON_HEADER: Final = "x-amqprpc-cancel-reason"
REASONS: Final = frozenset({"timeout", "cancelled"})
MAX_ID_LENGTH: Final = 255  # an AMQP short string: no correlation id is longer
MAX_REMEMBER: Final = 3600.0  # seconds a cancelled id is kept at most, whatever its deadline says
DEFAULT_REMEMBER: Final = 60.0  # for a cancel without a deadline
GRACE: Final = 5.0  # kept past the deadline: clocks of caller and worker differ a little
DEFAULT_MAX_IDS: Final = 50_000  # ~20 MB at worst (255-character ids); a flood evicts the oldest


def build_cancel(service: str, correlation_id: str, deadline: float | None, reason: str) -> Outgoing:
    """The cancel of the call ``correlation_id`` to ``service``; transient, not mandatory
    (no listener, as with a Nameko service, and it is simply dropped)."""
    headers: dict[str, Any] = {REASON_HEADER: reason}
    if deadline is not None:
        headers[DEADLINE_HEADER] = deadline
    properties = {"correlation_id": correlation_id, "type": CANCEL_TYPE, "delivery_mode": 1,
                  "application_headers": headers}
    return Outgoing(CONTROL.name, cancel_routing_key(service), b"", properties)


@dataclass(frozen=True, slots=True)
class Cancel:
    """A parsed cancel: which call, until when to remember it, and why."""

    correlation_id: str
    expires: float  # unix time
    reason: str


def parse_cancel(delivery: Delivery, now: float | None = None) -> Cancel:
    """Validate a cancel; raises MalformedRequest naming what is wrong with it."""
    now = time.time() if now is None else now
    props = delivery.properties
    if props.get("type") != CANCEL_TYPE:
        raise MalformedRequest(f"not a cancel: type {props.get('type')!r:.40}")
    correlation_id = props.get("correlation_id")
    if isinstance(correlation_id, bytes):
        correlation_id = correlation_id.decode("utf-8", "replace")
    if not isinstance(correlation_id, str) or not correlation_id or len(correlation_id) > MAX_ID_LENGTH:
        raise MalformedRequest(f"a cancel needs a correlation id of 1 to {MAX_ID_LENGTH} characters")
    if delivery.body:
        raise MalformedRequest("a cancel has no body")
    headers = delivery.headers if isinstance(delivery.headers, dict) else {}
    deadline = headers.get(DEADLINE_HEADER)
    if deadline is None:
        expires = now + DEFAULT_REMEMBER
    elif isinstance(deadline, bool) or not isinstance(deadline, int | float) or not math.isfinite(deadline):
        raise MalformedRequest(f"{DEADLINE_HEADER} must be a finite unix time, got {deadline!r:.40}")
    else:
        expires = min(float(deadline) + GRACE, now + MAX_REMEMBER)
    reason = headers.get(REASON_HEADER)
    return Cancel(correlation_id, expires, reason if reason in REASONS else "cancelled")


class CancelledIds:
    """Correlation ids of cancelled calls, each until it expires; at most ``max_ids``.

    Not thread-safe by design: only the I/O thread adds, and pool threads only read
    (``in``), which the dict answers atomically. When the set is full, expired ids are swept
    out (at most once per ``max_ids // 8`` adds, so a flood costs O(1) per cancel), and
    while it is still full the oldest cancel goes first.
    """

    def __init__(self, max_ids: int = DEFAULT_MAX_IDS) -> None:
        if max_ids < 1:
            raise ValueError(f"max_ids must be at least 1, not {max_ids}")
        self.max_ids = max_ids
        # OrderedDict: dropping the oldest of a plain dict re-scans its deleted slots (O(n)).
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._scan_every = max(1, max_ids // 8)
        self._since_scan = self._scan_every  # the first time it is full, sweep
        self.evicted = 0  # ids dropped before they expired (a flood of cancels)

    def add(self, correlation_id: str, expires: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if expires <= now:
            return
        expiry = self._expiry
        expiry.pop(correlation_id, None)  # re-added: now the newest
        if len(expiry) >= self.max_ids:
            if self._since_scan >= self._scan_every:
                self._since_scan = 0
                for key in [k for k, when in expiry.items() if when <= now]:
                    del expiry[key]
            while len(expiry) >= self.max_ids:
                expiry.popitem(last=False)
                self.evicted += 1
        self._since_scan += 1
        expiry[correlation_id] = expires

    def __contains__(self, correlation_id: object) -> bool:
        expires = self._expiry.get(correlation_id)  # type: ignore[call-overload]
        return expires is not None and expires > time.time()

    def __len__(self) -> int:
        return len(self._expiry)
