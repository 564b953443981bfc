"""TLS options of an ``amqps://`` URL are checked at start, each error naming the problem."""

from __future__ import annotations

import pytest

from amqprpc import ConfigError
from amqprpc.transport.address import BrokerAddress
from amqprpc.transport.tls import login_method, ssl_options


def test_amqps_verifies_the_host_by_default():
    address = BrokerAddress.from_url("amqps://u:p@broker.internal/prod")
    assert address.tls is not None and address.tls.verify
    options = ssl_options(address)
    assert isinstance(options, dict) and options["server_hostname"] == "broker.internal"
    assert login_method(address) == "PLAIN"


def test_server_name_overrides_the_host_name_checked():
    address = BrokerAddress.from_url("amqps://u:p@10.0.0.5/?server_name=broker.internal")
    options = ssl_options(address)
    assert isinstance(options, dict) and options["server_hostname"] == "broker.internal"


@pytest.mark.parametrize(("url", "problem"), [
    ("amqps://h/?bogus=1", "bogus"),
    ("amqps://h/?verify=nope", "verify"),
    ("amqps://h/?verify=full&verify=none", "twice"),
    ("amqps://h/?cafile=", "empty"),
    ("amqps://h/?cafile=/no/such/ca.pem", "cannot be loaded"),
    ("amqps://h/?keyfile=/k.pem", "keyfile needs certfile"),
    ("amqps://h/?auth=external", "needs certfile"),
    ("amqps://h/?verify=none&cafile=/ca.pem", "verify=none"),
    ("amqps://h/?server_name=a/b", "server_name"),
    ("amqp://h/?cafile=/ca.pem", "need an amqps:// URL"),
])
def test_bad_tls_options_fail_at_start_naming_the_problem(url, problem):
    with pytest.raises(ConfigError, match=problem):
        BrokerAddress.from_url(url)


def test_a_handshake_cut_short_without_a_client_certificate_says_what_may_be_missing(tmp_path):
    import ssl

    import trustme

    from amqprpc.transport.tls import handshake_failed

    cert = tmp_path / "client.pem"
    trustme.CA().issue_cert("client").private_key_and_cert_chain_pem.write_to_path(str(cert))

    without = BrokerAddress.from_url("amqps://u:p@broker.internal/")
    error = handshake_failed(without, ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    assert "broker.internal" in str(error) and "certfile=" in str(error)
    with_cert = BrokerAddress.from_url(f"amqps://u:p@broker.internal/?certfile={cert}")
    error = handshake_failed(with_cert, ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    assert "certfile=" not in str(error)  # it has one: no hint that misleads
