"""TLS to the broker against real RabbitMQ TLS listeners (security checklist: "TLS that checks
the server"; issue #19 item 2).

Two private nodes, booted together once for this module, with certificates made here by
``trustme``: ``server_auth`` checks no client (``verify_none``), ``mutual`` demands a client
certificate from the test CA (``verify_peer`` + ``fail_if_no_peer_cert``) and offers SASL
EXTERNAL (``rabbitmq_auth_mechanism_ssl``, enabled in that node's own enabled-plugins file).
The broker's certificate names ``localhost`` only, so ``127.0.0.1`` is a wrong host name.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from amqprpc import BrokerUnreachable, ClusterRpcClient, Config, rpc
from amqprpc.containers import ServiceContainer
from amqprpc.transport.pyamqp import AmqpTransport

from ..waiting import wait_until
from .rabbit_node import RabbitNode, free_port, reap_orphans

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

EXTERNAL_USER = "amqprpc-tls-client"  # the client certificate's common name


@dataclass
class Pki:
    ca: Path  # the CA that signed the broker's and the client's certificates
    other_ca: Path  # a CA nobody used: trusting it must not help
    client: Path  # client certificate + key, CN = EXTERNAL_USER, signed by ``ca``
    client_of_other_ca: Path


@dataclass
class TlsNode:
    node: RabbitNode
    tls_port: int

    def url(self, host: str = "localhost", query: str = "", credentials: str = "guest:guest@") -> str:
        return f"amqps://{credentials}{host}:{self.tls_port}/" + (f"?{query}" if query else "")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost")
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    other_ca.cert_pem.write_to_path(str(base / "other-ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(base / "server.pem"))
    server.private_key_pem.write_to_path(str(base / "server.key"))
    # An identity too: without one trustme writes an empty subjectAltName, which Erlang's
    # ssl refuses ("unsupported certificate").
    for issuer, name in ((ca, "client.pem"), (other_ca, "client-other.pem")):
        client = issuer.issue_cert("client.test", common_name=EXTERNAL_USER)
        client.private_key_and_cert_chain_pem.write_to_path(str(base / name))
    return Pki(ca=base / "ca.pem", other_ca=base / "other-ca.pem", client=base / "client.pem",
               client_of_other_ca=base / "client-other.pem")


def _tls_conf(pki: Pki, port: int, *, mutual: bool) -> str:
    base = pki.ca.parent
    lines = [
        f"listeners.ssl.default = 127.0.0.1:{port}",
        f"ssl_options.cacertfile = {pki.ca}",
        f"ssl_options.certfile = {base / 'server.pem'}",
        f"ssl_options.keyfile = {base / 'server.key'}",
        f"ssl_options.verify = {'verify_peer' if mutual else 'verify_none'}",
        f"ssl_options.fail_if_no_peer_cert = {'true' if mutual else 'false'}",
    ]
    if mutual:
        lines += [
            "auth_mechanisms.1 = PLAIN",
            "auth_mechanisms.2 = AMQPLAIN",
            "auth_mechanisms.3 = EXTERNAL",
            "ssl_cert_login_from = common_name",
        ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def tls_nodes(pki: Pki) -> Iterator[tuple[TlsNode, TlsNode]]:
    reap_orphans()
    server_port, mutual_port = free_port(), free_port()
    server_auth = RabbitNode(rabbitmq_conf=_tls_conf(pki, server_port, mutual=False))
    mutual = RabbitNode(rabbitmq_conf=_tls_conf(pki, mutual_port, mutual=True),
                        plugins=("rabbitmq_auth_mechanism_ssl",))
    try:
        server_auth.launch()
        mutual.launch()  # both boot at once
        server_auth.wait_ready()
        mutual.wait_ready()
        yield TlsNode(server_auth, server_port), TlsNode(mutual, mutual_port)
    finally:
        server_auth.cleanup()
        mutual.cleanup()


@pytest.fixture
def server_auth(tls_nodes: tuple[TlsNode, TlsNode]) -> TlsNode:
    return tls_nodes[0]


@pytest.fixture
def mutual(tls_nodes: tuple[TlsNode, TlsNode]) -> TlsNode:
    return tls_nodes[1]


def _connect(url: str, name: str) -> AmqpTransport:
    connection = AmqpTransport(url, name=name, connect_timeout=5)
    connection.start(wait=True)
    return connection


def _refused(url: str) -> str:
    """The message of the BrokerUnreachable a first connect to ``url`` raises."""
    with pytest.raises(BrokerUnreachable) as raised:
        _connect(url, name="tls-refused").stop()
    return str(raised.value)


def _echo_call(url: str) -> Any:
    config = Config(broker_url=url)

    class Echo:
        name = f"tls-{uuid.uuid4().hex[:8]}"

        @rpc
        def echo(self, value: Any) -> Any:
            return value

    container = ServiceContainer(Echo, config)
    container.start()
    try:
        with ClusterRpcClient(config=config, timeout=10) as client:
            return client.call(Echo.name, "echo", {"over": "tls"})
    finally:
        container.stop()


# -- (a) verified ---------------------------------------------------------------------------

def test_rpc_call_over_tls_with_a_trusted_ca_and_the_right_host_name(server_auth: TlsNode, pki: Pki) -> None:
    assert _echo_call(server_auth.url(query=f"cafile={pki.ca}")) == {"over": "tls"}


def test_server_name_names_the_host_the_certificate_is_checked_for(server_auth: TlsNode, pki: Pki) -> None:
    connection = _connect(server_auth.url("127.0.0.1", f"cafile={pki.ca}&server_name=localhost"), "tls-sni")
    try:
        assert connection.is_connected
    finally:
        connection.stop()


# -- (b) wrong host name --------------------------------------------------------------------

def test_wrong_host_name_is_refused_as_a_certificate_verification_failure(
    server_auth: TlsNode, pki: Pki
) -> None:
    message = _refused(server_auth.url("127.0.0.1", f"cafile={pki.ca}"))
    assert "certificate verification failed for broker host '127.0.0.1'" in message
    assert "mismatch" in message.lower()  # OpenSSL's reason: "Hostname mismatch, ..."


def test_a_refused_handshake_is_retried_with_backoff_and_logged_each_time(
    server_auth: TlsNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="amqprpc.transport.pyamqp")
    connection = AmqpTransport(server_auth.url("127.0.0.1", f"cafile={pki.ca}"), name="tls-retry",
                                  connect_timeout=5, max_backoff=10.0)
    started = time.monotonic()
    connection.start(wait=False)
    try:
        def failures() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "certificate verification failed" in r.getMessage()]

        wait_until(lambda: len(failures()) >= 4, "four logged handshake failures", timeout=30)
        elapsed = time.monotonic() - started
        assert not connection.is_connected
    finally:
        connection.stop()
    # Backoff 0.1, 0.2, 0.4 s ... between attempts: 4 failures take at least 0.7 s; a hot
    # loop would have made hundreds in that time.
    assert elapsed >= 0.7
    assert len(failures()) <= 8
    assert all("'127.0.0.1'" in r.getMessage() and "retrying in" in r.getMessage() for r in failures())


# -- (c) untrusted CA -----------------------------------------------------------------------

@pytest.mark.parametrize("query", ["cafile={other_ca}", ""], ids=["another-ca", "system-store"])
def test_a_broker_certificate_from_an_untrusted_ca_is_refused(
    server_auth: TlsNode, pki: Pki, query: str
) -> None:
    message = _refused(server_auth.url(query=query.format(other_ca=pki.other_ca)))
    assert "certificate verification failed for broker host 'localhost'" in message
    # OpenSSL's reason depends on whether the broker sends its CA along with its certificate.
    assert "unable to get local issuer certificate" in message or "self-signed certificate" in message


# -- (d) verify=none ------------------------------------------------------------------------

def test_verify_none_connects_and_warns_of_the_risk(
    server_auth: TlsNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="amqprpc.transport.tls")
    connection = _connect(server_auth.url("127.0.0.1", "verify=none"), "tls-unverified")
    try:
        assert connection.is_connected
    finally:
        connection.stop()
    warnings = [r for r in caplog.records if r.name == "amqprpc.transport.tls"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "verify=none" in warnings[0].getMessage() and "NOT checked" in warnings[0].getMessage()


# -- (e) mutual TLS -------------------------------------------------------------------------

def test_mutual_tls_broker_refuses_a_client_without_a_certificate(mutual: TlsNode, pki: Pki) -> None:
    message = _refused(mutual.url(query=f"cafile={pki.ca}"))
    assert "TLS handshake with broker host 'localhost'" in message
    # The broker's alert, or (when its close beats the alert here, TLS 1.3) the EOF it left.
    assert "certificate required" in message or "closed the connection in the handshake" in message
    assert "certfile=" in message  # and what to do about it either way


def test_mutual_tls_broker_refuses_a_certificate_from_another_ca(mutual: TlsNode, pki: Pki) -> None:
    message = _refused(mutual.url(query=f"cafile={pki.ca}&certfile={pki.client_of_other_ca}"))
    assert "TLS handshake with broker host 'localhost'" in message


def test_mutual_tls_serves_an_rpc_call_with_a_client_certificate(mutual: TlsNode, pki: Pki) -> None:
    assert _echo_call(mutual.url(query=f"cafile={pki.ca}&certfile={pki.client}")) == {"over": "tls"}


# -- (f) SASL EXTERNAL ----------------------------------------------------------------------

def test_auth_external_logs_in_as_the_client_certificate(mutual: TlsNode, pki: Pki) -> None:
    mutual.node.ctl("add_user", EXTERNAL_USER, uuid.uuid4().hex)  # a password nobody knows
    mutual.node.ctl("set_permissions", EXTERNAL_USER, ".*", ".*", ".*")
    url = mutual.url(query=f"cafile={pki.ca}&certfile={pki.client}&auth=external", credentials="")
    connection = _connect(url, "tls-external")
    try:
        rows = mutual.node.ctl("list_connections", "user", "auth_mechanism", "client_properties")
    finally:
        connection.stop()
    ours = [line.split("\t") for line in rows.splitlines() if "tls-external" in line]
    assert [row[:2] for row in ours] == [[EXTERNAL_USER, "EXTERNAL"]]
