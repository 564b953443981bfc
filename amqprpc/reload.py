"""``amqprpc run --reload``: restart the workers on a code change without dropping a call.

The reloader never imports the services itself. Each *generation* of workers is a fresh
``amqprpc run`` process (fresh interpreter, fresh imports); on a change it

1. starts a new generation beside the old one;
2. waits until the new one consumes (each of its processes writes ``ready`` to a pipe it
   inherited, ``READY_FD_ENV`` names it);
3. then SIGTERMs the old one, which drains as on any graceful stop: it stops consuming,
   finishes and acks what it holds, and exits. Requests the old generation never took stay
   in the queue for the new one, so every call in flight is answered, once.

A new generation that fails (a module that no longer imports, a bad config file) writes
``failed`` and the error to the pipe instead, or dies before it is ready: the reloader
prints the error in one block and keeps the old generation serving until the next change.

Watching uses ``watchfiles`` (the ``reload`` extra): it is imported only when reloading.
"""

from __future__ import annotations

import importlib.util
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from .exceptions import ConfigError

READY_FD_ENV = "AMQPRPC_RELOAD_READY_FD"
READY_TIMEOUT = 60.0  # a new generation that is not consuming by then is given up on
STOP_TIMEOUT = 120.0  # an old generation's drain (its --grace) plus the close
_MESSAGE_LIMIT = 64 * 1024


class Generation:
    """One ``amqprpc run`` process (and its ``--workers``) serving one version of the code."""

    def __init__(self, command: list[str], expect_ready: int) -> None:
        read_fd, write_fd = os.pipe()
        self._read_fd = read_fd
        self.expect_ready = expect_ready
        env = {**os.environ, READY_FD_ENV: str(write_fd)}
        try:
            self.process = subprocess.Popen(command, env=env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)  # ours closed: EOF once every process of the generation is gone
        self._buffer = b""

    def wait_ready(self, timeout: float, stop: threading.Event) -> str | None:
        """None once every process consumes; else why not (the error it reported, or its exit)."""
        deadline = time.monotonic() + timeout
        ready = 0
        while ready < self.expect_ready:
            if stop.is_set():
                return "stopped while starting"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"not consuming after {timeout:g} s"
            readable, _, _ = select.select([self._read_fd], [], [], min(remaining, 0.2))
            if not readable:
                continue
            chunk = os.read(self._read_fd, 4096)
            if not chunk:  # every writer gone: the generation died before it was ready
                code = self.process.wait()
                return self._failure() or f"it exited with code {code} before consuming"
            self._buffer = (self._buffer + chunk)[-_MESSAGE_LIMIT:]
            if self._buffer.startswith(b"failed\n") and self._buffer.endswith(b"\0"):
                return self._failure()
            while b"ready\n" in self._buffer:
                self._buffer = self._buffer.replace(b"ready\n", b"", 1)
                ready += 1
        return None

    def _failure(self) -> str | None:
        if not self._buffer.startswith(b"failed\n"):
            return None
        return self._buffer[len(b"failed\n"):].rstrip(b"\0").decode(errors="replace").rstrip()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Drain and stop (SIGTERM); SIGKILL only if the drain outlives ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(5)
        os.close(self._read_fd)
        return code


