"""TLS to the broker: what an ``amqps://`` URL asks for, checked at start, handed to py-amqp.

An ``amqps://`` URL verifies the broker's certificate chain (against the system CA store,
or ``cafile=``) and its host name (the URL's host, or ``server_name=``), with TLS 1.2 at
least. Query parameters add a client certificate (``certfile=``, ``keyfile=``: mutual TLS),
log in as that certificate's identity (``auth=external``: SASL EXTERNAL), or turn
verification off (``verify=none``, which logs a warning on every connect).

py-amqp 5.4 cannot take a ready ``ssl.SSLContext``: ``SSLTransport`` keeps its ``ssl``
argument only if it is a dict (anything else silently becomes ``{}``: chain checked, host
name not). So :func:`ssl_options` gives it the dict its ``_wrap_socket_sni`` builds the
context from, with ``server_hostname`` always set when verifying: without it py-amqp turns
``check_hostname`` off. tests/unit/transport/test_tls.py pins the context it builds.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from ..exceptions import BrokerUnreachable, ConfigError

if TYPE_CHECKING:
    from .address import BrokerAddress

__all__ = ["TlsSettings", "handshake_failed", "login_method", "ssl_options"]

_log = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
VERIFY_VALUES = ("full", "none")
AUTH_VALUES = ("plain", "external")
PARAMETERS = ("auth", "cafile", "certfile", "keyfile", "server_name", "verify")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS options of one broker node, from its URL's query (all checked by :meth:`from_query`)."""

    verify: bool = True
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    server_name: str | None = None
    external_auth: bool = False

    @classmethod
    def from_query(cls, query: str, url: str, *, has_credentials: bool) -> TlsSettings:
        """Parse and check ``?cafile=...&verify=...``; ConfigError names what is wrong.

        Files are loaded once here, so a missing file, a key that does not match its
        certificate or an encrypted key fails at start, not at the first connect.
        """
        values = _parse_query(query, url)
        verify = values.pop("verify", "full")
        if verify not in VERIFY_VALUES:
            raise ConfigError(
                f"broker URL: verify must be 'full' (the default) or 'none', got {verify!r}: {url}"
            )
        auth = values.pop("auth", "plain")
        if auth not in AUTH_VALUES:
            raise ConfigError(
                f"broker URL: auth must be 'plain' (the default) or 'external', got {auth!r}: {url}"
            )
        settings = cls(
            verify=verify == "full",
            cafile=_absolute(values.pop("cafile", None)),
            certfile=_absolute(values.pop("certfile", None)),
            keyfile=_absolute(values.pop("keyfile", None)),
            server_name=values.pop("server_name", None),
            external_auth=auth == "external",
        )
        settings._check(url, has_credentials)
        return settings

    def _check(self, url: str, has_credentials: bool) -> None:
        if not self.verify and (self.cafile or self.server_name):
            raise ConfigError(
                f"broker URL: verify=none checks no certificate, so cafile/server_name would be "
                f"ignored; drop one or the other: {url}"
            )
        if self.keyfile and not self.certfile:
            raise ConfigError(f"broker URL: keyfile needs certfile (the client certificate): {url}")
        if self.external_auth and not self.certfile:
            raise ConfigError(
                f"broker URL: auth=external logs in as the client certificate's identity, "
                f"so it needs certfile: {url}"
            )
        if self.external_auth and has_credentials:
            raise ConfigError(
                f"broker URL: auth=external logs in as the client certificate's identity; "
                f"remove 'user:password@' from the URL: {url}"
            )
        if self.server_name is not None and any(c in self.server_name for c in "/ @:"):
            raise ConfigError(f"broker URL: server_name must be a host name, got {self.server_name!r}: {url}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.cafile:
            try:
                context.load_verify_locations(cafile=self.cafile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"broker URL: cafile {self.cafile} cannot be loaded ({exc}; want PEM CA certificates): "
                    f"{url}"
                ) from None
        if self.certfile:
            try:
                context.load_cert_chain(self.certfile, self.keyfile, password=_refuse_encrypted_key)
            except (OSError, ssl.SSLError, _EncryptedKey) as exc:
                files = f"certfile {self.certfile}" + (f" / keyfile {self.keyfile}" if self.keyfile else "")
                raise ConfigError(
                    f"broker URL: {files} cannot be loaded ({exc}; want a PEM certificate and its "
                    f"private key, in certfile or in keyfile): {url}"
                ) from None


class _EncryptedKey(Exception):
    def __str__(self) -> str:
        return "the key is encrypted; amqprpc reconnects unattended, so it needs an unencrypted key file"


def _refuse_encrypted_key() -> str:
    # Without a callback OpenSSL would prompt on the terminal, at every reconnect.
    raise _EncryptedKey


def _parse_query(query: str, url: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ConfigError(f"broker URL has a malformed query (want ?name=value&...): {url}") from None
    values: dict[str, str] = {}
    for name, value in pairs:
        if name not in PARAMETERS:
            raise ConfigError(
                f"broker URL has an unknown parameter {name!r} (known: {', '.join(PARAMETERS)}): {url}"
            )
        if name in values:
            raise ConfigError(f"broker URL sets {name!r} twice: {url}")
        if not value:
            raise ConfigError(f"broker URL: {name} is empty: {url}")
        values[name] = value
    return values


def _absolute(path: str | None) -> str | None:
    """Resolved now, so that a later change of working directory cannot change the file."""
    return None if path is None else str(Path(path).expanduser().absolute())


def ssl_options(address: BrokerAddress) -> dict[str, Any] | bool:
    """py-amqp's ``ssl=`` argument for one connect to ``address`` (False without TLS).

    Called on every connect: the files are read again, so renewed certificates are picked
    up on the next reconnect, and ``verify=none`` warns each time.
    """
    tls = address.tls
    if tls is None:
        return False
    options: dict[str, Any] = {
        "tls_minimum_version": MINIMUM_VERSION,
        "certfile": tls.certfile,
        "keyfile": tls.keyfile,
    }
    if tls.verify:
        options.update(cert_reqs=ssl.CERT_REQUIRED, ca_certs=tls.cafile,  # None: the system store
                       server_hostname=tls.server_name or address.host)
    else:
        _log.warning(
            "%s: verify=none: the broker's certificate is NOT checked; anyone on the network path "
            "can pose as the broker, read and change every message and capture the password",
            address,
        )
        options.update(cert_reqs=ssl.CERT_NONE, server_hostname=None)  # py-amqp: no hostname check
    return options


def login_method(address: BrokerAddress) -> str:
    """py-amqp's ``login_method=``: EXTERNAL for ``auth=external``, else PLAIN (user:password).

    Never py-amqp's default: it prefers EXTERNAL whenever the broker offers it, so a client
    with a certificate and a password would log in as the certificate's identity.
    """
    return "EXTERNAL" if address.tls is not None and address.tls.external_auth else "PLAIN"


def handshake_failed(address: BrokerAddress, exc: ssl.SSLError) -> BrokerUnreachable:
    """The error a failed TLS handshake raises: what failed, for which host name.

    Callers name ``address`` (host and port) around it; the host name checked may differ
    from it (``server_name=``).
    """
    assert address.tls is not None
    name = address.tls.server_name or address.host
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BrokerUnreachable(
            f"TLS certificate verification failed for broker host {name!r}: "
            f"{exc.verify_message} (check cafile= and server_name= in the broker URL)"
        )
    hint = ""
    if address.tls.certfile is None:
        if getattr(exc, "reason", None) == "TLSV13_ALERT_CERTIFICATE_REQUIRED":
            hint = " (the broker wants a client certificate: certfile= in the broker URL)"
        elif isinstance(exc, ssl.SSLEOFError):
            # TLS 1.3 sends certificate_required after the client's Finished; a broker that
            # closes at once can beat the alert to us, leaving only the EOF.
            hint = (" (the broker closed the connection in the handshake; if it wants a client "
                    "certificate: certfile= in the broker URL)")
    return BrokerUnreachable(f"TLS handshake with broker host {name!r} failed: {exc}{hint}")
