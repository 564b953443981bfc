"""Configuration as a value: built once (defaults < file < environment < flags), passed down.

There is no module-level config. ``Config.load()`` reads a TOML file and ``AMQPRPC_*``
environment variables; everything it does not know lands in ``extra`` for services to
read (``config["PAYMENTS_URL"]``). Declared on a service class, ``Config()`` injects the
config its container runs with: the container reads it as
``dependencies.config.ConfigDependency`` (a value here, a provider there).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .exceptions import ConfigError
from .routing import check_version, rules_from_config
from .transport.address import parse_broker_urls
from .transport.factory import MEMORY_SCHEME

ENV_PREFIX = "AMQPRPC_"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass(frozen=True, eq=False)
class Config(Mapping[str, Any]):
    """Settings for workers, clients and the bridge.

    Mapping access (``config["KEY"]``) reads ``extra`` first, then the named fields by
    their upper-case name, so services see one flat namespace as in Nameko.
    """

    broker_url: str = DEFAULT_BROKER_URL
    rpc_exchange: str = "nameko-rpc"
    header_prefix: str = "nameko"
    serializer: str = "json"
    concurrency: int = 10
    prefetch: int = 0  # 0: the same as concurrency
    max_message_size: int = 1024 * 1024
    decode_max_depth: int = 64  # what a decoded body may become: DecodeLimits.from_config
    decode_max_items: int = 100_000
    decode_max_string: int = 1024 * 1024
    decode_max_digits: int = 100
    heartbeat: float = 20.0
    connect_timeout: float = 5.0
    rpc_timeout: float = 30.0
    # A waiting call to a service with no consumer fails with ServiceUnavailable, unless this
    # client saw the service alive this recently: then a restart or failover gets that long.
    rpc_presence_patience: float = 30.0
    grace: float = 30.0
    queue_type: str = "classic"
    delivery_limit: int = 20  # quorum queues only: deliveries before the broker gives up
    rpc_max_attempts: int = 3  # runs of a request whose workers keep dying, then WorkerLost
    discovery_interval: float = 2.0  # seconds between a container's announcements (docs/protocol.md)
    discovery_key: str = ""  # shared secret(s) that sign announcements; comma-separated to rotate
    discovery_owners: str = ""  # "users=svc-users,orders=svc-orders": who alone may announce each
    discovery_max_skew: float = 300.0  # seconds an announcement's clock may differ from ours
    discovery_hide_after: float = 600.0  # seconds gone after which a service is no longer listed
    cancellation: int = 1  # callers send cancels, workers honour them (docs/protocol.md); 0: off
    tracing: int = 0  # 1 (or true): OpenTelemetry spans, set up from OTEL_* (docs/observability.md)
    metrics_port: int = 0  # serve Prometheus /metrics on this port in `amqprpc run`; 0: off
    # Circuit breakers in callers (docs/resilience.md); <service>_breaker_<key> overrides one service.
    breaker: int = 0  # 1 (or true): every client, RpcProxy and the bridge keep breakers
    breaker_failure_ratio: float = 0.5  # open when this share of the window's calls failed
    breaker_min_calls: int = 20  # ... and at least this many calls were seen in the window
    breaker_window: float = 10.0  # seconds of outcomes a breaker judges by
    breaker_cooldown: float = 5.0  # seconds open before trial calls go out
    breaker_half_open_calls: int = 3  # trial calls that must all succeed to close again
    breaker_count_errors: int = 0  # 1: application errors (RemoteError...) count as failures
    breaker_per_method: str = ""  # "svc.method, ...": methods with a breaker of their own
    # Retries of idempotent methods, within a budget (docs/resilience.md).
    retries: int = 0  # 1 (or true): retry methods known idempotent on WorkerLost, refusals
    retry_idempotent: str = ""  # "svc.method, svc.*": methods this caller knows are idempotent
    retry_max_attempts: int = 3  # attempts of one call, hedges included
    retry_backoff: float = 0.05  # seconds before the first retry (full jitter), doubling
    retry_max_backoff: float = 1.0  # the cap of that backoff
    retry_budget: float = 0.1  # retries + hedges never above this share of calls in the window
    retry_budget_min: int = 0  # extra attempts allowed per window whatever the traffic
    retry_window: float = 10.0  # seconds the budget counts over
    hedge_after: float = 0.0  # seconds: send a second copy of an idempotent call; 0: no hedging
    # Signed identity (amqprpc.identity, docs/production.md): HMAC keys (comma-separated, or one
    # per line in the file), the first signs; callers given one sign every call, services check it.
    identity_key: str = ""
    identity_key_file: str = ""
    trusted_identity: int = 0  # 1: every service of this process refuses unsigned identities
    identity_max_age: float = 300.0  # seconds ahead a signed identity's deadline may lie
    # Versions and canary routing (amqprpc.routing, docs/protocol.md); rules: [routing.<service>].
    service_version: str = ""  # `amqprpc run --version 2.1.0`: announced, and a queue of its own
    canary: int = 0  # 1 (`--canary`): consume only the version's queue, only calls routed to it
    routing_updates: int = 1  # callers apply live rules sent by `amqprpc route`; 0: config only
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("concurrency", "max_message_size", "delivery_limit", "rpc_max_attempts",
                     "decode_max_depth", "decode_max_items", "decode_max_string", "decode_max_digits"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("prefetch", "metrics_port", "retry_budget_min", "canary", "routing_updates"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)!r}")
        for name in ("heartbeat", "connect_timeout", "rpc_timeout", "rpc_presence_patience", "grace",
                     "discovery_interval",
                     "discovery_max_skew", "discovery_hide_after", "retry_backoff",
                     "retry_max_backoff", "hedge_after", "identity_max_age"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)!r}")
        _check_resilience(self)
        if self.service_version:
            check_version(self.service_version)
        elif self.canary:
            raise ConfigError("canary needs a service_version (amqprpc run --version V --canary)")
        rules_from_config(self.extra.get("routing"))  # a bad [routing.*] table fails here
        if self.serializer not in ("json", "msgpack"):
            raise ConfigError(f"serializer must be 'json' or 'msgpack', got {self.serializer!r}")
        if self.queue_type not in ("classic", "quorum"):
            raise ConfigError(f"queue_type must be 'classic' or 'quorum', got {self.queue_type!r}")
        if self.broker_url.startswith(MEMORY_SCHEME):
            return  # the in-memory broker of that name, in this process (tests)
        try:
            parse_broker_urls(self.broker_url)
        except ConfigError as exc:
            raise ConfigError(f"broker_url: {exc}") from None

    @property
    def effective_prefetch(self) -> int:
        """Unacked deliveries a worker takes: its concurrency unless set."""
        return self.prefetch or self.concurrency

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Config:
        """Layer defaults < TOML file < ``AMQPRPC_*`` environment < ``overrides``."""
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        if path is not None:
            _merge(values, extra, _read_toml(Path(path)), source=str(path))
        env_values = {
            key[len(ENV_PREFIX):].lower(): value
            for key, value in (os.environ if env is None else env).items()
            if key.startswith(ENV_PREFIX)
        }
        _merge(values, extra, env_values, source="environment", from_text=True)
        _merge(values, extra, {k: v for k, v in overrides.items() if v is not None}, "flags")
        try:
            return cls(**values, extra=extra)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None

    def as_dict(self) -> dict[str, Any]:
        """Every setting, for ``amqprpc config``; the broker password is masked."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        data["broker_url"] = mask_password(self.broker_url)
        if self.discovery_key:
            data["discovery_key"] = "***"
        if self.identity_key:
            data["identity_key"] = "***"
        data["extra"] = dict(self.extra)
        return data

    # Mapping: one flat namespace, as Nameko services expect.
    def __getitem__(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        name = key.lower()
        if name in _FIELD_TYPES:
            return getattr(self, name)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        yield from (name.upper() for name in _FIELD_TYPES)
        yield from self.extra

    def __len__(self) -> int:
        return len(_FIELD_TYPES) + len(self.extra)

    def service_setting(self, service: str, name: str) -> tuple[str, Any] | None:
        """``<SERVICE>_<NAME>`` if set, else ``<NAME>``, as ``(key, value)``; None if neither.

        Keys match case-insensitively (``orders_database_url`` in a TOML file,
        ``AMQPRPC_ORDERS_DATABASE_URL`` in the environment); a service name's ``-`` reads
        as ``_``. Dependencies use this for per-service resources such as database URLs.
        """
        wanted = [f"{service}_{name}".replace("-", "_").upper(), name.upper()]
        by_upper = {str(key).upper(): key for key in self.extra}
        for candidate in wanted:
            key = by_upper.get(candidate)
            if key is not None and self.extra[key] not in (None, ""):
                return candidate, self.extra[key]
        return None


def _check_resilience(config: Config) -> None:
    """The breaker and retry settings, checked where they are read (docs/resilience.md)."""
    for name in ("breaker_min_calls", "breaker_half_open_calls", "retry_max_attempts"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)!r}")
    for name in ("breaker_window", "breaker_cooldown", "retry_window"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)!r}")
    for name in ("breaker_failure_ratio", "retry_budget"):
        if not 0 <= getattr(config, name) <= 1:
            raise ConfigError(f"{name} must be between 0 and 1, got {getattr(config, name)!r}")


