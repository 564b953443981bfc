"""Retries and dead letters as messages: backoff, the copies we republish, and how to read them.

Pure functions, no I/O. A failed event is never requeued in place (that would retry at
once and forever); instead a copy is published and the original acked once the broker
confirms the copy:

* a **retry copy** goes to ``<queue>.retry.<ms>`` (see ``topology``) and comes back to
  ``<queue>`` when its TTL runs out, carrying ``x-amqprpc-attempts`` (handler runs so far);
* a **dead letter** goes to ``<queue>.dlq`` with the error, the attempt count, and where
  the event first came from, for ``amqprpc dlq list|replay|purge``.

Every copy keeps the body, the content type, the ``message_id`` and the context headers
(``nameko.*``) of the original, so a replayed event looks like the first delivery.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Any, Final

from .transport.base import Outgoing

ATTEMPTS_HEADER: Final = "x-amqprpc-attempts"
ERROR_HEADER: Final = "x-amqprpc-error"
ERROR_TYPE_HEADER: Final = "x-amqprpc-error-type"
QUEUE_HEADER: Final = "x-amqprpc-queue"
EXCHANGE_HEADER: Final = "x-amqprpc-exchange"
ROUTING_KEY_HEADER: Final = "x-amqprpc-routing-key"
DEAD_AT_HEADER: Final = "x-amqprpc-dead-lettered-at"
REPLAYS_HEADER: Final = "x-amqprpc-replays"

MAX_ERROR_LENGTH: Final = 2000

# Properties a copy keeps. ``user_id`` is left out (the broker checks it against the
# publishing user, so a copy made by another login would be refused), and so is
# ``expiration`` (a copy must not die in the delay queue or the DLQ).
_KEPT_PROPERTIES: Final = (
    "content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
    "reply_to", "message_id", "timestamp", "type", "app_id",
)
# Headers that describe one failure; a replay starts the story afresh without them.
_FAILURE_HEADERS: Final = (ATTEMPTS_HEADER, ERROR_HEADER, ERROR_TYPE_HEADER, DEAD_AT_HEADER)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a handler is retried.

    ``max_attempts`` counts handler runs, the first included (1 = never retry). The n-th
    retry waits ``min(retry_delay * 2**(n-1), max_retry_delay)`` seconds.
    """

    max_attempts: int = 5
    retry_delay: float = 1.0
    max_retry_delay: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an int of at least 1, got {self.max_attempts!r}")
        if not self.retry_delay > 0:
            raise ValueError(f"retry_delay must be positive, got {self.retry_delay!r}")
        if not self.max_retry_delay >= self.retry_delay:
            raise ValueError(f"max_retry_delay ({self.max_retry_delay!r}) must be at least "
                             f"retry_delay ({self.retry_delay!r})")

    def delay_ms(self, attempt: int) -> int:
        """Milliseconds to wait after failed run number ``attempt`` (1-based)."""
        seconds: float = min(self.retry_delay * 2 ** (attempt - 1), self.max_retry_delay)
        return max(1, round(seconds * 1000))

    def all_delays_ms(self) -> list[int]:
        """Every delay this policy can use, in order (names the delay queues it may create)."""
        return sorted({self.delay_ms(n) for n in range(1, self.max_attempts)})


@dataclass(frozen=True, slots=True)
class Received:
    """What a copy is made from: a delivery's body, properties and where it arrived from."""

    body: bytes
    properties: dict[str, Any]
    exchange: str
    routing_key: str

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.get("application_headers") or {}


def attempts_of(headers: dict[str, Any] | None) -> int:
    """Handler runs a message has already had (0 for a fresh event, or a bad header)."""
    value = (headers or {}).get(ATTEMPTS_HEADER)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def describe_error(error: BaseException | str) -> tuple[str, str]:
    """(``"Type: message"`` cut to a header-friendly length, the type's import path)."""
    if isinstance(error, str):
        return error[:MAX_ERROR_LENGTH], ""
    cls = type(error)
    try:
        message = str(error)
    except Exception:  # a broken __str__ must not lose the message
        message = repr(error.args)
    text = f"{cls.__name__}: {message}" if message else cls.__name__
    return text[:MAX_ERROR_LENGTH], f"{cls.__module__}.{cls.__qualname__}"


def retry_copy(received: Received, *, queue: str, delay_queue: str, attempts: int,
               error: BaseException | str) -> Outgoing:
    """The copy that waits in ``delay_queue`` and then returns to ``queue``."""
    headers = _origin_headers(received, queue)
    headers[ATTEMPTS_HEADER] = attempts
    headers[ERROR_HEADER], headers[ERROR_TYPE_HEADER] = describe_error(error)
    return Outgoing("", delay_queue, received.body, _copy_properties(received, headers))


