"""The servers ``amqprpc dev`` provides, and its answer when it cannot provide a broker."""

from __future__ import annotations

import shutil
from pathlib import Path

import amqp
import pytest
from click.testing import CliRunner

from amqprpc.cli import main
from amqprpc.devservers import (
    RabbitServer,
    free_port,
    make_vhost,
    port_open,
    rabbitmq_installed,
    vhost_usable,
)
from amqprpc.transport.address import BrokerAddress

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_private_rabbitmq_node_boots_with_the_projects_rabbitmq_conf_and_makes_vhosts(
        tmp_path: Path) -> None:
    """A setting the installed RabbitMQ does not know would stop the node from booting,
    and with it the demo on a fresh machine."""
    if not rabbitmq_installed():
        pytest.fail("rabbitmq-server is not installed (apt-get install -y rabbitmq-server)")
    node = RabbitServer(tmp_path / "rabbitmq", conf=ROOT / "rabbitmq.conf")
    try:
        node.start(timeout=120)
        connection = amqp.Connection(host=f"127.0.0.1:{node.port}", connect_timeout=5)
        connection.connect()
        # The broker announces what it enforces: the frame and channel limits of the conf.
        assert connection.channel_max == 128
        connection.close()
        # `dev` on a running broker takes a vhost of its own: here through rabbitmqctl (the
        # node has no management plugin, so the API is refused first).
        address = BrokerAddress.from_url(node.url)
        how = make_vhost(address, "amqprpc-dev-test", ctl_env=node.ctl_env(), ctl_node=node.NODENAME,
                         management_url=f"http://127.0.0.1:{free_port()}")
        assert how == "rabbitmqctl"
        assert vhost_usable(address, "amqprpc-dev-test") and not vhost_usable(address, "no-such-vhost")
        inside = amqp.Connection(host=f"127.0.0.1:{node.port}", virtual_host="amqprpc-dev-test",
                                 connect_timeout=5)
        inside.connect()
        inside.channel().queue_declare("dev-vhost-probe", exclusive=True)
        inside.close()
    finally:
        node.stop()
        shutil.rmtree(tmp_path / "rabbitmq", ignore_errors=True)
    assert not port_open(node.port)


def test_dev_says_how_to_install_a_broker_when_none_answers(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    monkeypatch.setattr("amqprpc.cli.dev.rabbitmq_installed", lambda: False)
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, [
        "dev", "services.greeter", "--state-dir", str(tmp_path),
        "--broker", f"amqp://guest:guest@127.0.0.1:{free_port()}/",
    ])
    assert result.exit_code == 3, result.output
    assert "apt-get install -y rabbitmq-server" in result.output
    assert len(result.output.strip().splitlines()) == 1
