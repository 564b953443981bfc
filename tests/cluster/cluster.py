"""A private 3-node RabbitMQ cluster on loopback, built from :class:`RabbitNode`.

Every node is a :class:`~tests.faults.rabbit_node.RabbitNode` (own name, ports, data dir),
so nothing here can reach the machine's broker on 5672. The nodes share one Erlang cookie,
boot together, and the 2nd and 3rd join the 1st with RabbitMQ's own recipe
(``stop_app``, ``join_cluster``, ``start_app``). Every wait has a deadline.

Measured on this machine (2 cores, RabbitMQ 3.10.8): 3 cold nodes boot in ~10 s together,
the two joins take ~5 s more; :meth:`RabbitCluster.cleanup` ~3 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tests.faults.rabbit_node import RabbitNode, RabbitNodeError

__all__ = ["RabbitCluster"]

T = TypeVar("T")


def _poll(condition: Callable[[], T | None], what: str, timeout: float, poll: float = 0.25) -> T:
    """``condition()``'s first truthy value; RabbitNodeError naming ``what`` after ``timeout``.

    The conditions here run a RabbitMQ CLI (~0.5 s each): there is nothing to be notified by.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RabbitNodeError) as exc:
            value, last_error = None, exc  # a node mid-election or mid-boot: ask again
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f" (last error: {_cli_error(last_error)})" if last_error else ""
            raise RabbitNodeError(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(poll)


def _cli_error(exc: Exception | None) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return f"{exc.cmd[-1]!r} exited {exc.returncode}: {(exc.stderr or exc.stdout or '').strip()}"
    return repr(exc)


class RabbitCluster:
    """``size`` private nodes clustered on 127.0.0.1; :meth:`start`, then :meth:`cleanup`.

    ``node_kwargs`` go to every :class:`RabbitNode` (e.g. ``advanced_config``).
    """

    def __init__(self, size: int = 3, **node_kwargs: Any) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, got size={size}")
        cookie = os.urandom(16).hex().upper()
        self.nodes = [RabbitNode(cookie=cookie, **node_kwargs) for _ in range(size)]

    @property
    def url(self) -> str:
        """Every node's AMQP URL, ``;``-separated in node order: amqprpc's failover list."""
        return self.url_from(0)

    def url_from(self, first: int) -> str:
        """The failover list starting at node ``first`` (then the next ones, wrapping round)."""
        order = self.nodes[first:] + self.nodes[:first]
        return ";".join(node.url for node in order)

    def start(self, timeout: float = 120.0) -> None:
        """Boot every node at once, join the others to the first, wait until all run."""
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_ready(timeout)
            first = self.nodes[0]
            for node in self.nodes[1:]:
                node.ctl("stop_app")
                node.ctl("join_cluster", first.nodename)
                node.ctl("start_app")
                node.wait_ready(timeout)
            self.wait_all_running(timeout)
        except BaseException:
            self.cleanup()
            raise

    def running(self) -> list[RabbitNode]:
        """The nodes whose server process is alive."""
        return [node for node in self.nodes if node.is_running()]

    def node_named(self, nodename: str) -> RabbitNode:
        for node in self.nodes:
            if node.nodename == nodename:
                return node
        raise RabbitNodeError(f"{nodename!r} is not a node of this cluster")

    def running_nodes(self) -> set[str]:
        """Names of the nodes the cluster itself reports as running (asks a live node)."""
        status = json.loads(self._ctl_any("cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def wait_all_running(self, timeout: float = 60.0) -> None:
        """Wait until every node is a running member, as the cluster sees it."""
        names = {node.nodename for node in self.nodes}
        _poll(lambda: self.running_nodes() == names, f"all of {sorted(names)} to run", timeout)

    def queue_info(self, queue: str) -> dict[str, Any]:
        """``list_queues`` row of ``queue``: name, type, leader, members, online, messages."""
        output = self._ctl_any(
            "list_queues", "name", "type", "leader", "members", "online", "messages",
            "--formatter", "json",
        )  # fmt: skip
        for row in json.loads(output or "[]"):
            if row["name"] == queue:
                return dict(row)
        raise RabbitNodeError(f"no queue {queue!r} in the cluster")

    def quorum_leader(self, queue: str, timeout: float = 30.0) -> RabbitNode:
        """The running node that leads quorum queue ``queue`` (waits out an election)."""

        def leader() -> RabbitNode | None:
            info = self.queue_info(queue)
            if info.get("type") != "quorum":
                raise RabbitNodeError(f"{queue!r} is a {info.get('type')} queue, not a quorum queue")
            name = info.get("leader")
            if not isinstance(name, str) or "@" not in name:
                return None  # an election is under way
            node = self.node_named(name)
            return node if node.is_running() else None

        return _poll(leader, f"a live leader of {queue!r}", timeout)

    def wait_queue_online(self, queue: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until every member of quorum queue ``queue`` is online (a rejoin caught up)."""

        last: dict[str, Any] = {}

        def online() -> dict[str, Any] | None:
            info = last["info"] = self.queue_info(queue)
            members, up = set(info.get("members") or ()), set(info.get("online") or ())
            return info if members and members == up else None

        try:
            return _poll(online, f"every member of {queue!r} online", timeout)
        except RabbitNodeError as exc:
            info = last.get("info") or {}
            offline = set(info.get("members") or ()) - set(info.get("online") or ())
            logs = "".join(f"\n--- {name}'s log about it:\n{self._log_lines(name, queue)}"
                           for name in offline)
            raise RabbitNodeError(f"{exc}; last seen: {info}{logs}") from None

    def heal(self, timeout: float = 120.0) -> None:
        """Thaw frozen nodes, start stopped or killed ones (they rejoin with their data)."""
        stopped = []
        for node in self.nodes:
            node.thaw()
            if not node.is_running():
                node.launch()
                stopped.append(node)
        for node in stopped:
            node.wait_ready(timeout)
        if stopped:
            self.wait_all_running(timeout)

    def cleanup(self) -> None:
        """Kill every node and delete its data, whatever state it is in.

        No graceful stop: the data goes anyway, and a node paused in a partition's minority
        would not stop gracefully before its timeout.
        """
        errors = []
        for node in self.nodes:
            try:
                node.kill()
                node.cleanup()
            except Exception as exc:  # stop the others anyway; report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]

    def _log_lines(self, nodename: str, containing: str, lines: int = 30) -> str:
        """The last ``lines`` lines of a node's log that mention ``containing``."""
        try:
            text = self.node_named(nodename).log_file.read_text(errors="replace")
        except (OSError, RabbitNodeError) as exc:
            return repr(exc)
        return "\n".join([line for line in text.splitlines() if containing in line][-lines:])

    def _ctl_any(self, *args: str) -> str:
        """``rabbitmqctl`` on the first node that answers: a killed node cannot, and a paused
        one (minority of a partition) refuses commands that need the running app."""
        error: Exception = RabbitNodeError("no node of the cluster is running")
        for node in self.running():
            try:
                return node.ctl(*args, timeout=30)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                error = exc
        raise error
