"""``amqprpc dev``: the whole system on one machine, for local development and the demo.

Each service runs in its own ``amqprpc run`` process (``--workers N`` each), the HTTP
bridge in another (``--bridge``); their log lines come out prefixed with the process's
name, in its colour. Ctrl-C (or SIGTERM) stops them all gracefully, then the servers
``dev`` started.

What is not configured is provided, so the demo runs on a fresh machine:

* broker: the configured one if it answers, in a vhost of its own
  (``amqprpc-dev-<user>-<project>``, made through the management API or ``rabbitmqctl``)
  unless the URL names a vhost, so other people's services on a shared broker stay out
  of sight; where no vhost can be made, the broker's ``/`` when one was configured, else
  a private node; when no broker answers and ``rabbitmq-server`` is installed, a private
  node (state in ``--state-dir``, the project's ``rabbitmq.conf``); else one line that
  says how to install it;
* SQL: ``sqlite:///<state-dir>/<service>.db`` for each service with a ``Database`` and no
  ``<SERVICE>_DATABASE_URL``/``DATABASE_URL``;
* MongoDB: a SecantusDB server (data in ``--state-dir``) when a service has a ``Mongo``
  and no ``MONGO_URL`` is set (``pip install 'amqprpc[demo]'``);
* identity: an identity key (``identity.key``) every process signs and checks calls with,
  unless ``identity_key``/``identity_key_file`` is configured; with ``--bridge``, a token
  signing key (``signing.pem``) for ``/auth/token``; with a service named ``auth``, an
  admin account whose password is in ``admin-password`` (made at its first login).
"""

from __future__ import annotations

import inspect
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from ..config import DEFAULT_BROKER_URL, Config
from ..devservers import (
    RABBITMQ_INSTALL,
    DevServerError,
    RabbitServer,
    SecantusServer,
    amqp_answers,
    dev_vhost_name,
    free_port,
    make_vhost,
    port_open,
    rabbitmq_installed,
    vhost_usable,
    with_vhost,
)
from ..transport.address import parse_broker_urls
from . import EXIT_BROKER, EXIT_CONFIG, CliError, _build_config, _friendly, broker_option, config_option

COLOURS = ["cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta",
           "bright_green", "bright_yellow", "bright_blue"]


@dataclass
class Child:
    """One process ``dev`` runs, and the thread that relays its output."""

    name: str
    command: list[str]
    colour: str
    process: subprocess.Popen[bytes] | None = None
    relay: threading.Thread | None = None


@dataclass
class DevEnvironment:
    """What ``dev`` provided: environment for the children, servers to stop at the end."""

    env: dict[str, str] = field(default_factory=dict)
    servers: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    width: int = 3  # of the widest process name: every line's "name |" lines up

    def echo(self, line: str) -> None:
        """A line from ``dev`` itself before the Supervisor runs, aligned as its lines are."""
        _echo("dev", line, self.width)

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


@click.command()
@click.argument("targets", nargs=-1, required=True, metavar="MODULE[:Class]...")
@click.option("--bridge", is_flag=True, help="Also run the HTTP bridge (anonymous access: dev only).")
@click.option("--bridge-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes per service.")
@click.option("--mqtt", is_flag=True,
              help="Run a private broker node with the MQTT plugin (a free port, shown at start).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".amqprpc-dev"), show_default=True,
              help="Where SQLite files, SecantusDB data and a private broker node live.")
@broker_option
@config_option
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--reload", is_flag=True,
              help="Each service restarts on a code change (`amqprpc run --reload`).")
