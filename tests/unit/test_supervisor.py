"""The supervisor's children, without a broker: real forks, a target that reports and exits."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from amqprpc.supervisor import WORKER_OOM_BIAS, Supervisor, _prefer_as_oom_victim

needs_proc = pytest.mark.skipif(not Path("/proc/self/oom_score_adj").exists(),
                                reason="needs Linux /proc/self/oom_score_adj")


@needs_proc
def test_a_worker_is_the_oom_killers_choice_before_its_supervisor(tmp_path):
    """W7: when memory runs out, a worker dies (and is restarted), not the supervisor."""
    report = tmp_path / "adj"

    def target(index: int) -> int:
        report.write_text(Path("/proc/self/oom_score_adj").read_text())
        os.kill(os.getppid(), signal.SIGTERM)  # one run is enough: ask the supervisor to stop
        return 0

    own = int(Path("/proc/self/oom_score_adj").read_text())
    supervisor = Supervisor(1, target)
    done = threading.Event()
    # run() installs signal handlers, so it must run on the main thread; a timer bounds it.
    timer = threading.Timer(20, lambda: done.is_set() or os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert supervisor.run() == 0
    finally:
        done.set()
        timer.cancel()
    assert int(report.read_text()) == min(1000, own + WORKER_OOM_BIAS)
    assert int(Path("/proc/self/oom_score_adj").read_text()) == own  # the parent kept its own


def test_the_bias_is_capped_and_a_missing_or_odd_file_is_ignored(tmp_path):
    adj = tmp_path / "oom_score_adj"
    adj.write_text("950\n")
    _prefer_as_oom_victim(str(adj))
    assert adj.read_text() == "1000"
    adj.write_text("not a number")
    _prefer_as_oom_victim(str(adj))  # no exception: best effort, like PDEATHSIG
    _prefer_as_oom_victim(str(tmp_path / "absent"))
