"""A private, throw-away RabbitMQ node for fault tests.

Fault tests kill, freeze and restart brokers. They must never do that to the machine's own
broker on 5672, which other engineers and suites share. :class:`RabbitNode` boots a second
node from the installed RabbitMQ (3.10) that shares nothing with the machine's one:

* its own node name (``amqprpc-test-<pid>-<n>@localhost``), AMQP port and distribution port,
  both picked free on 127.0.0.1;
* its own ``HOME`` with its own ``.erlang.cookie``, so no CLI call can reach the machine's node
  by accident, plus its own Mnesia, log, config and enabled-plugins files, all in one temp dir
  (removed by :meth:`RabbitNode.cleanup`);
* no plugins (no management) unless asked for (``plugins=``): each plugin costs boot time.

It runs ``/usr/lib/rabbitmq/bin/rabbitmq-server`` directly (the ``/usr/sbin`` wrappers ``su`` to
the ``rabbitmq`` user and share its cookie) in its own session, with a parent-death SIGTERM
(``setpriv --pdeathsig``): if the test process dies without tearing down (SIGKILL,
``os._exit``), the wrapper script is terminated and stops the beam gracefully, so no node is
left behind. A node that was frozen when its owner died cannot act on that SIGTERM, and a
hard kill never runs :meth:`~RabbitNode.cleanup`; :func:`reap_orphans` (called by the
``rabbit_node`` fixture) SIGKILLs such leftovers and deletes their directories. Stop, kill,
freeze and thaw act on the ``beam.smp`` process itself, found by walking the process tree
under the wrapper, never by name.

Readiness is an AMQP handshake: the node is ready when its listener answers the protocol
header with ``connection.start``. That is cheaper than polling ``rabbitmq-diagnostics ping``
(each CLI call boots an Erlang VM: ~1-2 s of CPU on this 2-core machine) and proves what the
tests need, namely that a client can connect.

Measured on this machine (2 cores, RabbitMQ 3.10.8 on OTP 25, ``+S 1:1``, load ~1): a cold
:meth:`~RabbitNode.start` (fresh data dir) takes 6-10 s, almost all of it beam CPU (5-8 s);
a start on existing data (:meth:`~RabbitNode.restart`, or after :meth:`~RabbitNode.kill`)
4-9 s; a graceful :meth:`~RabbitNode.stop` 1.1 s; a :meth:`~RabbitNode.kill` 0.02 s. Starts
took up to 20 s while other suites loaded both cores: keep ``timeout`` generous and boot once
per session where possible.

Broker timers can be compressed for tests through ``advanced_config``; e.g. a consumer timeout
that fires after ~4 s (values under a minute are "not supported" in production, which is why
``channel_tick_interval`` has to be lowered as well)::

    RabbitNode(advanced_config="[{rabbit, [{channel_tick_interval, 1000},"
                               " {consumer_timeout, 3000}]}].")

Several nodes form a cluster when they share an Erlang cookie (``cookie=``): boot them
together with :meth:`~RabbitNode.launch` then :meth:`~RabbitNode.wait_ready` (both cores
work at once), then ``stop_app``/``join_cluster``/``start_app`` through :meth:`~RabbitNode.ctl`
(tests/cluster/ does this).

A node can also run inside a network namespace (``netns=``, root only), so that a partition
between nodes is a real one: it then uses a long node name on ``dist_ip``, the namespace's
own address, for Erlang distribution, and every CLI call runs in the namespace too. Its AMQP
listener stays on 127.0.0.1 *of the namespace*: whoever starts it must relay
``127.0.0.1:port`` of the host to it (tests/cluster/netns.py does), which is what
:meth:`~RabbitNode.wait_ready` and :attr:`~RabbitNode.url` rely on.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["RabbitNode", "RabbitNodeError", "free_port", "reap_orphans"]

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# One scheduler and no busy-waiting: a test broker should not steal CPU from the tests.
# Distribution listens on loopback only, like the machine's node (or, in a network
# namespace, on the namespace's own address).
_ERL_ARGS = "+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none -kernel inet_dist_use_interface {{{dist_ip}}}"
_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
_counter = itertools.count(1)
_DIR_PREFIX = "amqprpc-rabbit-"


class RabbitNodeError(RuntimeError):
    """The private node failed to start or stop in time, or is in the wrong state for a call."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks it (bind to port 0). Another process could take it before the caller
    binds it; on a test machine that race is rare enough to accept.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _amqp_handshake_ok(port: int, timeout: float) -> bool:
    """Whether the broker on ``port`` answers the AMQP 0-9-1 header with ``connection.start``.

    A bare TCP connect is not enough: a frozen or booting beam can have the listen socket
    open (the kernel completes the handshake) without serving it.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(_AMQP_HEADER)
            frame = sock.recv(16)
    except OSError:
        return False
    # Method frame (type 1) on channel 0, class 10 (connection) method 10 (start).
    return len(frame) >= 11 and frame[0] == 1 and frame[7:11] == b"\x00\x0a\x00\x0a"


def reap_orphans(tmp_dir: Path | None = None) -> list[Path]:
    """Kill the nodes and delete the directories of test processes that died uncleanly.

    A directory is an orphan when the process that created it (``owner.pid``) is gone. Its
    beam is killed only if that pid is really our beam: its command line carries the
    directory's ``home``. Live sessions running in parallel are left alone. Returns the
    directories removed.
    """
    removed = []
    for base in Path(tmp_dir or tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*"):
        try:
            owner = int((base / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not ours, or being created right now
        if Path(f"/proc/{owner}").exists():
            continue
        try:
            beam = int((base / "rabbitmq.pid").read_text())
            cmdline = Path(f"/proc/{beam}/cmdline").read_bytes().split(b"\0")
            if str(base / "home").encode() in cmdline:
                os.kill(beam, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while Path(f"/proc/{beam}").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)  # let it die before its files are deleted
        except (OSError, ValueError):
            pass  # never booted, or already gone
        shutil.rmtree(base, ignore_errors=True)
        removed.append(base)
    return removed


def _children_by_parent() -> dict[int, list[int]]:
    """Map parent pid -> child pids from ``/proc`` (this kernel lacks ``/proc/*/children``)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Field 2 (comm) is in parentheses and may contain spaces; ppid follows the state.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class RabbitNode:
    """One private RabbitMQ node; see the module docstring for what "private" covers.

    Construct, then :meth:`start` (or use it as a context manager). Ports, node name and data
    survive :meth:`stop`/:meth:`kill`, so :meth:`restart` brings back the same broker with its
    durable queues and messages. :meth:`cleanup` stops the node and deletes its directory.

    ``rabbitmq_conf`` is appended to the generated ``rabbitmq.conf`` (new-style
    ``key = value`` lines); ``advanced_config`` replaces the empty ``advanced.config``;
    ``env`` adds or overrides environment variables of the server process. ``plugins`` are
    enabled in this node's own enabled-plugins file (offline, as ``rabbitmq-plugins
    --offline`` would), e.g. ``("rabbitmq_auth_mechanism_ssl",)``. ``cookie`` is the
    Erlang cookie (default: a random one); nodes that should cluster must share it.
    ``netns`` runs the node in that network namespace with distribution on ``dist_ip`` (see
    the module docstring).
    """

    def __init__(
        self,
        *,
        rabbitmq_conf: str = "",
        advanced_config: str = "[].",
        env: Mapping[str, str] | None = None,
        plugins: Sequence[str] = (),
        niceness: int = 0,
        cookie: str | None = None,
        netns: str | None = None,
        dist_ip: str = "127.0.0.1",
    ) -> None:
        if ipaddress.ip_address(dist_ip).version != 4:  # ValueError names a malformed one
            raise ValueError(f"dist_ip must be an IPv4 address, got {dist_ip!r}")
        host = "localhost" if netns is None else dist_ip
        self.nodename = f"amqprpc-test-{os.getpid()}-{next(_counter)}@{host}"
        self.netns = netns
        self._dist_ip = dist_ip
        self.port = free_port()
        self.dist_port = free_port()
        self.base_dir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        self.home = self.base_dir / "home"
        self.log_dir = self.base_dir / "log"
        # A positive niceness keeps a test broker from competing with the machine's broker,
        # but a starved broker misses heartbeats and makes timing-based tests flaky: off by
        # default.
        self._niceness = niceness
        self._extra_env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._beam_pid: int | None = None
        self._frozen = False
        self._write_files(rabbitmq_conf, advanced_config, plugins, cookie or os.urandom(16).hex().upper())

    # -- public API --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """AMQP URL of the default vhost (guest is allowed: we only listen on loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def log_file(self) -> Path:
        """The node's main log file, useful when a test needs to see what the broker did."""
        return self.log_dir / f"{self.nodename}.log"

    @property
    def beam_pid(self) -> int:
        """Pid of the running ``beam.smp``; raises if the node is not running."""
        if self._beam_pid is None or not self.is_running():
            raise RabbitNodeError(f"{self.nodename} is not running")
        return self._beam_pid

    def is_running(self) -> bool:
        """Whether the server process is alive (it may still be booting, or frozen)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 90.0) -> None:
        """Boot the node and wait until it completes an AMQP handshake.

        Raises :class:`RabbitNodeError` (with the end of the node's log) if the server exits
        or is not ready within ``timeout``; the half-started node is killed.

        Call it from a thread that outlives the node (pytest's main thread does): the
        parent-death signal fires when the *thread* that started the process exits.
        """
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the server process and return at once; :meth:`wait_ready` waits for it.

        Lets several nodes boot at the same time. The same thread rule as :meth:`start`.
        """
        if self.is_running():
            raise RabbitNodeError(f"{self.nodename} is already running")
        cmd = [
            "setpriv", "--pdeathsig", "TERM", "--",
            str(RABBITMQ_BIN / "rabbitmq-server"),
        ]  # fmt: skip
        if self._niceness:
            cmd = ["nice", "-n", str(self._niceness), *cmd]
        cmd = [*self._in_netns(), *cmd]  # `ip netns exec` execs the rest: same process tree
        output = (self.log_dir / "stdout.log").open("ab")
        try:
            self._proc = subprocess.Popen(
                cmd,
                env=self._env(),
                cwd=self.base_dir,  # erl_crash.dump lands here, not in the repo
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not the node
            )
        finally:
            output.close()
        self._frozen = False
        self._beam_pid = None

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until the launched node completes an AMQP handshake (see :meth:`start`).

        Also right after ``rabbitmqctl start_app``: the listener answers only once the app runs.
        """
        if self._proc is None:
            raise RabbitNodeError(f"{self.nodename} was never launched")
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._proc.poll() is not None:
                    raise RabbitNodeError(
                        f"{self.nodename} exited with {self._proc.returncode} while booting"
                        f"\n{self._log_tail()}"
                    )
                if self._beam_pid is None:
                    self._beam_pid = self._find_beam()
                if self._beam_pid is not None and _amqp_handshake_ok(self.port, timeout=1.0):
                    return
                if time.monotonic() > deadline:
                    raise RabbitNodeError(f"{self.nodename} not ready after {timeout} s\n{self._log_tail()}")
                # Polling a booting broker: there is no event to wait on. 0.1 s costs
                # nothing next to a multi-second boot.
                time.sleep(0.1)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the node gracefully (SIGTERM to the beam, RabbitMQ's own clean shutdown).

        A frozen node is thawed first, otherwise it could not act on the signal. Falls back
        to :meth:`kill` if the node has not exited within ``timeout``. No-op if not running.
        """
        if not self.is_running():
            self._reap()
            return
        self.thaw()
        self._signal_beam(signal.SIGTERM)
        try:
            self._wait_exit(timeout)
        except RabbitNodeError:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the beam: a broker crash. Waits until the process tree has exited."""
        if self.is_running():
            self._signal_beam(signal.SIGKILL)
            self._wait_exit(30.0)
        self._reap()

    def restart(self, timeout: float = 90.0) -> None:
        """Stop the node if it runs, then start it again with the same ports and data."""
        self.stop()
        self.start(timeout)

    def freeze(self) -> None:
        """SIGSTOP the beam: a hung broker. TCP connects still succeed, nothing is served."""
        os.kill(self.beam_pid, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT the beam after :meth:`freeze`. No-op if the node is not frozen."""
        if self._frozen and self.is_running():
            os.kill(self.beam_pid, signal.SIGCONT)
        self._frozen = False

    def ctl(self, *args: str, timeout: float = 60.0, tool: str = "rabbitmqctl") -> str:
        """Run ``rabbitmqctl -n <this node> <args>`` and return its stdout.

        For example ``node.ctl("list_queues", "name", "messages")``, or another CLI of the
        same installation: ``node.ctl("quorum_status", queue, tool="rabbitmq-queues")``.
        Raises :class:`subprocess.CalledProcessError` on a non-zero exit. Each call costs
        ~1-2 s.
        """
        if tool not in ("rabbitmqctl", "rabbitmq-queues", "rabbitmq-diagnostics"):
            raise ValueError(f"not a RabbitMQ CLI this helper runs: {tool!r}")
        result = subprocess.run(
            [*self._in_netns(), str(RABBITMQ_BIN / tool), *self._longnames(), "-n", self.nodename,
             "-q", *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return result.stdout

    def cleanup(self) -> None:
        """Stop the node (killing it if it will not stop) and delete its directory."""
        try:
            self.stop()
        finally:
            self.kill()
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> RabbitNode:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<RabbitNode {self.nodename} port={self.port} {state}>"

    # -- internals ---------------------------------------------------------------------------

    def _write_files(
        self, rabbitmq_conf: str, advanced_config: str, plugins: Sequence[str], cookie_value: str
    ) -> None:
        for path in (self.home, self.log_dir, self.base_dir / "mnesia"):
            path.mkdir()
        (self.base_dir / "owner.pid").write_text(str(os.getpid()))  # see reap_orphans()
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(cookie_value)
        cookie.chmod(0o400)  # Erlang refuses a cookie file others can read
        conf = f"listeners.tcp.default = 127.0.0.1:{self.port}\n{rabbitmq_conf}\n"
        (self.base_dir / "rabbitmq.conf").write_text(conf)
        (self.base_dir / "advanced.config").write_text(advanced_config + "\n")
        (self.base_dir / "enabled_plugins").write_text(f"[{','.join(plugins)}].\n")
        (self.base_dir / "rabbitmq-env.conf").write_text("")

    def _env(self) -> dict[str, str]:
        base = self.base_dir
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            # Without this the scripts read /etc/rabbitmq/rabbitmq-env.conf, whose
            # NODENAME=rabbit@localhost is the machine's node.
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": _ERL_ARGS.format(
                dist_ip=self._dist_ip.replace(".", ",")),
        }
        if self.netns is not None:
            env["RABBITMQ_USE_LONGNAME"] = "true"
        env.update(self._extra_env)
        return env

    def _in_netns(self) -> list[str]:
        return [] if self.netns is None else ["ip", "netns", "exec", self.netns]

    def _longnames(self) -> list[str]:
        return [] if self.netns is None else ["--longnames"]

    def _find_beam(self) -> int | None:
        """Pid of ``beam.smp`` under our wrapper, or None while it is not exec'd yet.

        Our child is the ``rabbitmq-server`` script (``nice`` and ``setpriv`` exec it); it
        forks a subshell that execs ``erl`` -> ``erlexec`` -> ``beam.smp``, so the beam is
        the script's child.
        """
        assert self._proc is not None
        tree = _children_by_parent()
        todo = [self._proc.pid]
        while todo:
            pid = todo.pop()
            if pid != self._proc.pid and _comm(pid) == "beam.smp":
                return pid
            todo.extend(tree.get(pid, ()))
        return None

    def _signal_beam(self, sig: signal.Signals) -> None:
        pid = self._beam_pid or self._find_beam()
        try:
            if pid is not None:
                os.kill(pid, sig)
            elif self._proc is not None:
                # Not exec'd yet (killed mid-boot): take the whole session down.
                os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass

    def _wait_exit(self, timeout: float) -> None:
        assert self._proc is not None
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RabbitNodeError(f"{self.nodename} did not exit within {timeout} s") from None
        self._reap()

    def _reap(self) -> None:
        """Kill what is left of our session (e.g. ``erl_child_setup``) once the server exited."""
        if self._proc is not None and self._proc.poll() is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._beam_pid = None
        self._frozen = False

    def _log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.log_dir / "stdout.log", self.log_file):
            try:
                text += f"--- {path.name}\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-lines:]
                )
            except OSError:
                pass
        return text
