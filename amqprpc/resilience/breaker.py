"""Circuit breakers: stop sending calls to a service that is failing, and find out when it is back.

One ``CircuitBreaker`` per service (or per method, where configured), living in the caller::

    closed --(failure ratio >= threshold over the window, >= min_calls seen)--> open
    closed/half_open --(no consumer on the queue: ServiceUnavailable/UnknownService)--> open
    open --(cooldown passed)--> half_open: up to ``half_open_calls`` trial calls go out
    half_open --(every trial succeeded)--> closed;  --(a trial failed)--> open again

Failures are what says the service, not the call, is sick: timeouts, ``WorkerLost``,
refusals by the broker, lost connections; application errors only with ``count_errors``.
While open, ``allow()`` answers at once with the seconds left of the cooldown and nothing
is published. Each transition is logged on one line and handed to the listeners (metrics,
the state announcer). Thread-safe: callers check from any thread, outcomes arrive on the
I/O thread; one lock per breaker, held for a few arithmetic operations.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ..config import Config
from ..exceptions import (
    BrokerError,
    CircuitOpen,
    ConfigError,
    RemoteError,
    RequestError,
    RpcTimeout,
    ServiceUnavailable,
    UnknownService,
)
from .window import Clock, SlidingCounts

_log = logging.getLogger(__name__)

CALLS, FAILURES = 0, 1
ANY_METHOD = "*"  # the method name of a breaker shared by a whole service


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge(self) -> int:
        """The value of ``amqprpc_breaker_state``: 0 closed, 1 open, 2 half-open."""
        return {"closed": 0, "open": 1, "half_open": 2}[self.value]


class Outcome(enum.Enum):
    OK = "ok"
    FAILURE = "failure"
    ABSENT = "absent"  # nobody consumes the service's queue: open at once
    IGNORE = "ignore"  # says nothing about the service (the caller's mistake, a cancel)


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """How one breaker judges; config keys ``breaker_<field>`` (docs/resilience.md)."""

    failure_ratio: float = 0.5
    min_calls: int = 20
    window: float = 10.0
    cooldown: float = 5.0
    half_open_calls: int = 3
    count_errors: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.failure_ratio <= 1:
            raise ConfigError(f"breaker_failure_ratio must be in (0, 1], got {self.failure_ratio!r}")
        for name in ("min_calls", "half_open_calls"):
            if getattr(self, name) < 1:
                raise ConfigError(f"breaker_{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("window", "cooldown"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"breaker_{name} must be positive, got {getattr(self, name)!r}")

    @classmethod
    def for_service(cls, config: Config, service: str) -> BreakerSettings:
        """The config's ``breaker_*`` values, overridden by ``<service>_breaker_*`` keys."""
        values: dict[str, Any] = {f.name: getattr(config, f"breaker_{f.name}") for f in fields(cls)}
        for f in fields(cls):
            found = _service_only(config, service, f"breaker_{f.name}")
            if found is not None:
                kind = type(getattr(_DEFAULTS, f.name))
                values[f.name] = _typed(found, kind, f"{service}_breaker_{f.name}")
        values["count_errors"] = bool(values["count_errors"])
        return cls(**values)


_DEFAULTS = BreakerSettings()


def classify(error: BaseException | None, *, count_errors: bool) -> Outcome:
    """What a call's outcome says about its service."""
    if error is None:
        return Outcome.OK
    if isinstance(error, CircuitOpen):
        return Outcome.IGNORE  # our own answer, not news about the service
    if isinstance(error, ServiceUnavailable | UnknownService):
        return Outcome.ABSENT
    if isinstance(error, RpcTimeout | BrokerError):
        return Outcome.FAILURE
    if isinstance(error, RemoteError) and error.exc_type == "WorkerLost":
        return Outcome.FAILURE
    if isinstance(error, RequestError):
        return Outcome.IGNORE  # a bad call, however many of them
    if isinstance(error, Exception) and count_errors:
        return Outcome.FAILURE
    return Outcome.OK if isinstance(error, Exception) else Outcome.IGNORE


Transition = Callable[["CircuitBreaker", State, State, str], None]


