"""Private database servers that a test may stop and start again: PostgreSQL, MariaDB, SecantusDB.

The machine's own servers (PostgreSQL on 5432, MariaDB on 3306) are never touched. Each
server here has its own temporary directory and a free loopback port, and runs as a child
process of the test run:

* ``stop()`` is the server's own fast, clean shutdown (PostgreSQL: SIGINT, "fast" mode,
  which rolls back open transactions and drops every connection; MariaDB and SecantusDB:
  SIGTERM); ``crash()`` ends it without any of that (PostgreSQL: SIGQUIT, "immediate"
  mode; the others: SIGKILL). ``start()`` brings it back **on the same port, with the
  same data** (recovering it after a crash), as a restart in production does.
* Children get a parent-death signal (``setpriv --pdeathsig``), so a crashed test run
  leaves no server behind; ``close()`` stops the server and deletes its directory.
* A server this machine cannot run (not installed, no ``postgres`` user to run it as
  root, a failing ``initdb``) raises :class:`ServerUnavailable` with the command's
  stderr, for the fixture to skip with.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amqprpc.devservers import free_port

__all__ = ["MariaDBServer", "PostgresServer", "PrivateServer", "SecantusDiskServer",
           "ServerUnavailable"]


class ServerUnavailable(RuntimeError):
    """This machine cannot run the server; the message says why (a command's stderr)."""


class PrivateServer:
    """A server process we own, in ``base`` (a fresh directory), on ``self.port``."""

    name = "server"
    stop_signal = signal.SIGTERM  # the server's own clean shutdown
    crash_signal = signal.SIGKILL  # no clean-up at all, as when the server crashes

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.log = base / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # what a subclass says
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _as_user(self) -> list[str]:
        """setpriv options that drop root for servers that refuse it (none by default)."""
        return []

    @property
    def url(self) -> str:
        raise NotImplementedError

    # lifecycle
    def start(self, timeout: float = 30.0) -> None:
        """Start the server (same port, same data as before) and wait until it answers."""
        if self.running:
            return
        command = self._command()
        if shutil.which("setpriv"):
            command = ["setpriv", *self._as_user(), "--pdeathsig", self.stop_signal.name,
                       "--", *command]
        elif self._as_user():
            raise ServerUnavailable(f"{self.name}: needs setpriv (util-linux) to drop root")
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, cwd=self.base,
                                          start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise ServerUnavailable(f"{self.name} exited with {code} while starting: "
                                        f"{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerUnavailable(f"{self.name} not ready after {timeout:.0f} s: "
                                        f"{self.log_tail()}")
            time.sleep(0.05)  # a booting server sends no event to wait on

    def stop(self, timeout: float = 30.0) -> None:
        """The server's fast clean shutdown; SIGKILL only if it outlives ``timeout``."""
        self._end(self.stop_signal, timeout)

    def crash(self, timeout: float = 30.0) -> None:
        """End the server as a crash does: it closes nothing and finishes no transaction."""
        self._end(self.crash_signal, timeout)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _error_log(self) -> Path:
        return self.log

    def log_tail(self, lines: int = 10) -> str:
        try:
            text = self._error_log().read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-lines:])


