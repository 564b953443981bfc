"""Prefork supervisor: N worker processes on the same queues, restarted when they die.

The parent forks before any connection or thread exists (so the children inherit nothing
that must not be shared), then only supervises:

* a child that dies is restarted; one that keeps dying quickly is restarted with capped
  exponential backoff and a log line saying so;
* SIGTERM/SIGINT: every child is asked to stop gracefully (SIGTERM); a second signal kills
  them (SIGKILL). The exit code is 0 when every child stopped cleanly.

Children run in their own process group (a terminal's Ctrl-C reaches only the parent,
which forwards one SIGTERM) and ask the kernel to SIGTERM them if the parent dies.
When memory runs out the kernel should kill a worker (its call is redelivered, its slot
restarted), never the supervisor, whose death takes every worker with it. So each child
raises its ``oom_score_adj`` (no privilege needed), and a supervisor allowed to (root or
``CAP_SYS_RESOURCE``) whose score nobody chose exempts itself for as long as it runs: when
the only worker left is the one being killed, the OOM killer would otherwise pick the
supervisor next. A fork that fails (out of memory, out of pids) is retried with backoff.
The parent waits on a self-pipe fed by ``signal.set_wakeup_fd``: no polling.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_log = logging.getLogger(__name__)

QUICK_DEATH = 10.0  # a child that dies sooner than this counts towards backoff
_PR_SET_PDEATHSIG = 1
# Added to a child's oom_score_adj: the kernel adds adj/1000 of the memory it can use to a
# process's score, so a 10 % bias makes even a fresh worker outrank the supervisor.
WORKER_OOM_BIAS = 100
OOM_EXEMPT = -1000  # OOM_SCORE_ADJ_MIN: never chosen
_OOM_SCORE_ADJ = "/proc/self/oom_score_adj"


@dataclass
class _Slot:
    index: int
    pid: int | None = None
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)


class Supervisor:
    """Run ``target(index)`` in ``workers`` child processes until told to stop."""

    def __init__(self, workers: int, target: Callable[[int], int], *, max_backoff: float = 30.0,
                 fatal_exit_codes: tuple[int, ...] = ()) -> None:
        """``fatal_exit_codes``: a child exiting with one of these (say, bad configuration)
        is not restarted: restarting cannot fix it, so every worker is stopped and the
        supervisor exits with that code."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.target = target
        self.max_backoff = max_backoff
        self.fatal_exit_codes = fatal_exit_codes
        self._fatal: int | None = None
        self._slots = [_Slot(i) for i in range(workers)]
        self._stopping = False
        self._signals = 0
        self._child_oom_adj = 0  # the score the supervisor was started with: children add to it

    def run(self) -> int:
        """Supervise until stopped; returns the process exit code."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        previous_wakeup = signal.set_wakeup_fd(write_fd)
        handlers = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
        own_oom_adj = _read_oom_adj()
        self._child_oom_adj = own_oom_adj or 0
        exempt = own_oom_adj == 0 and _write_oom_adj(OOM_EXEMPT)
        try:
            for slot in self._slots:
                self._spawn(slot, read_fd, write_fd)
            while True:
                self._reap()
                if self._stopping and not any(slot.pid for slot in self._slots):
                    break
                if not self._stopping:
                    self._restart_due(read_fd, write_fd)
                select.select([read_fd], [], [], self._next_timeout())
                try:
                    os.read(read_fd, 4096)
                except BlockingIOError:
                    pass
        finally:
            if exempt:
                _write_oom_adj(0)  # lowering back to what we had: allowed
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            os.close(read_fd)
            os.close(write_fd)
        if self._fatal is not None:
            return self._fatal
        clean = all(slot.exits and slot.exits[-1] == 0 for slot in self._slots)
        _log.info("supervisor: all workers stopped (%s)", "clean" if clean else "not clean")
        return 0 if clean else 1

    def child_pids(self) -> list[int]:
        return [slot.pid for slot in self._slots if slot.pid]

    # ------------------------------------------------------------ internals

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGCHLD:
            return  # the wake-up fd already woke the loop
        self._signals += 1
        self._stopping = True
        sig = signal.SIGTERM if self._signals == 1 else signal.SIGKILL
        for pid in self.child_pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _spawn(self, slot: _Slot, read_fd: int, write_fd: int) -> None:
        try:
            pid = os.fork()
        except OSError as exc:  # ENOMEM in a full memory cgroup, EAGAIN at a pid limit
            slot.started = time.monotonic()
            _log.error("supervisor: cannot start worker %d: %s", slot.index, exc)
            self._schedule_restart(slot, None)
            return
        if pid == 0:  # the child
            code = 1
            try:
                os.close(read_fd)
                os.close(write_fd)
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                os.setpgid(0, 0)
                _die_with_parent()
                _prefer_as_oom_victim(self._child_oom_adj)
                code = self.target(slot.index)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                _log.exception("worker %d failed", slot.index)
            finally:
                os._exit(code)
        slot.pid = pid
        slot.started = time.monotonic()
        slot.restart_at = None
        _log.info("supervisor: started worker %d (pid %d)", slot.index, pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            for slot in self._slots:
                if slot.pid == pid:
                    slot.pid = None
                    slot.exits.append(code)
                    if code in self.fatal_exit_codes and not self._stopping:
                        _log.error("supervisor: worker %d exited with %d, which a restart cannot "
                                   "fix; stopping all workers", slot.index, code)
                        self._fatal = code
                        self._on_signal(signal.SIGTERM, None)
                    elif not self._stopping:
                        self._schedule_restart(slot, code)
                    break

    def _schedule_restart(self, slot: _Slot, code: int | None) -> None:
        """``code``: the exit code of the child that died; None when none could be started."""
        lived = time.monotonic() - slot.started
        if lived < QUICK_DEATH:
            slot.backoff = min(self.max_backoff, slot.backoff * 2 if slot.backoff else 0.5)
        else:
            slot.backoff = 0.0
        slot.restart_at = time.monotonic() + slot.backoff
        if code is None:
            _log.warning("supervisor: starting worker %d again in %.1fs", slot.index, slot.backoff)
            return
        _log.warning("supervisor: worker %d exited with %d after %.1fs; restarting in %.1fs",
                     slot.index, code, lived, slot.backoff)

    def _restart_due(self, read_fd: int, write_fd: int) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.pid is None and slot.restart_at is not None and slot.restart_at <= now:
                self._spawn(slot, read_fd, write_fd)

    def _next_timeout(self) -> float | None:
        due = [slot.restart_at for slot in self._slots
               if slot.pid is None and slot.restart_at is not None and not self._stopping]
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _prefer_as_oom_victim(base: int, path: str = _OOM_SCORE_ADJ) -> None:
    """Make this process (a child) ``WORKER_OOM_BIAS`` likelier to be OOM-killed than ``base``."""
    _write_oom_adj(min(1000, base + WORKER_OOM_BIAS), path)


def _read_oom_adj(path: str = _OOM_SCORE_ADJ) -> int | None:
    try:
        with open(path) as adj:
            return int(adj.read().strip())
    except (OSError, ValueError):
        return None  # not Linux, or no /proc


def _write_oom_adj(value: int, path: str = _OOM_SCORE_ADJ) -> bool:
    """Best effort: lowering needs privilege, and elsewhere there is no such file."""
    try:
        with open(path, "w") as adj:
            adj.write(str(value))
        return True
    except OSError:
        return False