class Reloader:
    """Run generations of ``command`` and replace the running one on every change in ``paths``."""

    def __init__(self, command: list[str], paths: list[Path], *, expect_ready: int = 1,
                 out: IO[str] | None = None, ready_timeout: float = READY_TIMEOUT) -> None:
        self.command = command
        self.paths = paths
        self.expect_ready = expect_ready
        self.out = out or sys.stderr
        self.ready_timeout = ready_timeout
        self._stop = threading.Event()
        self._signals = 0
        self.current: Generation | None = None

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit code is the last generation's."""
        import watchfiles  # the `reload` extra; checked by the CLI before we get here

        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            watch_filter = _source_filter(self.paths)
            # The watcher exists only from the generator's first step, after the first
            # generation is up: an edit saved while it starts would go unseen. So what the
            # sources were before it started is compared with what they are once watching.
            before: dict[str, tuple[int, int]] | None = _snapshot(self.paths, watch_filter)
            self._replace("starting")
            for changes in watchfiles.watch(*self.paths, watch_filter=watch_filter,
                                            stop_event=self._stop, debounce=200,
                                            rust_timeout=500, yield_on_timeout=True,
                                            raise_interrupt=False):
                paths = {path for _, path in changes}
                if before is not None:  # the first step: the watcher is now set up
                    paths |= _changed(before, _snapshot(self.paths, watch_filter))
                    before = None
                if not paths:
                    continue  # a timeout: nothing changed
                names = sorted({Path(path).name for path in paths})
                self._replace(f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''} changed")
        finally:
            code = self.current.stop() if self.current is not None else 0
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _replace(self, why: str) -> None:
        """Start a new generation; once it consumes, drain the old one. Keep the old on failure."""
        self._say(f"reload: {why}: starting new workers")
        new = Generation(self.command, self.expect_ready)
        failure = new.wait_ready(self.ready_timeout, self._stop)
        if failure is not None:
            new.stop(signal.SIGKILL, timeout=10)
            if not self._stop.is_set():
                self._say(_failure_block(failure, kept=self.current is not None))
            return
        old, self.current = self.current, new
        if old is not None:
            self._say("reload: new workers consume; draining the old ones")
            old.stop()
        self._say("reload: serving the new code")

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        self._stop.set()
        if self._signals > 1 and self.current is not None:  # a second signal: stop at once
            self.current.process.send_signal(signal.SIGKILL)

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def _failure_block(error: str, *, kept: bool) -> str:
    rule = "=" * 72
    after = ("the previous workers keep serving; save a fix to try again" if kept
             else "no workers are running; save a fix to try again")
    return f"{rule}\nreload FAILED: the new code did not start\n\n{error}\n\n{after}\n{rule}"


def _source_filter(paths: Iterable[Path]) -> Callable[[object, str], bool]:
    """Python sources anywhere below the watched folders, and any file watched by name."""
    files = {str(path.resolve()) for path in paths if path.is_file()}

    def wanted(change: object, path: str) -> bool:
        return path.endswith(".py") or str(Path(path).resolve()) in files

    return wanted


def _snapshot(paths: Iterable[Path], wanted: Callable[[object, str], bool]) -> dict[str, tuple[int, int]]:
    """Each watched source's (mtime, size), to see what changed while nothing watched."""
    found: dict[str, tuple[int, int]] = {}

    def note(path: str) -> None:
        try:
            stat = os.stat(path)
        except OSError:  # gone between listing and stat: it will read as removed
            return
        found[path] = (stat.st_mtime_ns, stat.st_size)

    for root in paths:
        if root.is_file():
            note(str(root))
            continue
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = [name for name in subfolders if name != "__pycache__" and name[:1] != "."]
            for name in files:
                path = os.path.join(folder, name)
                if wanted(None, path):
                    note(path)
    return found


def _changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> set[str]:
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


def watched_paths(targets: Iterable[str], config_path: str | None) -> list[Path]:
    """What to watch for ``targets``: each module's top-level package folder (or its file),
    found without running it, plus the config file."""
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, ".")  # as runner.find_services imports them
    paths: list[Path] = []
    for target in targets:
        top = target.partition(":")[0].split(".")[0]
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is None or (spec.origin is None and not spec.submodule_search_locations):
            raise ConfigError(f"--reload: module {top!r} not found, so there is nothing to watch")
        if spec.submodule_search_locations:
            paths.extend(Path(location) for location in spec.submodule_search_locations)
        elif spec.origin is not None:
            paths.append(Path(spec.origin))
    if config_path:
        paths.append(Path(config_path))
    unique = list(dict.fromkeys(path.resolve() for path in paths))
    return [path for path in unique if path.exists()]


def notify_ready() -> None:
    """In a worker process of a generation: say it consumes (no-op outside ``--reload``)."""
    _write(b"ready\n")


def notify_failed(exc: BaseException) -> bool:
    """In a generation that cannot start: hand the error to the reloader. False outside ``--reload``."""
    if isinstance(exc, ConfigError | SyntaxError):  # the line says it all (a SyntaxError: with its caret)
        text = "".join(traceback.format_exception_only(exc)).rstrip()
    else:
        text = "".join(traceback.format_exception(exc)).rstrip()
    return _write(b"failed\n" + text.encode()[-_MESSAGE_LIMIT // 2:] + b"\0")


def reloading() -> bool:
    return READY_FD_ENV in os.environ


def _write(data: bytes) -> bool:
    raw = os.environ.get(READY_FD_ENV)
    if raw is None:
        return False
    try:
        os.write(int(raw), data)
    except (OSError, ValueError):
        return False
    return True