_FIELD_TYPES: dict[str, type] = {
    f.name: {"str": str, "int": int, "float": float}[str(f.type)]
    for f in fields(Config)
    if f.name != "extra"
}


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # here: a worker configured without a file never loads it (~1.4 MiB RSS)

    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    # Settings may sit at the top level or under an [amqprpc] table.
    section = data.pop("amqprpc", {})
    return {**data, **section} if isinstance(section, dict) else data


def _merge(
    values: dict[str, Any],
    extra: dict[str, Any],
    source_values: Mapping[str, Any],
    source: str,
    from_text: bool = False,
) -> None:
    for key, value in source_values.items():
        name = key.lower()
        kind = _FIELD_TYPES.get(name)
        if kind is None:
            extra[key.upper() if from_text else key] = value
            continue
        try:
            values[name] = kind(value) if from_text or kind is float else value
        except ValueError:
            raise ConfigError(f"{name} from {source} must be {kind.__name__}: {value!r}") from None
        if not isinstance(values[name], kind):
            raise ConfigError(f"{name} from {source} must be {kind.__name__}: {value!r}")


def mask_password(urls: str) -> str:
    """``urls`` (``;``-separated) with each password as ``***``: for logs and printed config."""
    return ";".join(_mask_one_password(url) for url in urls.split(";"))


def _mask_one_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