def dev(targets: tuple[str, ...], bridge: bool, bridge_port: int, workers: int, mqtt: bool,
        state_dir: Path, broker_url: str | None, config_path: str | None, log_level: str,
        reload: bool = False) -> None:
    """Run services (each in its own processes) and optionally the bridge, until Ctrl-C."""
    from ..runner import find_services

    config = _build_config(config_path, broker_url=broker_url)
    classes = _friendly(lambda: find_services(targets))
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    # Databases and broker data live here: keep `git add .` from committing them.
    (state_dir / ".gitignore").write_text("# made by `amqprpc dev`: local state, never commit it\n*\n")
    names = [cls.name for cls in classes] + (["bridge"] if bridge else [])
    environment = DevEnvironment(env=dict(os.environ), width=max(len(name) for name in ["dev", *names]))
    try:
        if mqtt:  # plugins are never enabled on a shared broker: this needs a node of its own
            if not rabbitmq_installed():
                raise DevServerError(f"--mqtt runs a private RabbitMQ node, and none is installed; "
                                     f"install it with: {RABBITMQ_INSTALL}")
            _start_private_node(state_dir, environment, why="--mqtt", mqtt_port=free_port())
        else:
            _provide_broker(config, state_dir, environment)
        _provide_databases(config, classes, state_dir, environment)
        _provide_credentials(config, classes, state_dir, environment, bridge=bridge)
    except DevServerError as exc:
        environment.stop()
        raise CliError(str(exc), EXIT_CONFIG) from None
    except BaseException:
        environment.stop()
        raise
    common = ["--log-level", log_level.upper()] + (["--config", config_path] if config_path else [])
    children = [
        Child(cls.name, [sys.executable, "-m", "amqprpc", "run", f"{cls.__module__}:{cls.__name__}",
                         "--workers", str(workers), *common, *(["--reload"] if reload else [])], "")
        for cls in classes
    ]
    if bridge:
        environment.env.setdefault("AMQPRPC_BRIDGE_ALLOW_ANONYMOUS", "true")
        children.append(Child("bridge", [sys.executable, "-m", "amqprpc", "bridge",
                                         "--port", str(bridge_port), *common], ""))
    for index, child in enumerate(children):
        child.colour = COLOURS[index % len(COLOURS)]
    code = Supervisor(children, environment, bridge_port if bridge else None).run()
    sys.exit(code)


def _provide_broker(config: Config, state_dir: Path, environment: DevEnvironment) -> None:
    address = parse_broker_urls(config.broker_url)[0]
    where = f"{address.host}:{address.port}"
    if amqp_answers(address.host, address.port):
        if address.virtual_host != "/":
            environment.notes.append(f"broker: {where}, vhost {address.virtual_host} (configured)")
            environment.env["AMQPRPC_BROKER_URL"] = config.broker_url
            return
        vhost = dev_vhost_name(state_dir)
        try:
            how = "made by an earlier run" if vhost_usable(address, vhost) else "made through " + make_vhost(
                address, vhost, management_url=_setting(config, "management_url"))
        except DevServerError as exc:
            configured = config.broker_url != DEFAULT_BROKER_URL
            if configured or not rabbitmq_installed():
                environment.notes.append(f"broker: {where}, vhost / (configured; {exc}: services of "
                                         "other runs on it show too)")
                environment.env["AMQPRPC_BROKER_URL"] = config.broker_url
                return
            environment.echo(f"{exc}")
            _start_private_node(state_dir, environment, why=f"the broker at {where} is shared")
            return
        environment.notes.append(f"broker: {where}, vhost {vhost} (its own, {how})")
        environment.env["AMQPRPC_BROKER_URL"] = with_vhost(config.broker_url, vhost)
        return
    if not rabbitmq_installed():
        raise CliError(f"no RabbitMQ answers at {where}, and none is installed; "
                       f"install it with: {RABBITMQ_INSTALL}", EXIT_BROKER)
    _start_private_node(state_dir, environment, why=f"no RabbitMQ at {where}")


def _start_private_node(state_dir: Path, environment: DevEnvironment, why: str,
                        mqtt_port: int | None = None) -> None:
    conf = Path("rabbitmq.conf")
    node = RabbitServer(state_dir / "rabbitmq", conf=conf if conf.exists() else None, mqtt_port=mqtt_port)
    environment.echo(f"{why}: starting a private node on 127.0.0.1:{node.port} ...")
    node.start(timeout=120)
    environment.servers.append(node)
    environment.env["AMQPRPC_BROKER_URL"] = node.url
    environment.notes.append(f"broker: private node on 127.0.0.1:{node.port} (log: {node.log_path.parent})")
    if mqtt_port:
        environment.notes.append(f"MQTT: 127.0.0.1:{mqtt_port} (user guest, password guest)")


