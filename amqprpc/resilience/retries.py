"""Which failures may be retried, for which methods, and how long to wait before each retry.

Only methods known to be idempotent are ever retried (``@rpc(idempotent=True)``, learnt
from the service's descriptor, or named in the caller's ``retry_idempotent`` setting).
Even then only failures that say the call did not complete are: ``WorkerLost`` (every
worker that took it died), a refusal by the broker (nack, blocked connection), a lost
connection, and ``CircuitOpen`` (nothing was sent). An application error, a bad request
and a timeout are answers, and are never retried: a timeout has used up the deadline.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..exceptions import BrokerError, CircuitOpen, ConfigError, RemoteError

IsIdempotent = Callable[[str, str], bool]


def retryable(error: BaseException) -> bool:
    """True for failures that leave an idempotent call safe and useful to send again."""
    if isinstance(error, CircuitOpen | BrokerError):
        return True  # BrokerBlocked, ConnectionLost, a nacked request: not (or maybe not) run
    return isinstance(error, RemoteError) and error.exc_type == "WorkerLost"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts and backoff: exponential, capped, with full jitter (AWS's "full jitter")."""

    max_attempts: int = 3
    backoff: float = 0.05
    max_backoff: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"retry_max_attempts must be at least 1, got {self.max_attempts!r}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ConfigError("retry_backoff and retry_max_backoff must not be negative")

    @classmethod
    def from_config(cls, config: Config) -> RetryPolicy:
        return cls(config.retry_max_attempts, config.retry_backoff, config.retry_max_backoff)

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        cap: float = min(self.max_backoff, self.backoff * 2.0 ** (retry - 1))
        return rand() * cap


def idempotent_names(config: Config) -> IsIdempotent:
    """``retry_idempotent = "users.get, catalog.*"``: methods this caller vouches for."""
    names = {name.strip() for name in config.retry_idempotent.split(",") if name.strip()}
    services = {name[:-2] for name in names if name.endswith(".*")}

    def known(service: str, method: str) -> bool:
        return service in services or f"{service}.{method}" in names

    return known
