"""``amqprpc shell`` in a terminal: Tab completes a running service and its methods."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
import uuid

import pytest

from amqprpc import rpc

pytestmark = pytest.mark.integration


class Catalog:
    name = "catalog"

    @rpc
    def lookup(self, sku: str) -> str:
        return sku


class Terminal:
    """``amqprpc shell`` on a pseudo-terminal, so readline is live as for a person typing."""

    def __init__(self, env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the shell
            os.execve(sys.executable, [sys.executable, "-m", "amqprpc", "shell"], env)
        self.seen = b""

    def read_until(self, token: bytes, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while token not in self.seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], min(remaining, 0.2))
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:  # the child closed the terminal
                    return token in self.seen
        return True

    def type(self, text: bytes) -> None:
        os.write(self.fd, text)

    def close(self) -> None:
        self.type(b"\x15exit()\n")  # Ctrl-U drops the half-typed line
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, _status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                break
            self.read_until(b"\x00", 0.2)  # drain, so the child is never blocked writing
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def test_tab_completes_a_running_service_and_its_methods(container_factory, amqp_uri):
    name = f"catalog_{uuid.uuid4().hex[:10]}"
    container_factory(type("Catalog", (Catalog,), {"name": name}), discovery_interval=0.2)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AMQPRPC_")},
           "AMQPRPC_BROKER_URL": amqp_uri, "AMQPRPC_DISCOVERY_INTERVAL": "0.2", "TERM": "dumb"}
    terminal = Terminal(env)
    try:
        assert terminal.read_until(b">>> ", 20), terminal.seen
        terminal.type(f"rpc.{name[:12]}".encode())
        # The shell's registry hears the service within an announcement interval: Tab until then.
        deadline = time.monotonic() + 10
        while not terminal.read_until(name[12:].encode(), 0.5):
            assert time.monotonic() < deadline, terminal.seen
            terminal.type(b"\t")
        terminal.type(b".lo\t")
        assert terminal.read_until(b"okup(", 5), terminal.seen
    finally:
        terminal.close()
