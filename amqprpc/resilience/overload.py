"""Bounds on what may wait for one service: its queue's length, and one client's calls in flight.

``max_queue_length`` (a service class attribute, or ``<SERVICE>_MAX_QUEUE_LENGTH`` /
``MAX_QUEUE_LENGTH`` in the config, which wins) declares ``rpc-<service>`` with RabbitMQ's
``x-max-length`` and ``x-overflow: reject-publish``: a request the queue has no room for is
nacked at once, and the caller fails it with ``ServiceOverloaded`` instead of letting it
wait out its deadline behind work that cannot finish in time. Unset (or 0) declares the
queue as before, with no argument, so Nameko services can still share it.

``rpc_max_in_flight`` (``RPC_MAX_IN_FLIGHT`` for every service, ``<SERVICE>_RPC_MAX_IN_FLIGHT``
for one) caps the calls one client (one ``Caller``: a ``ClusterRpcClient``, an
``AsyncRpcClient``, a container's ``RpcProxy`` calls) has waiting on a service. A call over
the cap fails at once with ``ServiceOverloaded``; it does not wait for a place, which would
only move the queue into the caller. Unset, no limiter exists and calls pay nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any, Final

from ..config import Config
from ..exceptions import ConfigError, ServiceOverloaded

MAX_QUEUE_LENGTH: Final = "max_queue_length"
MAX_IN_FLIGHT: Final = "rpc_max_in_flight"


def max_queue_length(config: Config, service: str, service_cls: type | None = None) -> int:
    """The bound of ``rpc-<service>``: config first, then the class attribute; 0 is none."""
    setting = config.service_setting(service, MAX_QUEUE_LENGTH)
    if setting is not None:
        return _count(setting[1], setting[0])
    value = getattr(service_cls, MAX_QUEUE_LENGTH, None) if service_cls is not None else None
    if value is None:
        return 0
    return _count(value, f"{getattr(service_cls, '__name__', service)}.{MAX_QUEUE_LENGTH}")


def queue_bound_arguments(max_length: int) -> dict[str, Any]:
    """Queue arguments that make RabbitMQ refuse (nack) publishes past ``max_length`` ready
    messages, rather than drop the oldest (its default): the caller must hear of it."""
    return {"x-max-length": max_length, "x-overflow": "reject-publish"}


def queue_full(service: str) -> ServiceOverloaded:
    """The error for a request the broker nacked: a full bounded queue took no copy of it.

    RabbitMQ nacks only for ``reject-publish`` and for internal queue errors (a quorum
    queue without a leader); either way the request did not enter the queue and never runs.
    """
    return ServiceOverloaded(service, f"the broker refused the request (nacked): the queue "
                                      f"rpc-{service} is full (max_queue_length), or could not "
                                      "take it")


class InFlightLimits:
    """Per-service caps on one caller's calls in flight; thread-safe, O(1) per call."""

    def __init__(self, default: int, per_service: Mapping[str, int]) -> None:
        self.default = default  # 0: no cap unless the service has its own
        self._per_service = {_key(name): cap for name, cap in per_service.items()}
        self._caps: dict[str, int] = {}  # service -> its cap, resolved once
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config) -> InFlightLimits | None:
        """The caps the config sets; None when it sets none (then calls pay nothing)."""
        default = 0
        per_service: dict[str, int] = {}
        suffix = f"_{MAX_IN_FLIGHT.upper()}"
        for key, value in config.extra.items():
            upper = str(key).upper()
            if upper == MAX_IN_FLIGHT.upper():
                default = _count(value, str(key))
            elif upper.endswith(suffix):
                per_service[upper[:-len(suffix)]] = _count(value, str(key))
        if not default and not any(per_service.values()):
            return None
        return cls(default, per_service)

    def cap(self, service: str) -> int:
        cap = self._caps.get(service)
        if cap is None:
            cap = self._caps[service] = self._per_service.get(_key(service), self.default)
        return cap

    def in_flight(self, service: str) -> int:
        return self._counts.get(service, 0)

    def admit(self, future: Future[Any]) -> None:
        """Count ``future`` (an ``RpcFuture``) against its service's cap until it is done;
        ``ServiceOverloaded`` at once when the cap is reached."""
        service: str = getattr(future, "service")  # noqa: B009 - an RpcFuture (calls.py)
        cap = self.cap(service)
        if not cap:
            return
        with self._lock:
            count = self._counts.get(service, 0)
            if count >= cap:
                raise ServiceOverloaded(service, f"this client already has {count} calls in "
                                                 f"flight to it ({MAX_IN_FLIGHT} = {cap})")
            self._counts[service] = count + 1
        future.add_done_callback(self._release)

    def _release(self, future: Future[Any]) -> None:
        service: str = getattr(future, "service")  # noqa: B009
        with self._lock:
            self._counts[service] -= 1


def _key(service: str) -> str:
    return service.replace("-", "_").upper()


def _count(value: Any, source: str) -> int:
    """A non-negative whole number from TOML (an int) or the environment (text)."""
    if isinstance(value, bool):
        raise ConfigError(f"{source} must be a whole number, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source} must be a whole number, got {value!r}") from None
    if number < 0 or (isinstance(value, float) and value != number):
        raise ConfigError(f"{source} must be a whole number >= 0 (0: no bound), got {value!r}")
    return number
