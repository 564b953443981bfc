"""The py-amqp internals amqprpc/transport relies on, checked on the installed version.

``framing.Cork`` swaps ``transport._write``, ``framing.read_frames`` reads into
``transport._read_buffer`` and feeds ``connection.on_inbound_frame``, and ``pyamqp``
publishes with ``channel.send_method`` and listens on ``channel.events``. None of these is
public API: pyproject.toml pins the py-amqp range they were checked on, and an upgrade that
changes one fails here, before anything runs on a broker.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import amqp
from amqp import spec
from amqp.transport import SSLTransport, TCPTransport

from amqprpc.transport.framing import Cork


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


def test_the_installed_py_amqp_is_in_the_pinned_range() -> None:
    project = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    requirement = next(r for r in project["project"]["dependencies"] if r.startswith("amqp"))
    low, high = re.fullmatch(r"amqp>=([\d.]+),<([\d.]+)", requirement).groups()  # type: ignore[union-attr]
    assert _version(low) <= _version(amqp.__version__) < _version(high), (amqp.__version__, requirement)


def test_a_transport_has_write_and_read_buffer() -> None:
    for cls in (TCPTransport, SSLTransport):
        assert list(inspect.signature(cls._write).parameters) == ["self", "s"]
    transport = TCPTransport("127.0.0.1:1")
    assert transport._read_buffer == b""  # bytes: read_frames concatenates to it
    assert transport.sock is None


def test_cork_swaps_write_and_restores_it() -> None:
    transport = TCPTransport("127.0.0.1:1")
    written: list[bytes] = []
    transport._write = written.append  # type: ignore[method-assign]
    real = transport._write
    with Cork(transport) as cork:
        transport._write(b"a")
        transport._write(memoryview(b"b"))
        with cork.paused():
            assert transport._write is real
        assert written == []
    assert transport._write is real and written == [b"ab"]


def test_connection_dispatches_frames_and_heartbeats() -> None:
    assert isinstance(amqp.Connection.on_inbound_frame, property)  # set by connect(): a callable
    for name in ("heartbeat_tick", "collect", "drain_events", "transport", "channel"):
        assert hasattr(amqp.Connection, name), name


def test_channel_send_method_events_and_get_shapes() -> None:
    params = list(inspect.signature(amqp.Channel.send_method).parameters)
    assert params[:4] == ["self", "sig", "format", "args"]
    assert spec.Basic.Publish == (60, 40)
    # channel.events["basic_ack" | "basic_nack" | "basic_return"].add(handler)
    assert "self.events = defaultdict(set)" in inspect.getsource(amqp.Channel.__init__)
    consume = inspect.signature(amqp.Channel.basic_consume).parameters
    assert {"queue", "consumer_tag", "no_ack", "exclusive", "callback", "arguments"} <= set(consume)
    assert "_do_revive" in vars(amqp.Channel)  # a closed channel reopens itself: we replace it


def test_only_the_pyamqp_transport_imports_amqp() -> None:
    """Nothing else sees py-amqp (the testing kit's raw admin channel aside, for test set-up)."""
    root = Path(__file__).parents[3]
    allowed = {"amqprpc/transport/pyamqp.py", "amqprpc/testing/broker.py"}
    importers = {
        str(path.relative_to(root)) for folder in ("amqprpc", "http_bridge")
        for path in (root / folder).rglob("*.py")
        if re.search(r"^\s*(import amqp\b|from amqp\b)", path.read_text(), re.M)
    }
    assert importers <= allowed, sorted(importers - allowed)
