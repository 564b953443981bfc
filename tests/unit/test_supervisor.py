"""The supervisor's children, without a broker: real forks, a target that reports and exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from amqprpc import supervisor as supervisor_module
from amqprpc.supervisor import OOM_EXEMPT, WORKER_OOM_BIAS, Supervisor, _prefer_as_oom_victim

ADJ = Path("/proc/self/oom_score_adj")
needs_proc = pytest.mark.skipif(not ADJ.exists(), reason="needs Linux /proc/self/oom_score_adj")


def _may_lower_oom_adj() -> bool:
    """Root is not enough (a container drops CAP_SYS_RESOURCE): ask the kernel, in a child."""
    probe = "with open('/proc/self/oom_score_adj', 'w') as adj: adj.write('-1000')"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def _run_once(supervisor: Supervisor) -> int:
    """run() installs signal handlers, so it runs on this (the main) thread; a timer bounds it."""
    timer = threading.Timer(20, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        return supervisor.run()
    finally:
        timer.cancel()


def _reporting_target(report: Path) -> Callable[[int], int]:
    def target(index: int) -> int:
        parent = Path(f"/proc/{os.getppid()}/oom_score_adj").read_text().strip()
        report.write_text(f"{ADJ.read_text().strip()} {parent}")
        # One run is enough: ask the supervisor to stop, and return 0 rather than die of the
        # SIGTERM it forwards (which would make its exit code 1).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.kill(os.getppid(), signal.SIGTERM)
        return 0
    return target


@needs_proc
def test_a_worker_is_the_oom_killers_choice_before_its_supervisor(tmp_path):
    """W7: when memory runs out, a worker dies (and is restarted), not the supervisor."""
    report = tmp_path / "adj"
    own = int(ADJ.read_text())
    assert _run_once(Supervisor(1, _reporting_target(report))) == 0
    child, parent = (int(value) for value in report.read_text().split())
    assert child == min(1000, own + WORKER_OOM_BIAS)
    if own == 0 and _may_lower_oom_adj():  # allowed to lower its score: exempt while it ran
        assert parent == OOM_EXEMPT
    else:
        assert parent == own
    assert int(ADJ.read_text()) == own  # and back to its own score afterwards


@needs_proc
def test_a_failed_fork_is_retried_not_fatal(tmp_path, monkeypatch):
    report = tmp_path / "adj"
    real_fork = os.fork
    failures = iter([OSError(12, "Cannot allocate memory")])

    def fork() -> int:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_fork()

    monkeypatch.setattr(supervisor_module.os, "fork", fork)
    assert _run_once(Supervisor(1, _reporting_target(report))) == 0
    assert report.exists()  # the second try started the worker


def test_the_bias_is_capped_and_a_missing_file_is_ignored(tmp_path):
    adj = tmp_path / "oom_score_adj"
    _prefer_as_oom_victim(950, str(adj))
    assert adj.read_text() == "1000"
    _prefer_as_oom_victim(0, str(tmp_path / "absent" / "oom_score_adj"))  # best effort: no error
