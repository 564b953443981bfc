"""Where the broker is: ``amqp://`` and ``amqps://`` URLs parsed once, checked, printable.

A broker URL may name several nodes of a cluster, separated by ``;`` (as kombu writes
them): ``amqp://u:p@node1:5672/;amqp://u:p@node2:5672/``. Connections try them in order
and move on to the next when one cannot be reached.

An ``amqps://`` URL may carry TLS parameters in its query (``?cafile=...&certfile=...``);
amqprpc/transport/tls.py says which and checks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..exceptions import ConfigError
from .tls import TlsSettings


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where and how to connect, parsed from an ``amqp://`` URL; ``tls`` is None for plain AMQP."""

    host: str
    port: int
    userid: str
    password: str
    virtual_host: str
    tls: TlsSettings | None

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        shown = url.replace(f":{parts.password}@", ":***@", 1) if parts.password else url
        if parts.scheme not in ("amqp", "amqps"):
            raise ConfigError(f"broker URL must start with amqp:// or amqps://: {url!r}")
        if parts.fragment:
            raise ConfigError(f"broker URL has a '#' fragment, which means nothing here: {shown!r}")
        try:
            port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        except ValueError:
            raise ConfigError(f"broker URL has an invalid port: {url!r}") from None
        tls = None
        if parts.scheme == "amqps":
            tls = TlsSettings.from_query(parts.query, shown, has_credentials=parts.username is not None)
        elif parts.query:
            raise ConfigError(f"broker URL: TLS parameters need an amqps:// URL, not amqp://: {shown!r}")
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            userid=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            virtual_host=vhost,
            tls=tls,
        )

    def __str__(self) -> str:
        if self.tls is None:
            return f"amqp://{self.userid}@{self.host}:{self.port}/"
        user = "(certificate)" if self.tls.external_auth else self.userid
        return f"amqps://{user}@{self.host}:{self.port}/"


def parse_broker_urls(urls: str) -> list[BrokerAddress]:
    """Every node a ``;``-separated broker URL names, in order; ConfigError names a bad one."""
    parts = [part.strip() for part in urls.split(";")]
    if not any(parts):
        raise ConfigError(f"broker URL is empty: {urls!r}")
    if not all(parts):
        raise ConfigError(f"broker URL has an empty entry between ';': {urls!r}")
    return [BrokerAddress.from_url(part) for part in parts]
