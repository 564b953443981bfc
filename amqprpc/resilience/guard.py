"""One call through the caller's breakers, retries and hedges: what ``Caller.call_async`` runs when
any of them is on (``Resilience.from_config`` is None otherwise, and calls go straight out).

A call to a method not known to be idempotent makes one attempt: the breaker is asked first
(``CircuitOpen`` at once while open, nothing published) and told the outcome. An idempotent
call gets a ``GuardedCall``: its own future, attempts sent one after another with backoff
(``RetryPolicy``) while failures are retryable, each retry paid from the ``RetryBudget``,
never past the call's deadline; with ``hedge_after`` a second copy goes out if the first has
not answered by then (paid from the same budget), the first answer wins and the others are
cancelled. Attempts are scheduled on the connection's I/O thread (``call_later``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any, Protocol

from ..config import Config
from ..exceptions import CircuitOpen, RpcTimeout
from ..futures import settle
from ..messages import Context
from ..transport import Transport
from .announce import BreakerAnnouncer
from .breaker import Breakers, CircuitBreaker, Outcome, classify
from .budget import RetryBudget
from .retries import IsIdempotent, RetryPolicy, idempotent_names, retryable

_log = logging.getLogger(__name__)

Schedule = Callable[[float, Callable[[], None]], None]


class Attempt(Protocol):
    """What a sent request returns (``calls.RpcFuture``)."""

    correlation_id: str
    deadline: float

    def add_done_callback(self, fn: Callable[[Any], None]) -> None: ...
    def cancel(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def exception(self, timeout: float | None = None) -> BaseException | None: ...
    def result(self, timeout: float | None = None) -> Any: ...


class Send(Protocol):
    def __call__(self, service: str, method: str, args: tuple[Any, ...] | list[Any],
                 kwargs: dict[str, Any] | None, *, timeout: float | None,
                 context: Context | None) -> Any: ...


MakeFuture = Callable[[str, str, str, float], Any]  # (service, method, correlation id, timeout)


class Resilience:
    """A caller's breakers, retry policy and budget."""

    def __init__(self, config: Config, *, schedule: Schedule, make_future: MakeFuture) -> None:
        self.config = config
        self.breakers: Breakers | None = Breakers(config) if config.breaker else None
        self.retries = bool(config.retries)
        self.policy = RetryPolicy.from_config(config)
        self.budget = RetryBudget(config.retry_budget, config.retry_window, config.retry_budget_min)
        self.hedge_after = config.hedge_after
        self._named = idempotent_names(config)
        self.lookups: list[IsIdempotent] = [self._named]  # the bridge adds its registry's
        self._schedule = schedule
        self._make_future = make_future

    @classmethod
    def from_config(cls, config: Config, connection: Transport, *, make_future: MakeFuture,
                    owner: str) -> Resilience | None:
        """None when breakers and retries are both off: calls then pay nothing for either.

        With breakers on, their states are announced on ``connection`` (``announce.py``)."""
        if not (config.breaker or config.retries):
            return None
        resilience = cls(config, schedule=connection.call_later, make_future=make_future)
        if resilience.breakers is not None:
            BreakerAnnouncer(connection, resilience.breakers, config, owner)
        return resilience

    def is_idempotent(self, service: str, method: str) -> bool:
        return any(lookup(service, method) for lookup in self.lookups)

    def call(self, send: Send, service: str, method: str, args: tuple[Any, ...] | list[Any],
             kwargs: dict[str, Any] | None, *, timeout: float, context: Context | None,
             hedge_after: float | None = None) -> Any:
        breaker = None if self.breakers is None else self.breakers.get(service, method)
        if self.retries:
            self.budget.record_call()
            if self.is_idempotent(service, method):
                hedge = self.hedge_after if hedge_after is None else hedge_after
                return GuardedCall(self, send, breaker, service, method, args, kwargs, timeout,
                                   context, hedge).start()
        if breaker is None:
            return send(service, method, args, kwargs, timeout=timeout, context=context)
        return _once(breaker, send, service, method, args, kwargs, timeout, context)


def _once(breaker: CircuitBreaker, send: Send, service: str, method: str,
          args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any] | None, timeout: float,
          context: Context | None) -> Any:
    """One attempt, judged by the breaker: the path of every non-idempotent call."""
    wait = breaker.allow()
    if wait is not None:
        raise CircuitOpen(service, method, wait)
    try:
        future = send(service, method, args, kwargs, timeout=timeout, context=context)
    except Exception as exc:
        _refused(breaker, exc)
        raise
    future.add_done_callback(lambda done: _judge(breaker, done))
    return future


def _refused(breaker: CircuitBreaker, error: Exception) -> None:
    """A send that raised: a refusal by the broker counts; a deadline already past is the
    caller's own, and says nothing about the service."""
    outcome = Outcome.IGNORE if isinstance(error, RpcTimeout) else classify(
        error, count_errors=breaker.settings.count_errors)
    breaker.record(outcome, f"{type(error).__name__}: {error}")