def dead_letter(received: Received, *, queue: str, dlq: str, attempts: int,
                error: BaseException | str, now: float | None = None) -> Outgoing:
    """The copy kept in ``dlq``: why it died, after how many runs, and where it came from."""
    headers = _origin_headers(received, queue)
    headers[ATTEMPTS_HEADER] = attempts
    headers[ERROR_HEADER], headers[ERROR_TYPE_HEADER] = describe_error(error)
    headers[DEAD_AT_HEADER] = time.time() if now is None else now
    return Outgoing("", dlq, received.body, _copy_properties(received, headers))


def replay_copy(received: Received, target_queue: str) -> Outgoing:
    """A dead letter sent back to ``target_queue`` for a fresh set of attempts.

    Failure headers go; the origin stays, and ``x-amqprpc-replays`` counts the replays.
    """
    headers = {k: v for k, v in received.headers.items() if k not in _FAILURE_HEADERS}
    replays = headers.get(REPLAYS_HEADER)
    headers[REPLAYS_HEADER] = (replays if isinstance(replays, int) else 0) + 1
    return Outgoing("", target_queue, received.body, _copy_properties(received, headers),
                    mandatory=True)


def forward_copy(received: Received, exchange: str, routing_key: str) -> Outgoing:
    """The same request sent on by another route (a stopping canary's leftovers), unchanged."""
    return Outgoing(exchange, routing_key, received.body,
                    _copy_properties(received, dict(received.headers)), mandatory=True)


def _origin_headers(received: Received, queue: str) -> dict[str, Any]:
    """The original headers plus, once, the queue, exchange and routing key it arrived by."""
    headers = dict(received.headers)
    headers.setdefault(QUEUE_HEADER, queue)
    headers.setdefault(EXCHANGE_HEADER, received.exchange)
    headers.setdefault(ROUTING_KEY_HEADER, received.routing_key)
    return headers


def _copy_properties(received: Received, headers: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {k: received.properties[k] for k in _KEPT_PROPERTIES
                                  if k in received.properties}
    properties["delivery_mode"] = 2  # a copy is as durable as an event
    properties["application_headers"] = headers
    return properties


@dataclass(slots=True)
class DeadLetterInfo:
    """A dead letter as an operator reads it (``amqprpc dlq list``)."""

    queue: str | None
    attempts: int | None
    error: str | None
    error_type: str | None
    reason: str | None
    exchange: str | None
    routing_key: str | None
    dead_lettered_at: float | None
    replays: int
    message_id: str | None
    content_type: str | None
    body: bytes = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue, "attempts": self.attempts, "error": self.error,
            "error_type": self.error_type, "reason": self.reason, "exchange": self.exchange,
            "routing_key": self.routing_key, "dead_lettered_at": self.dead_lettered_at,
            "replays": self.replays, "message_id": self.message_id,
            "content_type": self.content_type, "size": len(self.body),
        }


def read_dead_letter(received: Received) -> DeadLetterInfo:
    """Our headers when amqprpc dead-lettered it; else the broker's ``x-death`` (a quorum
    queue's delivery limit, a policy), so both kinds can be listed and replayed."""
    headers = received.headers
    death = _first_death(headers)
    error = headers.get(ERROR_HEADER)
    reason = str(death.get("reason")) if death.get("reason") is not None else None
    queue = headers.get(QUEUE_HEADER) or death.get("queue")
    routing_keys = death.get("routing-keys")
    routing_key = headers.get(ROUTING_KEY_HEADER) or (
        routing_keys[0] if isinstance(routing_keys, list) and routing_keys else None)
    dead_at = headers.get(DEAD_AT_HEADER)
    if dead_at is None and isinstance(death.get("time"), datetime.datetime):
        dead_at = death["time"].timestamp()
    replays = headers.get(REPLAYS_HEADER)
    return DeadLetterInfo(
        queue=_text(queue),
        attempts=attempts_of(headers) if ATTEMPTS_HEADER in headers else None,
        error=_text(error),
        error_type=_text(headers.get(ERROR_TYPE_HEADER)),
        reason=None if error is not None else reason,
        exchange=_text(headers.get(EXCHANGE_HEADER, death.get("exchange"))),
        routing_key=_text(routing_key),
        dead_lettered_at=float(dead_at) if isinstance(dead_at, int | float) else None,
        replays=replays if isinstance(replays, int) else 0,
        message_id=_text(received.properties.get("message_id")),
        content_type=_text(received.properties.get("content_type")),
        body=received.body,
    )


def original_queue(received: Received) -> str | None:
    """The queue a dead letter should be replayed to, if it says."""
    return read_dead_letter(received).queue


def dead_lettered_routing_key(headers: dict[str, Any]) -> str | None:
    """The routing key a message had before the broker dead-lettered it (``x-death``)."""
    keys = _first_death(headers).get("routing-keys")
    if isinstance(keys, list) and keys:
        return _text(keys[0])
    return None


def _first_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]  # the most recent: the queue it died in, and why
    return {}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
