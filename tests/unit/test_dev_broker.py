"""What broker ``amqprpc dev`` picks: its own vhost on a running broker, else a private node."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from amqprpc import Config
from amqprpc.cli import dev
from amqprpc.devservers import DevServerError, dev_vhost_name, free_port, make_vhost, with_vhost
from amqprpc.transport.address import BrokerAddress


@pytest.fixture
def management():
    """A stand-in for the RabbitMQ management API that records the PUTs it gets."""
    seen: list[tuple[str, str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            user = base64.b64decode(self.headers["Authorization"].split()[1]).decode()
            seen.append((self.path, user, body))
            self.send_response(201 if user == "ada:secret" else 401)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-management", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_the_vhost_is_made_through_the_management_api(management):
    url, seen = management
    address = BrokerAddress.from_url("amqp://ada:secret@127.0.0.1:5672/")
    assert make_vhost(address, "amqprpc-dev-ada-shop", management_url=url) == f"the management API at {url}"
    assert seen == [("/api/vhosts/amqprpc-dev-ada-shop", "ada:secret", {}),
                    ("/api/permissions/amqprpc-dev-ada-shop/ada", "ada:secret",
                     {"configure": ".*", "write": ".*", "read": ".*"})]


def test_refusals_are_named(management):
    url, _seen = management
    remote = BrokerAddress.from_url("amqp://bob:wrong@192.0.2.1:5672/")
    with pytest.raises(DevServerError) as caught:
        make_vhost(remote, "v", management_url=url)
    assert "answered 401" in str(caught.value) and "not on this machine" in str(caught.value)
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DevServerError, match=r"management API at http://127\.0\.0\.1"):
        make_vhost(remote, "v", management_url=closed)


def test_names_and_urls():
    assert dev_vhost_name(Path("/home/ada/shop/.amqprpc-dev")).endswith("-shop")
    assert dev_vhost_name(Path("/x y/.state")).startswith("amqprpc-dev-")
    assert " " not in dev_vhost_name(Path("/x y/.state"))
    assert with_vhost("amqp://u:p@a:1/;amqps://u:p@b:2/?cafile=/ca.pem", "v/1") == (
        "amqp://u:p@a:1/v%2F1;amqps://u:p@b:2/v%2F1?cafile=/ca.pem")


@pytest.fixture
def answering(monkeypatch):
    monkeypatch.setattr(dev, "amqp_answers", lambda host, port: True)
    monkeypatch.setattr(dev, "vhost_usable", lambda address, vhost: False)


def test_a_vhost_made_by_an_earlier_run_is_not_made_again(monkeypatch, tmp_path):
    monkeypatch.setattr(dev, "amqp_answers", lambda host, port: True)
    monkeypatch.setattr(dev, "vhost_usable", lambda address, vhost: True)
    monkeypatch.setattr(dev, "make_vhost", lambda *a, **kw: pytest.fail("made again"))
    environment = dev.DevEnvironment()
    dev._provide_broker(Config(), tmp_path / "state", environment)
    assert environment.notes[0].endswith("(its own, made by an earlier run)")


def test_dev_takes_its_own_vhost_on_a_running_broker(answering, monkeypatch, tmp_path):
    made: list[str] = []
    monkeypatch.setattr(dev, "make_vhost", lambda address, vhost, **kw: made.append(vhost) or "rabbitmqctl")
    environment = dev.DevEnvironment()
    dev._provide_broker(Config(), tmp_path / "state", environment)
    assert environment.env["AMQPRPC_BROKER_URL"] == f"amqp://guest:guest@127.0.0.1:5672/{made[0]}"
    assert environment.notes == [
        f"broker: 127.0.0.1:5672, vhost {made[0]} (its own, made through rabbitmqctl)"]


def test_a_vhost_in_the_url_is_used_as_it_is(answering, monkeypatch, tmp_path):
    monkeypatch.setattr(dev, "make_vhost", lambda *a, **kw: pytest.fail("no vhost to make"))
    environment = dev.DevEnvironment()
    dev._provide_broker(Config(broker_url="amqp://u:p@10.0.0.5/team"), tmp_path, environment)
    assert environment.env["AMQPRPC_BROKER_URL"] == "amqp://u:p@10.0.0.5/team"


def refuse(*args: Any, **kwargs: Any) -> str:
    raise DevServerError("cannot create the vhost 'v': nope")


def test_no_vhost_on_a_configured_broker_means_its_root(answering, monkeypatch, tmp_path):
    monkeypatch.setattr(dev, "make_vhost", refuse)
    environment = dev.DevEnvironment()
    dev._provide_broker(Config(broker_url="amqp://u:p@10.0.0.5/"), tmp_path, environment)
    assert environment.env["AMQPRPC_BROKER_URL"] == "amqp://u:p@10.0.0.5/"
    assert "vhost / (configured; cannot create the vhost" in environment.notes[0]


def test_no_vhost_and_nothing_configured_means_a_private_node_with_aligned_lines(
        answering, monkeypatch, tmp_path, capsys):
    class Node:
        port = 5999
        url = "amqp://guest:guest@127.0.0.1:5999/"
        log_path = tmp_path / "log" / "stdout.log"

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def start(self, timeout: float) -> None:
            pass

    monkeypatch.setattr(dev, "make_vhost", refuse)
    monkeypatch.setattr(dev, "rabbitmq_installed", lambda: True)
    monkeypatch.setattr(dev, "RabbitServer", Node)
    monkeypatch.setenv("NO_COLOR", "1")
    environment = dev.DevEnvironment(width=len("payments"))
    dev._provide_broker(Config(), tmp_path, environment)
    assert environment.env["AMQPRPC_BROKER_URL"] == Node.url
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["     dev | cannot create the vhost 'v': nope",
                     "     dev | the broker at 127.0.0.1:5672 is shared: starting a private node "
                     "on 127.0.0.1:5999 ..."]