def _setting(config: Config, name: str) -> str | None:
    """An extra setting by name, whatever its case (``management_url``, ``AMQPRPC_MANAGEMENT_URL``)."""
    for key, value in config.extra.items():
        if isinstance(key, str) and key.lower() == name:
            return str(value)
    return None


def _provide_databases(config: Config, classes: list[type], state_dir: Path,
                       environment: DevEnvironment) -> None:
    env_config = Config.load(env=environment.env)  # what the children will see
    needs_mongo = False
    for cls in classes:
        kinds = {type(value).__name__ for _, value in inspect.getmembers(cls)}
        service = cls.name  # type: ignore[attr-defined]
        configured = (config.service_setting(service, "DATABASE_URL")
                      or env_config.service_setting(service, "DATABASE_URL"))
        if "Database" in kinds and configured is None:
            key = f"AMQPRPC_{service}_DATABASE_URL".replace("-", "_").upper()
            environment.env[key] = f"sqlite:///{state_dir / (service + '.db')}"
            environment.notes.append(f"{service}: SQLite {state_dir / (service + '.db')}")
        if "Mongo" in kinds and not (config.service_setting(service, "MONGO_URL")
                                     or env_config.service_setting(service, "MONGO_URL")):
            needs_mongo = True
    if needs_mongo:
        server = SecantusServer(storage=state_dir / "mongo", log_path=state_dir / "secantus.log")
        environment.echo(f"no MONGO_URL: starting SecantusDB on 127.0.0.1:{server.port} ...")
        server.start()
        environment.servers.append(server)
        environment.env["AMQPRPC_MONGO_URL"] = server.url
        environment.notes.append(f"MongoDB: SecantusDB {server.url} (data: {state_dir / 'mongo'})")


def _provide_credentials(config: Config, classes: list[type], state_dir: Path,
                         environment: DevEnvironment, *, bridge: bool) -> None:
    """Keys and the first admin, kept in ``state_dir`` so that they survive restarts."""
    env_config = Config.load(env=environment.env)
    if not (config.identity_key or config.identity_key_file
            or env_config.identity_key or env_config.identity_key_file):
        environment.env["AMQPRPC_IDENTITY_KEY_FILE"] = str(_secret_file(state_dir / "identity.key", 32))
        environment.notes.append(f"identity: calls signed with {state_dir / 'identity.key'}")
    if bridge and not (_setting(config, "bridge_token_signing_key_file")
                       or _setting(env_config, "bridge_token_signing_key_file")
                       or _bridge_table(config).get("token_signing_key_file")):
        path = state_dir / "signing.pem"
        if not path.exists():
            _write_private(path, _ed25519_pem())
        environment.env["AMQPRPC_BRIDGE_TOKEN_SIGNING_KEY_FILE"] = str(path)
    if any(getattr(cls, "name", "") == "auth" for cls in classes):
        password = _secret_file(state_dir / "admin-password", 12)
        environment.env.setdefault("AMQPRPC_AUTH_ADMIN_PASSWORD_FILE", str(password))
        environment.notes.append(f"auth: admin's password is in {password}")


def _bridge_table(config: Config) -> dict[str, Any]:
    table = config.extra.get("bridge")
    return dict(table) if isinstance(table, dict) else {}


