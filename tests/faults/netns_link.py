"""A network link the test can cut for real: two namespaces joined by a veth (root only).

The fault proxy cannot imitate lost packets: it is a userland process, so its kernel keeps
ACKing what a client sends, and TCP-level timeouts (keepalives, ``tcp_user_timeout``) never
fire. Here the client side (a worker process started with :meth:`CuttableLink.run`) and the
server side are two namespaces, and :meth:`CuttableLink.cut` sets the veth down: packets
are really lost, as with a pulled cable. Nothing touches the host's network::

    client ns  <prefix>-c: lo, c0 10.79.N.1/30 ──veth── s0 10.79.N.2/30  server ns <prefix>-s
                 127.0.0.1:P  (not cut) ─┐                 10.79.N.2:Q (cut) ─┐
                                         unix socket → host 127.0.0.1:port  ←┘

Relays are ``socat`` pairs joined by Unix sockets (file paths are not namespaced), as in
tests/cluster/netns.py: :meth:`expose` reaches a host port from the client side without
crossing the veth, :meth:`across` reaches it only across the veth. Namespaces are named
``amqprpc-<pid>-...``, so tests/cluster/netns.py's ``reap_orphan_namespaces`` removes
those of a test process that died without cleaning up.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from .rabbit_node import free_port

__all__ = ["CuttableLink"]

_counter = itertools.count(1)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class CuttableLink:
    """Client and server namespaces joined by one veth; see the module docstring."""

    def __init__(self) -> None:
        n = next(_counter)
        prefix = f"amqprpc-{os.getpid()}-link{n}"
        self.client_ns, self.server_ns = f"{prefix}-c", f"{prefix}-s"
        subnet = 10 + n % 200
        self.client_ip, self.server_ip = f"10.79.{subnet}.1", f"10.79.{subnet}.2"
        self._sockets = Path(tempfile.mkdtemp(prefix="amqprpc-link-"))
        self._processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> CuttableLink:
        _ip("netns", "add", self.client_ns)
        _ip("netns", "add", self.server_ns)
        _ip("-n", self.client_ns, "link", "add", "c0", "type", "veth", "peer", "name", "s0",
            "netns", self.server_ns)
        for ns, dev, address in ((self.client_ns, "c0", self.client_ip),
                                 (self.server_ns, "s0", self.server_ip)):
            _ip("-n", ns, "addr", "add", f"{address}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        return self

    def expose(self, host_port: int) -> int:
        """A port on the client side's 127.0.0.1 that reaches the host's, never cut."""
        port = free_port()
        self._relay(self.client_ns, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", host_port)
        return port

    def across(self, host_port: int) -> tuple[str, int]:
        """``(address, port)`` on the server side that reaches the host's port across the veth."""
        port = free_port()
        self._relay(self.server_ns, f"TCP-LISTEN:{port},bind={self.server_ip},reuseaddr,fork",
                    host_port)
        return self.server_ip, port

    def cut(self) -> None:
        """Pull the cable: every packet between the two sides is lost from now on."""
        _ip("-n", self.server_ns, "link", "set", "s0", "down")

    def heal(self) -> None:
        _ip("-n", self.server_ns, "link", "set", "s0", "up")

    def run(self, cmd: Sequence[str], *, env: Mapping[str, str], cwd: Path,
            output: IO[bytes]) -> subprocess.Popen[bytes]:
        """Start ``cmd`` on the client side; it is killed by :meth:`stop` at the latest."""
        process = subprocess.Popen(["ip", "netns", "exec", self.client_ns, *cmd], env=dict(env),
                                   cwd=cwd, stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT)
        self._processes.append(process)
        return process

    def stop(self) -> None:
        """Kill every process started here and in the namespaces, then delete them."""
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        for ns in (self.client_ns, self.server_ns):
            self._delete(ns)
        shutil.rmtree(self._sockets, ignore_errors=True)

    def __enter__(self) -> CuttableLink:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------

    def _relay(self, ns: str, listen: str, host_port: int) -> None:
        """``listen`` in namespace ``ns`` -> unix socket -> the host's 127.0.0.1:host_port."""
        path = self._sockets / f"{ns}-{host_port}.sock"
        host = ["setpriv", "--pdeathsig", "KILL", "--", "socat",
                f"UNIX-LISTEN:{path},fork", f"TCP:127.0.0.1:{host_port}"]
        inner = ["ip", "netns", "exec", ns, "setpriv", "--pdeathsig", "KILL", "--", "socat",
                 listen, f"UNIX-CONNECT:{path}"]
        for cmd in (host, inner):
            self._processes.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                                    stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL))
            if cmd is host:
                deadline = time.monotonic() + 10
                while not path.exists():  # the inner side must not connect before it listens
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"relay to port {host_port} did not start")
                    time.sleep(0.02)

    @staticmethod
    def _delete(ns: str) -> None:
        result = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                timeout=10)
        for pid in result.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
