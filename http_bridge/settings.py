"""The bridge's settings: a frozen value built from amqprpc's Config (or given directly).

They come from the ``[bridge]`` table of the config file, and from ``AMQPRPC_BRIDGE_*``
environment variables (``AMQPRPC_BRIDGE_PORT=8080``), flags winning over both::

    [bridge]
    port = 8000
    api_keys_file = "/etc/amqprpc/api-keys.toml"
    jwt_issuer = "https://auth.example.com/"
    jwt_audience = "orders-api"
    jwt_rs256_public_key_file = "/etc/amqprpc/jwt.pem"
    jwt_jwks_url = "https://auth.example.com/.well-known/jwks.json"
    cors_allowed_origins = ["https://app.example.com"]
    default_deadline = 10.0
    [bridge.deadlines]
    "reports.build" = 30.0
    [bridge.error_statuses]
    NotFound = 404

Every limit has a safe default; docs/bridge.md lists them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any
from urllib.parse import urlsplit

from amqprpc import Config, ConfigError

_ENV_PREFIX = "BRIDGE_"


@dataclass(frozen=True)
class BridgeSettings:
    """What the gateway enforces. Times in seconds, sizes in bytes."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1

    # auth
    api_keys_file: str = ""
    jwt_hs256_secret: str = ""
    jwt_rs256_public_key_file: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_leeway: float = 30.0
    jwt_roles_claim: str = "roles"
    jwt_jwks_url: str = ""  # the identity provider's key set (https); tokens name their key by kid
    jwt_jwks_cache_ttl: float = 300.0  # a fetched key set is refetched after this long
    jwt_jwks_refetch_interval: float = 30.0  # at most one fetch per this long (unknown kids, failures)
    jwt_jwks_timeout: float = 5.0  # one fetch, connect to last byte
    allow_anonymous: bool = False  # True: non-public routes without roles need no credentials
    # failed credentials per client address: past auth_failure_limit per window, 429; 0: off
    auth_failure_limit: int = 20
    auth_failure_window: float = 60.0
    auth_failure_max_addresses: int = 10_000  # addresses tracked (LRU); a flood cannot grow it
    # token endpoint (/auth/token, http_bridge.token_endpoint): off unless a signing key is set
    token_signing_key_file: str = ""  # Ed25519 private key (PEM); amqprpc bridge new-signing-key
    token_issuer: str = "amqprpc-bridge"  # iss of the access tokens it issues
    token_access_ttl: float = 300.0  # seconds an access token lives (revocation waits at most this)
    token_service: str = "auth"  # the service that checks passwords and keeps refresh tokens
    token_failure_limit: int = 10  # failed logins per account and per address per window, then 429
    token_failure_window: float = 300.0

    # limits
    max_body_size: int = 1024 * 1024
    max_header_size: int = 8190  # one header line
    max_headers_total: int = 32 * 1024  # all headers of a request (431 past it)
    header_timeout: float = 10.0  # first byte of a request -> end of its headers
    body_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    rate_limit: float = 50.0  # requests per second per principal (or client IP); 0: off
    rate_burst: int = 100
    rate_limit_max_keys: int = 10_000
    max_inflight: int = 1000  # RPC calls in flight in this process; 503 past it
    max_connections: int = 1024  # open HTTP connections (keep-alive too) per process; refused past it

    # adaptive concurrency (http_bridge.adaptive_concurrency, docs/resilience.md); off: no cost
    adaptive_concurrency: bool = False  # True: shed calls past a limit learnt from latencies (503)
    adaptive_sample_interval: float = 0.1  # seconds per sample window (the limit moves each one)
    adaptive_min_rtt_interval: float = 30.0  # seconds between min-RTT measurements
    adaptive_min_rtt_requests: int = 50  # calls measured at the pinned limit per min-RTT window
    adaptive_buffer: float = 0.25  # latency over min RTT tolerated before the limit shrinks
    adaptive_min_limit: int = 3  # the limit's floor, and its value while min RTT is measured
    adaptive_max_limit: int = 1000  # the limit's ceiling

    # calls
    default_deadline: float = 10.0
    deadlines: Mapping[str, float] = field(default_factory=dict)  # "service.method" -> seconds
    services: tuple[str, ...] = ()  # allow-list of services exposed; empty: every service
    error_statuses: Mapping[str, int] = field(default_factory=dict)  # remote exc_type -> status
    expected_error_status: int = 422  # an exception the method declares as expected, unmapped
    idempotency_ttl: float = 600.0
    idempotency_max_entries: int = 10_000

    # network
    # X-Forwarded-For is honoured only when the socket peer is one of these (addresses or
    # networks: "10.0.0.5", "10.1.0.0/16"); otherwise the client address is the peer's
    trusted_proxies: tuple[str, ...] = ()

    # CORS (browsers on other origins); no origins: off, no CORS header is ever sent
    cors_allowed_origins: tuple[str, ...] = ()  # "https://app.example.com", or "*" (not with credentials)
    cors_allowed_headers: tuple[str, ...] = ()  # request headers allowed besides the ones the bridge reads
    cors_max_age: int = 600  # seconds a browser may cache a preflight answer
    cors_allow_credentials: bool = False  # cookies / TLS client certificates on cross-origin calls

    # SOAP front end (/soap/<service>); the body limit above applies to envelopes too
    soap: bool = True  # False: /soap/ answers 404
    soap_max_depth: int = 64  # element nesting of an envelope
    soap_max_elements: int = 50_000  # elements in one envelope

    # WebSocket (/ws): calls and event subscriptions on one socket (docs/realtime.md)
    websocket: bool = True  # False: /ws answers 404
    ws_max_frame: int = 64 * 1024  # bytes of one client frame (error frame past it; closed 1009 past 4x)
    ws_max_inflight: int = 128  # calls in flight per socket (error frame past it)
    ws_max_subscriptions: int = 32  # event subscriptions per socket
    ws_send_buffer: int = 256  # events waiting for one slow client; past it, ws_slow_client applies
    ws_slow_client: str = "drop"  # "drop": new events dropped, counted in a notice; "disconnect": close 1008
    ws_heartbeat: float = 20.0  # seconds between pings; no pong in time closes the socket
    ws_auth_timeout: float = 5.0  # a socket without credentials must send its auth frame by then
    ws_event_queue_max: int = 10_000  # events the broker holds for the bridge's queue (oldest dropped)
    # the operators' page (GET /dashboard, docs/bridge.md "Dashboard"); off unless enabled
    # HTTP header -> context key: each listed header a client sends travels on as that context
    # value, to the service and every call it makes (sticky canary routing by a header:
    # [routing.<service>] sticky = "context:<key>"). Keys the bridge or the identity set are refused.
    context_headers: Mapping[str, str] = field(default_factory=dict)

    dashboard: bool = False
    dashboard_roles: tuple[str, ...] = ("admin",)  # state.json needs one of these roles

    def __post_init__(self) -> None:
        for name in ("max_body_size", "max_header_size", "max_headers_total", "max_inflight",
                     "rate_burst", "rate_limit_max_keys", "idempotency_max_entries", "workers",
                     "soap_max_depth", "soap_max_elements", "max_connections",
                     "auth_failure_max_addresses", "ws_max_frame", "ws_max_inflight",
                     "ws_max_subscriptions", "ws_send_buffer", "ws_event_queue_max", "token_failure_limit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"bridge.{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("header_timeout", "body_timeout", "default_deadline", "keepalive_timeout",
                     "jwt_jwks_cache_ttl", "jwt_jwks_refetch_interval", "jwt_jwks_timeout",
                     "auth_failure_window", "ws_heartbeat", "ws_auth_timeout", "token_access_ttl",
                     "token_failure_window"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"bridge.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("rate_limit", "auth_failure_limit"):
            if getattr(self, name) < 0:
                raise ConfigError(f"bridge.{name} must not be negative (0 turns it off), "
                                  f"got {getattr(self, name)!r}")
        object.__setattr__(self, "trusted_proxies", tuple(v.strip() for v in self.trusted_proxies))
        for value in self.trusted_proxies:
            proxy_network(value)
        for key, seconds in self.deadlines.items():
            if not isinstance(seconds, int | float) or seconds <= 0:
                raise ConfigError(f"bridge.deadlines[{key!r}] must be a positive number of seconds")
        for key, status in self.error_statuses.items():
            if not isinstance(status, int) or not 400 <= status <= 599:
                raise ConfigError(f"bridge.error_statuses[{key!r}] must be an HTTP status 400..599")
        if not 400 <= self.expected_error_status <= 499:
            raise ConfigError("bridge.expected_error_status must be a 4xx status")
        if self.jwt_jwks_url:
            _check_jwks_url(self.jwt_jwks_url)
        # Stored normalised, as browsers send an Origin: lower case, no default port.
        object.__setattr__(self, "cors_allowed_origins", _origins(self.cors_allowed_origins))
        if "*" in self.cors_allowed_origins and self.cors_allow_credentials:
            raise ConfigError("bridge.cors_allowed_origins: '*' cannot be combined with "
                              "bridge.cors_allow_credentials = true (browsers refuse it); list the origins")
        for header in self.cors_allowed_headers:
            if not _HEADER_NAME.match(header):
                raise ConfigError(f"bridge.cors_allowed_headers: {header!r} is not a header name "
                                  "(letters, digits and '-'; no '_', which the bridge refuses, no '*')")
        for name in ("adaptive_sample_interval", "adaptive_min_rtt_interval", "adaptive_min_rtt_requests",
                     "adaptive_min_limit"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"bridge.{name} must be positive, got {getattr(self, name)!r}")
        if self.adaptive_buffer < 0:
            raise ConfigError(f"bridge.adaptive_buffer must not be negative, got {self.adaptive_buffer!r}")
        if self.adaptive_max_limit < self.adaptive_min_limit:
            raise ConfigError(f"bridge.adaptive_max_limit ({self.adaptive_max_limit}) must be at least "
                              f"bridge.adaptive_min_limit ({self.adaptive_min_limit})")
        if self.ws_slow_client not in ("drop", "disconnect"):
            raise ConfigError("bridge.ws_slow_client must be 'drop' or 'disconnect', "
                              f"got {self.ws_slow_client!r}")
        for header, key in self.context_headers.items():
            if not isinstance(header, str) or not _HEADER_NAME.match(header):
                raise ConfigError(f"bridge.context_headers: {header!r} is not a header name "
                                  "(letters, digits and '-')")
            if not isinstance(key, str) or not _CONTEXT_KEY.match(key) or key in RESERVED_CONTEXT_KEYS:
                raise ConfigError(f"bridge.context_headers[{header!r}]: {key!r} is not a context key a "
                                  "client may set (letters, digits, '_' and '-', at most 64; not "
                                  f"{', '.join(sorted(RESERVED_CONTEXT_KEYS))})")
        if len({key for key in self.context_headers.values()}) < len(self.context_headers):
            raise ConfigError("bridge.context_headers: two headers name the same context key")
        if self.cors_max_age < 0:
            raise ConfigError(f"bridge.cors_max_age must not be negative, got {self.cors_max_age!r}")

    def deadline_for(self, service: str, method: str) -> float:
        return float(self.deadlines.get(f"{service}.{method}", self.default_deadline))

    def replace(self, **changes: Any) -> BridgeSettings:
        """A copy with some settings changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_config(cls, config: Config | None, **overrides: Any) -> BridgeSettings:
        """Settings from ``config.extra``: the ``[bridge]`` table, then ``BRIDGE_*`` keys."""
        values: dict[str, Any] = {}
        extra = config.extra if config is not None else {}
        table = extra.get("bridge") or extra.get("BRIDGE") or {}
        if not isinstance(table, Mapping):
            raise ConfigError("the [bridge] section of the config must be a table")
        known = {f.name: f for f in fields(cls)}
        for key, value in table.items():
            if key.lower() not in known:
                raise ConfigError(f"unknown bridge setting {key!r} (known: {', '.join(sorted(known))})")
            values[key.lower()] = _convert(known[key.lower()], value, f"[bridge] {key}")
        for key, value in extra.items():
            if isinstance(key, str) and key.upper().startswith(_ENV_PREFIX):
                name = key[len(_ENV_PREFIX):].lower()
                if name in known:
                    values[name] = _convert(known[name], value, key)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")
_CONTEXT_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# What the bridge sets itself or a worker trusts: never from a client header.
RESERVED_CONTEXT_KEYS = frozenset({"user_id", "roles", "auth_token", "call_id_stack", "idempotency_key"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origins(values: tuple[str, ...]) -> tuple[str, ...]:
    """Each allowed origin as a browser serialises it; ConfigError naming a bad one."""
    out: list[str] = []
    for value in values:
        text = value.strip()
        if text == "*":
            if len(values) > 1:
                raise ConfigError("bridge.cors_allowed_origins: '*' must be the only entry")
            return ("*",)
        problem = None
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            parts, port, problem = None, None, str(exc)
        if parts is not None and problem is None:
            if not parts.scheme or not parts.hostname:
                problem = "expected scheme://host[:port], e.g. https://app.example.com"
            elif parts.path not in ("", "/") or parts.query or parts.fragment or parts.username is not None:
                problem = "an origin has no path, query, fragment or user (scheme://host[:port])"
            elif "*" in text:
                problem = "wildcards are not supported; list each origin, or use '*' alone"
        if problem is not None:
            raise ConfigError(f"bridge.cors_allowed_origins: {value!r}: {problem}")
        assert parts is not None and parts.hostname is not None
        scheme, host = parts.scheme.lower(), parts.hostname.lower()
        if ":" in host:
            host = f"[{host}]"
        origin = f"{scheme}://{host}"
        if port is not None and port != _DEFAULT_PORTS.get(scheme):
            origin += f":{port}"
        if origin not in out:
            out.append(origin)
    return tuple(out)


def proxy_network(value: str) -> IPv4Network | IPv6Network:
    """A ``trusted_proxies`` entry as a network (an address is a /32 or /128); ConfigError if bad."""
    try:
        return ip_network(value, strict=False)
    except ValueError:
        raise ConfigError(f"bridge.trusted_proxies: {value!r} is not an IP address or network "
                          "(e.g. 10.0.0.5, 10.1.0.0/16, fd00::/8); host names are not accepted") from None


def _check_jwks_url(url: str) -> None:
    """https only: a key set fetched in clear text lets whoever is on the path mint tokens."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and host and _is_loopback(host):
        return  # a local identity provider (development, tests)
    raise ConfigError(f"bridge.jwt_jwks_url must be an https:// URL (http:// only for localhost), "
                      f"got {url!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _convert(f: dataclasses.Field[Any], value: Any, source: str) -> Any:
    """A setting from TOML (typed) or the environment (text) as its declared type."""
    kind = str(f.type)
    try:
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "str":
            return str(value)
        if kind.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if kind.startswith("Mapping"):
            if not isinstance(value, Mapping):
                raise ValueError("expected a table")
            return dict(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: expected {kind}, got {value!r}") from None
    return value