def _secret_file(path: Path, size: int) -> Path:
    """``path``, holding a random secret it keeps from an earlier run."""
    if not path.exists():
        _write_private(path, (secrets.token_urlsafe(size) + "\n").encode())
    return path


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _ed25519_pem() -> bytes:
    """A new Ed25519 private key (what ``amqprpc bridge new-signing-key`` writes)."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError as exc:
        raise CliError(f"--bridge needs the `bridge` extra: pip install 'amqprpc[bridge]' ({exc})",
                       EXIT_CONFIG) from None
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class Supervisor:
    """Starts the children, relays their output, and stops them all on a signal or a death."""

    def __init__(self, children: list[Child], environment: DevEnvironment, bridge_port: int | None):
        self.children = children
        self.environment = environment
        self.bridge_port = bridge_port
        self.width = max(environment.width, *(len(child.name) for child in children))
        self._output = threading.Lock()
        self._wake = threading.Event()
        self._signalled = 0

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for note in self.environment.notes:
                self.echo("dev", note)
            for child in self.children:
                self._start(child)
            self._announce()
            failed = self._wait()
        finally:
            self._stop_children()
            self.environment.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.echo("dev", "stopped" if failed is None else f"stopped: {failed}")
        return 0 if failed is None else 1

    def _start(self, child: Child) -> None:
        command = child.command
        if shutil.which("setpriv"):  # if `dev` itself is killed hard, its children go too
            command = ["setpriv", "--pdeathsig", "TERM", "--", *command]
        child.process = subprocess.Popen(
            command, env=self.environment.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,  # the terminal's Ctrl-C is ours; we stop them in order
        )
        child.relay = threading.Thread(target=self._relay, args=(child, child.process.stdout),
                                       name=f"amqprpc-dev-{child.name}", daemon=True)
        child.relay.start()

    def _relay(self, child: Child, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw in iter(stream.readline, b""):
            self.echo(child.name, raw.decode(errors="replace").rstrip(), child.colour)
        stream.close()
        self._wake.set()  # the child closed its output: it is exiting

    def _announce(self) -> None:
        if self.bridge_port is None:
            return
        deadline = time.monotonic() + 30
        while not port_open(self.bridge_port) and time.monotonic() < deadline:
            if self._wake.wait(0.2):
                return
        base = f"http://127.0.0.1:{self.bridge_port}"
        self.echo("dev", f"bridge: {base}  (API docs: {base}/docs; routes appear as services announce)")
        if any(child.name == "users" for child in self.children):  # the demo: a first request
            self.echo("dev", f"try:  curl -s -X POST {base}/users -H 'content-type: application/json' "
                             "-d '{\"name\": \"Ada\", \"email\": \"ada@example.com\"}'  "
                             "(then docs/demo.md)")
        password = self.environment.env.get("AMQPRPC_AUTH_ADMIN_PASSWORD_FILE")
        if password and any(child.name == "auth" for child in self.children):
            self.echo("dev", f"log in: curl -s {base}/auth/token -d grant_type=password -d username=admin "
                             f"--data-urlencode password=$(cat {password})")
            self.echo("dev", f"then:   curl -s {base}/auth/users -H 'Authorization: Bearer <access_token>'")
        self.echo("dev", "Ctrl-C stops everything")

    def _wait(self) -> str | None:
        """Until a signal (None: a requested stop) or a child's death (what happened)."""
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._signalled:
                return None
            for child in self.children:
                assert child.process is not None
                code = child.process.poll()
                if code is None and child.relay is not None and not child.relay.is_alive():
                    code = child.process.wait()
                if code is not None:
                    return f"{child.name} exited with code {code}"

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signalled += 1
        if self._signalled > 1:  # a second Ctrl-C: no more patience
            for child in self.children:
                if child.process is not None and child.process.poll() is None:
                    _kill_group(child.process.pid, signal.SIGKILL)
        self._wake.set()

    def _stop_children(self) -> None:
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        if running:
            self.echo("dev", f"stopping {', '.join(c.name for c in running)} ...")
        for child in running:
            assert child.process is not None
            # The process itself, not its group: `amqprpc run --workers N` stops its own
            # workers, and a second signal would tell them to stop at once.
            child.process.send_signal(signal.SIGTERM)
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(40)
            except subprocess.TimeoutExpired:
                self.echo("dev", f"{child.name} did not stop in 40 s: killing it")
                _kill_group(child.process.pid, signal.SIGKILL)
                child.process.wait(5)
            if child.relay is not None:
                child.relay.join(5)

    def echo(self, name: str, line: str, colour: str = "white") -> None:
        with self._output:
            _echo(name, line, self.width, colour)


def _echo(name: str, line: str, width: int, colour: str = "white") -> None:
    """``<name, right-aligned to width> | line``, the name in its colour (``dev`` in bold)."""
    prefix = click.style(f"{name:>{width}} |", fg=colour, bold=name == "dev")
    click.echo(f"{prefix} {line}", color=_colour_wanted())


def _colour_wanted() -> bool | None:
    if os.environ.get("NO_COLOR"):
        return False
    return True if os.environ.get("FORCE_COLOR") else None  # None: only on a terminal


def _kill_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
