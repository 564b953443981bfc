"""Throw-away servers for local development and tests: SecantusDB and a private RabbitMQ.

``amqprpc dev`` starts them when nothing is configured, so the demo runs on a fresh
machine; the test suite starts SecantusDB the same way. Each server is a child process
that this object owns: ``start()`` returns once the server answers its protocol, and
``stop()`` ends it (SIGTERM, then SIGKILL). Children get a parent-death signal
(``setpriv --pdeathsig``, where available), so a crashed parent leaves no server behind.

* :class:`SecantusServer`: SecantusDB, a Python server that speaks the MongoDB wire
  protocol (``pip install secantusdb``, GPL-2.0; a development and test tool, never a
  runtime dependency of amqprpc). Its gaps compared with mongod (no text indexes, no
  ``$where``) are listed in docs/databases.md.
* :class:`RabbitServer`: a private RabbitMQ node from the installed ``rabbitmq-server``,
  with the project's ``rabbitmq.conf``, its own node name, ports, cookie and data
  directory, listening on 127.0.0.1 only. It shares nothing with a system node.

On a broker that is already running (a shared one), :func:`make_vhost` gives ``dev`` a
virtual host of its own, so its services do not mix with other people's: through the
management API when it answers (``PUT /api/vhosts/<name>``, then the user's permissions),
else with ``rabbitmqctl`` when the broker is on this machine.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from .exceptions import AmqpRpcError
from .transport.address import BrokerAddress

__all__ = ["DevServerError", "RabbitServer", "SecantusServer", "dev_vhost_name", "free_port",
           "make_vhost", "rabbitmq_installed", "vhost_usable", "with_vhost"]

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
RABBITMQ_INSTALL = "apt-get install -y rabbitmq-server"
_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


class DevServerError(AmqpRpcError, RuntimeError):
    """Raised when a development server cannot start (the message ends with its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def amqp_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether an AMQP 0-9-1 broker answers on host:port (``connection.start`` comes back)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_AMQP_HEADER)
            frame = sock.recv(16)
    except OSError:
        return False
    return len(frame) >= 11 and frame[0] == 1 and frame[7:11] == b"\x00\x0a\x00\x0a"


def rabbitmq_installed() -> bool:
    return (RABBITMQ_BIN / "rabbitmq-server").exists()


class _ChildServer:
    """A server process we own; subclasses say how to run it and when it is ready."""

    name = "server"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers; DevServerError if it does not."""
        command = self._command()
        if shutil.which("setpriv"):
            command = ["setpriv", "--pdeathsig", "TERM", "--", *command]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command, env=self._env(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.log_path.parent,
                start_new_session=True,  # Ctrl-C in the terminal is for our process, not it
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._proc.poll() is not None:
                raise DevServerError(f"{self.name} exited with {self._proc.returncode} while "
                                     f"starting\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise DevServerError(f"{self.name} not ready after {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(0.1)  # polling a booting server: there is no event to wait on

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL it if it outlives ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(5)
        _signal_group(proc.pid, signal.SIGKILL)  # helpers left in the group (epmd stays out)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class SecantusServer(_ChildServer):
    """SecantusDB on 127.0.0.1; in memory unless ``storage`` names a directory."""

    name = "SecantusDB"

    def __init__(self, storage: Path | None = None, port: int | None = None,
                 log_path: Path | None = None) -> None:
        self.storage = storage
        self.port = port or free_port()
        default_log = (storage.parent if storage else Path(_tmpdir())) / f"secantus-{self.port}.log"
        super().__init__(log_path or default_log)

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def _command(self) -> list[str]:
        try:
            import secantus  # noqa: F401  (only to fail early with a clear message)
        except ImportError:
            raise DevServerError(
                "SecantusDB is not installed: pip install 'amqprpc[demo]' "
                "(or set MONGO_URL to a MongoDB server)"
            ) from None
        storage = ":memory:" if self.storage is None else str(self.storage)
        if self.storage is not None:
            self.storage.mkdir(parents=True, exist_ok=True)
        return [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
                "--storage-path", storage]

    def _ready(self) -> bool:
        return port_open(self.port)


class RabbitServer(_ChildServer):
    """A private RabbitMQ node whose state lives in ``base_dir`` (kept across runs)."""

    name = "RabbitMQ"

    def __init__(self, base_dir: Path, conf: Path | None = None, port: int | None = None,
                 mqtt_port: int | None = None) -> None:
        self.base_dir = base_dir
        self.conf = conf
        self.port = port or free_port()
        self.mqtt_port = mqtt_port  # set: the rabbitmq_mqtt plugin listens there (docs/realtime.md)
        self.dist_port = free_port()
        super().__init__(base_dir / "log" / "stdout.log")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _command(self) -> list[str]:
        if not rabbitmq_installed():
            raise DevServerError(f"rabbitmq-server is not installed: {RABBITMQ_INSTALL}")
        base = self.base_dir
        for path in (base / "home", base / "log", base / "mnesia"):
            path.mkdir(parents=True, exist_ok=True)
        cookie = base / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(16).hex().upper())
            cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        project = self.conf.read_text() if self.conf is not None else ""
        (base / "rabbitmq.conf").write_text(
            f"{project}\n# amqprpc dev: a private node on loopback\n"
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            + (f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}\n" if self.mqtt_port else "")
        )
        (base / "enabled_plugins").write_text("[rabbitmq_mqtt].\n" if self.mqtt_port else "[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        return [str(RABBITMQ_BIN / "rabbitmq-server")]

    def _env(self) -> dict[str, str]:
        base = self.base_dir
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(base / "home"),
            "RABBITMQ_NODENAME": self.NODENAME,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            # Otherwise the scripts read /etc/rabbitmq/rabbitmq-env.conf (the system node's).
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+S 1:1 +sbwt none "
                                                  "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _ready(self) -> bool:
        return amqp_answers("127.0.0.1", self.port)

    NODENAME = "amqprpc-dev@localhost"

    def ctl_env(self) -> dict[str, str]:
        """The environment ``rabbitmqctl -n NODENAME`` needs to reach this node (its cookie)."""
        return self._env()

    def log_tail(self, lines: int = 20) -> str:
        tail = super().log_tail(lines)
        node_log = self.base_dir / "log" / "amqprpc-dev@localhost.log"
        if node_log.exists():
            tail += "\n" + "\n".join(node_log.read_text(errors="replace").splitlines()[-lines:])
        return tail


def dev_vhost_name(state_dir: Path) -> str:
    """``amqprpc-dev-<user>-<project>``: one vhost per person and project, the same every run."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    name = f"amqprpc-dev-{user}-{state_dir.resolve().parent.name or 'project'}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:100]