def _judge(breaker: CircuitBreaker, done: Future[Any]) -> None:
    try:
        error = done.exception(0)  # one lock, where cancelled() and exception() take two
    except CancelledError:
        breaker.record(Outcome.IGNORE)
        return
    breaker.record(classify(error, count_errors=breaker.settings.count_errors),
                   "" if error is None else f"{type(error).__name__}: {error}")


class GuardedCall:
    """One idempotent call: its attempts, retries and hedges, settled into one future."""

    def __init__(self, owner: Resilience, send: Send, breaker: CircuitBreaker | None, service: str,
                 method: str, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any] | None,
                 timeout: float, context: Context | None, hedge_after: float) -> None:
        self._owner = owner
        self._send = send
        self._breaker = breaker
        self.service, self.method = service, method
        self._args, self._kwargs, self._context = args, kwargs, context
        self._hedge_after = hedge_after
        self.future = owner._make_future(service, method, "", timeout)
        self._lock = threading.Lock()
        self._live: list[Attempt] = []
        self.attempts = 0
        self._last_error: BaseException | None = None
        self.future.add_done_callback(self._on_outcome)

    def start(self) -> Any:
        error = self._attempt(first=True)
        if error is not None:  # failed before anything was sent, and no retry fits
            raise error
        return self.future

    # ------------------------------------------------------------ attempts (any thread)

    def _attempt(self, first: bool = False, hedge: bool = False) -> BaseException | None:
        """Send one attempt; returns the error to raise if the very first one cannot go out."""
        if self.future.done():
            return None
        remaining = self.future.deadline - time.monotonic()
        if remaining <= 0:
            settle(self.future, self._last_error or RpcTimeout(
                f"{self.service}.{self.method}: no reply within {self.future.timeout:.3g}s"))
            return None
        breaker = self._breaker
        wait = None if breaker is None else breaker.allow()
        with self._lock:
            self.attempts += 1
        if wait is not None:
            return self._failed(CircuitOpen(self.service, self.method, wait), first, hedge, wait)
        try:
            attempt = self._send(self.service, self.method, self._args, self._kwargs,
                                 timeout=remaining, context=self._context)
        except Exception as exc:
            if breaker is not None:
                _refused(breaker, exc)
            return self._failed(exc, first, hedge) if retryable(exc) else self._end(exc, first)
        with self._lock:
            self._live.append(attempt)
            if first:
                self.future.correlation_id = attempt.correlation_id
        attempt.add_done_callback(self._on_attempt)
        if first and 0 < self._hedge_after < remaining:
            self._owner._schedule(self._hedge_after, self._hedge)
        return None

    def _retry(self) -> None:
        self._attempt()

    def _hedge(self) -> None:
        with self._lock:
            if self.future.done() or len(self._live) != 1 or self.attempts >= self._owner.policy.max_attempts:
                return
        if self._owner.budget.try_spend():
            _log.debug("%s.%s: no answer after %.3gs; hedging", self.service, self.method, self._hedge_after)
            self._attempt(hedge=True)

    def _failed(self, error: BaseException, first: bool, hedge: bool,
                at_least: float = 0.0) -> BaseException | None:
        """A retryable failure: retry after a backoff if attempts, budget and deadline allow."""
        self._last_error = error
        with self._lock:
            if self._live or hedge:
                return None  # another attempt is still out: its answer decides
            attempts = self.attempts
        delay = max(at_least, self._owner.policy.delay(attempts))
        fits = time.monotonic() + delay < self.future.deadline
        if attempts < self._owner.policy.max_attempts and fits and self._owner.budget.try_spend():
            _log.info("%s.%s: attempt %d failed (%s: %s); retrying in %.0f ms", self.service,
                      self.method, attempts, type(error).__name__, error, delay * 1000)
            self._owner._schedule(delay, self._retry)
            return None
        return self._end(error, first)

    def _end(self, error: BaseException, first: bool) -> BaseException | None:
        if first:
            return error
        settle(self.future, error)
        return None

    # ------------------------------------------------------------ outcomes (I/O thread)

    def _on_attempt(self, attempt: Any) -> None:
        with self._lock:
            if attempt in self._live:
                self._live.remove(attempt)
        breaker = self._breaker
        if attempt.cancelled():
            if breaker is not None:
                breaker.record(Outcome.IGNORE)
            return
        error = attempt.exception()
        if breaker is not None:
            breaker.record(classify(error, count_errors=breaker.settings.count_errors),
                           "" if error is None else f"{type(error).__name__}: {error}")
        if self.future.done():
            return
        if error is None:
            settle(self.future, result=attempt.result())
        elif retryable(error):
            self._failed(error, first=False, hedge=False)
        else:
            settle(self.future, error)

    def _on_outcome(self, future: Future[Any]) -> None:
        """The call is decided (or cancelled by its owner): the attempts still out are losers."""
        with self._lock:
            losers, self._live = self._live, []
        for attempt in losers:
            attempt.cancel()