def _run(what: str, command: list[str], user: str | None = None) -> None:
    """Run a set-up command; ServerUnavailable with its stderr when it fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, user=user)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerUnavailable(f"{what}: {' '.join(command[:2])}: {exc}") from None
    if done.returncode != 0:
        output = " ".join((done.stderr or done.stdout).split())[-600:]
        raise ServerUnavailable(f"{what}: {' '.join(command[:2])} exited with "
                                f"{done.returncode}: {output}")


def make_base(prefix: str, owner: str | None = None) -> Path:
    """A fresh directory under the system temp dir (pytest's is 0700 to root), owned by ``owner``."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    return base


class PostgresServer(PrivateServer):
    """``initdb`` (trust auth, database ``postgres``) and ``postgres`` on a free port.

    As root, both run as the ``postgres`` OS user, which initdb and postgres insist on.
    """

    name = "PostgreSQL"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back, disconnect everyone, exit
    crash_signal = signal.SIGQUIT  # "immediate": every process exits at once, recovery at start

    def __init__(self, base: Path, bindir: Path, user: str | None) -> None:
        super().__init__(base)
        self.bindir = bindir
        self.user = user
        self.data = base / "data"

    @classmethod
    def create(cls) -> PostgresServer:
        """Initialise a cluster in a new temp dir and start it; ServerUnavailable if we can't."""
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        which = shutil.which("postgres")
        binary = found[-1] if found else which
        if binary is None:
            raise ServerUnavailable("PostgreSQL: no postgres binary (apt-get install postgresql)")
        user = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailable("PostgreSQL: running as root and there is no "
                                        "'postgres' user to run initdb/postgres as") from None
            user = "postgres"
        server = cls(make_base("amqprpc-pg-", user), Path(binary).parent, user)
        try:
            _run("PostgreSQL", [str(server.bindir / "initdb"), "-D", str(server.data), "-A",
                                "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"], user)
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_user(self) -> list[str]:
        if self.user is None:
            return []
        return [f"--reuid={self.user}", f"--regid={self.user}", "--init-groups"]

    def _command(self) -> list[str]:
        return [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-k", str(self.base),
                # No fsync: only the process crashes here, never the OS, so what reached the
                # kernel survives. synchronous_commit stays on: a crash must not lose commits.
                "-c", "fsync=off", "-c", "full_page_writes=off"]

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                            connect_timeout=2).close()
        except psycopg.Error:
            return False  # refused, or "the database system is starting up"
        return True


class MariaDBServer(PrivateServer):
    """``mariadb-install-db`` (root without a password) and ``mariadbd``; database ``test``."""

    name = "MariaDB"
    stop_signal = signal.SIGTERM  # normal shutdown: kills the connections, rolls back

    @classmethod
    def create(cls) -> MariaDBServer:
        for binary in ("mariadb-install-db", "mariadbd"):
            if shutil.which(binary) is None:
                raise ServerUnavailable(f"MariaDB: no {binary} (apt-get install mariadb-server)")
        server = cls(make_base("amqprpc-mariadb-"))
        try:
            _run("MariaDB", ["mariadb-install-db", "--no-defaults", *server._user(),
                             f"--datadir={server.base / 'data'}", "--skip-test-db",
                             "--auth-root-authentication-method=normal",
                             "--innodb-log-file-size=4M"])
            server.start()
            import pymysql

            with pymysql.connect(host="127.0.0.1", port=server.port, user="root") as connection:
                connection.cursor().execute("CREATE DATABASE test CHARACTER SET utf8mb4")
        except BaseException:
            server.close()
            raise
        return server

    @staticmethod
    def _user() -> list[str]:
        # mariadbd run as root aborts unless told to stay root.
        return ["--user=root"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/test?charset=utf8mb4"

    def _command(self) -> list[str]:
        base = self.base
        return ["mariadbd", "--no-defaults", *self._user(), f"--datadir={base / 'data'}",
                "--bind-address=127.0.0.1", f"--port={self.port}", f"--socket={base / 'sock'}",
                f"--pid-file={base / 'mariadbd.pid'}", f"--log-error={base / 'error.log'}",
                "--innodb-log-file-size=4M"]

    def _ready(self) -> bool:
        import pymysql

        try:
            pymysql.connect(host="127.0.0.1", port=self.port, user="root",
                            connect_timeout=2).close()
        except pymysql.Error:
            return False
        return True

    def _error_log(self) -> Path:
        return self.base / "error.log"


class SecantusDiskServer(PrivateServer):
    """SecantusDB with the command line the Mongo fixtures use (``amqprpc.devservers``), but
    with its data on disk (WiredTiger), so a restart keeps what was written."""

    name = "SecantusDB"
    stop_signal = signal.SIGTERM  # closes its clients and its storage cleanly
    crash_signal = signal.SIGKILL

    @classmethod
    def create(cls) -> SecantusDiskServer:
        try:
            import secantus  # noqa: F401  (only to say clearly what is missing)
        except ImportError as exc:
            raise ServerUnavailable(f"SecantusDB: {exc} (pip install secantusdb)") from None
        server = cls(make_base("amqprpc-secantus-"))
        try:
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
                "--storage-path", str(self.base / "data")]

    def _ready(self) -> bool:
        import pymongo

        try:
            with pymongo.MongoClient(self.url, serverSelectionTimeoutMS=500,
                                     directConnection=True) as client:
                client.admin.command("ping")
        except pymongo.errors.PyMongoError:
            return False
        return True
