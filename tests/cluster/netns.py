"""Network namespaces for real partitions between RabbitMQ nodes (root only).

A partition on loopback is impossible: every node shares one network stack. So each node of
a :class:`NetnsCluster` runs in a namespace of its own (``amqprpc-<pid>-<k>-n<i>``) with
one interface, a veth whose other end is on a bridge in a hub namespace
(``amqprpc-<pid>-<k>-hub``)::

    node 1 ns: eth0 10.77.0.1 ──veth── h1 ┐
    node 2 ns: eth0 10.77.0.2 ──veth── h2 ├─ br0 (hub ns)
    node 3 ns: eth0 10.77.0.3 ──veth── h3 ┘

Erlang distribution (node names ``...@10.77.0.i``, one epmd per namespace) runs over that
bridge, so :meth:`NetnsCluster.isolate` (``ip link set h<i> down`` in the hub) cuts node
``i`` off from the others, and :meth:`NetnsCluster.heal` (``up``) joins them again. No
iptables and nothing in the host's network: the addresses exist only between our namespaces.

Clients (the test process) reach a node's AMQP port through a relay that the partition does
not touch: ``socat`` listens on 127.0.0.1:<port> of the host and forwards through a Unix
socket (file paths are not namespaced) to a second ``socat`` inside the node's namespace,
which connects to the node's own 127.0.0.1:<port>. Clients therefore keep reaching both
sides of a partition, as clients of a real cluster would.

Teardown kills every process left in our namespaces (the nodes, their epmd, the relays) and
deletes the namespaces; :func:`reap_orphan_namespaces` does the same for namespaces of test
processes that died without tearing down.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.faults.rabbit_node import RabbitNode, RabbitNodeError

from .cluster import RabbitCluster

__all__ = ["NetnsCluster", "netns_unavailable", "reap_orphan_namespaces"]

_PREFIX = "amqprpc-"
_counter = itertools.count(1)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def netns_unavailable() -> str | None:
    """Why namespaces cannot be used here (a skip reason), or None when they can."""
    if os.geteuid() != 0:
        return "partition tests need root (network namespaces)"
    for tool in ("ip", "socat", "setpriv"):
        if shutil.which(tool) is None:
            return f"partition tests need `{tool}` on PATH"
    probe = f"{_PREFIX}{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else "timeout"
        return f"cannot create a network namespace with a veth pair: {detail}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


def _namespace_pids(name: str) -> list[int]:
    result = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10)
    return [int(pid) for pid in result.stdout.split()]


def _delete_namespace(name: str) -> None:
    """Kill whatever still runs in namespace ``name`` (only ours are named so), then delete it."""
    deadline = time.monotonic() + 10
    while pids := _namespace_pids(name):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)  # let the kernel reap them before the namespace goes
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def reap_orphan_namespaces() -> list[str]:
    """Delete namespaces that test processes which died uncleanly left behind.

    Ours are named ``amqprpc-<pid>-...``; one whose pid is gone is an orphan. Returns them.
    """
    result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    removed = []
    for line in result.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        owner = name[len(_PREFIX):].split("-", 1)[0]
        if not name.startswith(_PREFIX) or not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        _delete_namespace(name)
        removed.append(name)
    return removed


class NetnsCluster(RabbitCluster):
    """A :class:`RabbitCluster` whose nodes run in namespaces on a bridge, partitionable.

    ``node_kwargs`` go to every :class:`RabbitNode`; :meth:`start` builds the network and the
    relays first; :meth:`cleanup` removes everything, whatever state it is in.
    """

    def __init__(self, size: int = 3, **node_kwargs: Any) -> None:
        if not 1 <= size <= 200:
            raise ValueError(f"size must be 1-200, got {size}")
        base = f"{_PREFIX}{os.getpid()}-{next(_counter)}"
        self.hub = f"{base}-hub"
        self.namespaces = [f"{base}-n{i}" for i in range(1, size + 1)]
        self.addresses = [f"10.77.0.{i}" for i in range(1, size + 1)]
        self._relays: list[subprocess.Popen[bytes]] = []
        self._socket_dir = Path(tempfile.mkdtemp(prefix=f"{base}-relay-"))
        self._isolated: set[int] = set()
        cookie = os.urandom(16).hex().upper()
        self.nodes = [
            RabbitNode(cookie=cookie, netns=ns, dist_ip=ip, **node_kwargs)
            for ns, ip in zip(self.namespaces, self.addresses, strict=True)
        ]

    def start(self, timeout: float = 120.0) -> None:
        try:
            self._build_network()
            for node in self.nodes:
                self._start_relay(node)
        except BaseException:
            self.cleanup()
            raise
        super().start(timeout)

    def isolate(self, index: int) -> None:
        """Cut node ``index`` (0-based) off from every other node; clients still reach it."""
        _ip("-n", self.hub, "link", "set", f"h{index + 1}", "down")
        self._isolated.add(index)

    def heal_partition(self) -> None:
        """Reconnect every isolated node to the bridge."""
        for index in sorted(self._isolated):
            _ip("-n", self.hub, "link", "set", f"h{index + 1}", "up")
        self._isolated.clear()

    def heal(self, timeout: float = 120.0) -> None:
        self.heal_partition()
        super().heal(timeout)

    def cleanup(self) -> None:
        try:
            super().cleanup()
        finally:
            for relay in self._relays:
                relay.kill()
                relay.wait(10)
            for name in (*self.namespaces, self.hub):
                _delete_namespace(name)
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    # -- internals ---------------------------------------------------------------------------

    def _build_network(self) -> None:
        _ip("netns", "add", self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for i, (ns, address) in enumerate(zip(self.namespaces, self.addresses, strict=True), 1):
            _ip("netns", "add", ns)
            _ip("-n", self.hub, "link", "add", f"h{i}", "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", self.hub, "link", "set", f"h{i}", "master", "br0")
            _ip("-n", self.hub, "link", "set", f"h{i}", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def _start_relay(self, node: RabbitNode) -> None:
        """host 127.0.0.1:port -> unix socket -> namespace 127.0.0.1:port (see module doc)."""
        assert node.netns is not None
        path = self._socket_dir / f"{node.port}.sock"
        inner = ["ip", "netns", "exec", node.netns, "setpriv", "--pdeathsig", "KILL", "--",
                 "socat", f"UNIX-LISTEN:{path},fork", f"TCP:127.0.0.1:{node.port}"]
        outer = ["setpriv", "--pdeathsig", "KILL", "--", "socat",
                 f"TCP-LISTEN:{node.port},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{path}"]
        for cmd in (inner, outer):
            self._relays.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL))
            if cmd is inner:
                deadline = time.monotonic() + 10
                while not path.exists():  # the host side must not connect before it listens
                    if time.monotonic() > deadline:
                        raise RabbitNodeError(f"relay for {node.nodename} did not start")
                    time.sleep(0.02)