class CircuitBreaker:
    """The state of one service (or method) as seen by this caller."""

    def __init__(self, service: str, method: str, settings: BreakerSettings, *,
                 on_transition: Transition | None = None, clock: Clock = time.monotonic) -> None:
        self.service = service
        self.method = method
        self.settings = settings
        self._on_transition = on_transition
        self._clock = clock
        self._lock = threading.Lock()
        self._counts = SlidingCounts(settings.window, 2, clock=clock)
        self.state = State.CLOSED
        self.reason = ""
        self._opened_at = 0.0
        self._trials = 0  # trial calls let through while half-open
        self._trial_successes = 0

    def allow(self) -> float | None:
        """None: send the call (and report its outcome); else seconds until it may be tried."""
        if self.state is State.CLOSED:  # the hot path: one attribute read, no lock
            return None
        transition = None
        with self._lock:
            wait: float | None = None
            if self.state is State.OPEN:
                left = self._opened_at + self.settings.cooldown - self._clock()
                if left > 0:
                    return left
                transition = self._move(State.HALF_OPEN, "cooldown passed")
            if self.state is State.HALF_OPEN:
                if self._trials >= self.settings.half_open_calls:
                    wait = self.settings.cooldown  # the trials decide; until then, as if open
                else:
                    self._trials += 1
        if transition is not None:
            self._notify(*transition)
        return wait

    def record(self, outcome: Outcome, detail: str = "") -> None:
        """The outcome of a call ``allow()`` let through (and of none other)."""
        transition: tuple[State, State, str] | None = None
        with self._lock:
            state = self.state
            if state is State.HALF_OPEN:
                transition = self._judge_trial(outcome, detail)
            elif outcome is Outcome.ABSENT:
                if state is not State.OPEN:
                    transition = self._move(State.OPEN, f"no consumer: {detail}")
            elif outcome is not Outcome.IGNORE and state is State.CLOSED:
                counts = self._counts
                counts.add(CALLS)
                if outcome is Outcome.FAILURE:
                    counts.add(FAILURES)
                    calls, failures = counts.totals[CALLS], counts.totals[FAILURES]
                    if calls >= self.settings.min_calls and failures >= self.settings.failure_ratio * calls:
                        transition = self._move(State.OPEN, f"{failures} of {calls} calls failed in "
                                                f"{self.settings.window:g}s (last: {detail})")
        if transition is not None:
            self._notify(*transition)

    def trip(self, reason: str) -> None:
        """Open now (the service has no consumer, an operator said so)."""
        with self._lock:
            transition = None if self.state is State.OPEN else self._move(State.OPEN, reason)
        if transition is not None:
            self._notify(*transition)

    @property
    def retry_after(self) -> float:
        """Seconds until the next trial may go out (0 when closed)."""
        if self.state is State.CLOSED:
            return 0.0
        return max(0.0, self._opened_at + self.settings.cooldown - self._clock())

    def _judge_trial(self, outcome: Outcome, detail: str) -> tuple[State, State, str] | None:
        if outcome is Outcome.IGNORE:
            self._trials = max(0, self._trials - 1)  # its slot goes to another trial
            return None
        if outcome is Outcome.OK:
            self._trial_successes += 1
            if self._trial_successes >= self.settings.half_open_calls:
                return self._move(State.CLOSED, f"{self._trial_successes} trial call(s) succeeded")
            return None
        return self._move(State.OPEN, f"a trial call failed: {detail}")

    def _move(self, to: State, reason: str) -> tuple[State, State, str]:
        """Change state (lock held); the listeners hear of it once the lock is let go."""
        before = self.state
        self.state = to
        self.reason = reason
        self._trials = self._trial_successes = 0
        if to is State.OPEN:
            self._opened_at = self._clock()
        if to is State.CLOSED:
            self._counts.clear()
        return before, to, reason

    def _notify(self, before: State, to: State, reason: str) -> None:
        _log_transition(self, before, to, reason)
        if self._on_transition is not None:
            self._on_transition(self, before, to, reason)


def _log_transition(breaker: CircuitBreaker, before: State, to: State, reason: str) -> None:
    log = _log.warning if to is State.OPEN else _log.info
    log("circuit breaker service=%s method=%s from=%s to=%s reason=%s", breaker.service,
        breaker.method, before.value, to.value, reason)


class Breakers:
    """The breakers of one caller, made on first use: per service, or per method where configured."""

    def __init__(self, config: Config, *, clock: Clock = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._per_method = frozenset(_names(config.breaker_per_method))
        self._by_key: dict[tuple[str, str], CircuitBreaker] = {}
        self._lock = threading.Lock()
        self.listeners: list[Transition] = []

    def get(self, service: str, method: str) -> CircuitBreaker:
        key = (service, method if f"{service}.{method}" in self._per_method else ANY_METHOD)
        breaker = self._by_key.get(key)
        if breaker is None:
            with self._lock:
                breaker = self._by_key.get(key)
                if breaker is None:
                    if len(self._by_key) >= MAX_BREAKERS:
                        raise ConfigError(f"more than {MAX_BREAKERS} services called: breakers refused")
                    settings = BreakerSettings.for_service(self._config, service)
                    breaker = CircuitBreaker(service, key[1], settings,
                                             on_transition=self._transition, clock=self._clock)
                    self._by_key[key] = breaker
        return breaker

    def all(self) -> list[CircuitBreaker]:
        with self._lock:
            return list(self._by_key.values())

    def _transition(self, breaker: CircuitBreaker, before: State, to: State, reason: str) -> None:
        for listener in list(self.listeners):
            try:
                listener(breaker, before, to, reason)
            except Exception:
                _log.exception("a circuit breaker listener failed")


MAX_BREAKERS = 10_000  # callers name services; a bounded table all the same


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _service_only(config: Config, service: str, name: str) -> Any:
    """``<service>_<name>`` from the config's extra keys (file or ``AMQPRPC_`` environment)."""
    wanted = f"{service}_{name}".replace("-", "_").upper()
    for key, value in config.extra.items():
        if str(key).upper() == wanted and value not in (None, ""):
            return value
    return None


def _typed(value: Any, kind: type, key: str) -> Any:
    try:
        if kind is bool:
            return str(value).lower() in ("1", "true", "yes", "on") if isinstance(value, str) else bool(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be {kind.__name__}: {value!r}") from None


__all__ = ["ANY_METHOD", "BreakerSettings", "Breakers", "CircuitBreaker", "Outcome", "State",
           "classify"]