def with_vhost(broker_url: str, vhost: str) -> str:
    """``broker_url`` (every ``;``-separated node, TLS query kept) pointing at ``vhost``."""
    out = []
    for part in broker_url.split(";"):
        parts = urlsplit(part.strip())
        out.append(urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, "")))
    return ";".join(out)


def vhost_usable(address: BrokerAddress, vhost: str, timeout: float = 3.0) -> bool:
    """Whether ``address``'s user can log in to ``vhost`` (plain AMQP only): then it exists
    with rights, and ``dev`` need not make it again (each ``rabbitmqctl`` run costs ~1 s)."""
    from .transport.pyamqp import can_log_in  # here: `import amqprpc.cli` stays cheap

    return can_log_in(address, vhost, timeout)


def make_vhost(address: BrokerAddress, vhost: str, *, management_url: str | None = None,
               ctl_env: Mapping[str, str] | None = None, ctl_node: str | None = None) -> str:
    """Create ``vhost`` (if new) with every right for ``address``'s user; says how it did.

    Tries the management API (``management_url``, default ``http://<host>:15672``), then
    ``rabbitmqctl`` (``-n ctl_node``, with ``ctl_env``) when the broker is on this machine.
    DevServerError, naming what each way answered, when neither works.
    """
    url = management_url or f"http://{_url_host(address.host)}:15672"
    try:
        _management_put(url, address, vhost)
        return f"the management API at {url}"
    except DevServerError as exc:
        problems = [str(exc)]
    if address.host in ("127.0.0.1", "localhost", "::1"):
        try:
            _rabbitmqctl(ctl_env, ctl_node, "add_vhost", vhost)
            _rabbitmqctl(ctl_env, ctl_node, "set_permissions", "-p", vhost, address.userid, ".*", ".*", ".*")
            return "rabbitmqctl"
        except DevServerError as exc:
            problems.append(str(exc))
    else:
        problems.append(f"rabbitmqctl: the broker is not on this machine ({address.host})")
    raise DevServerError(f"cannot create the vhost {vhost!r}: " + "; ".join(problems))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _management_put(base: str, address: BrokerAddress, vhost: str, timeout: float = 5.0) -> None:
    import urllib.error
    import urllib.request  # here: `import amqprpc.cli` stays cheap

    token = base64.b64encode(f"{address.userid}:{address.password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    name = quote(vhost, safe="")
    for path, body in ((f"/api/vhosts/{name}", {}),
                       (f"/api/permissions/{name}/{quote(address.userid, safe='')}",
                        {"configure": ".*", "write": ".*", "read": ".*"})):
        request = urllib.request.Request(base.rstrip("/") + path, data=json.dumps(body).encode(),
                                         headers=headers, method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                pass
        except urllib.error.HTTPError as exc:
            raise DevServerError(f"management API: PUT {path} answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DevServerError(f"management API at {base}: {reason}") from None


def _rabbitmqctl(env: Mapping[str, str] | None, node: str | None, *args: str) -> None:
    tool = shutil.which("rabbitmqctl") if env is None else str(RABBITMQ_BIN / "rabbitmqctl")
    if tool is None or not Path(tool).exists():
        raise DevServerError("rabbitmqctl is not installed here")
    command = [tool, *(["-n", node] if node else []), "-q", *args]
    try:
        subprocess.run(command, env=dict(env) if env is not None else None, check=True,
                       capture_output=True, text=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        output = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise DevServerError(f"`rabbitmqctl {' '.join(args[:2])}` failed (exit {exc.returncode})"
                             + (f": {output[-1]}" if output else "")) from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DevServerError(f"rabbitmqctl: {exc}") from None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tmpdir() -> str:
    import tempfile

    return tempfile.gettempdir()
