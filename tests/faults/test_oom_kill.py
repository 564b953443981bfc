"""W7: a request that makes every worker that takes it run out of memory (a real kernel OOM
kill in a cgroup-v1 memory cgroup, ../shared/notes/reliability.md) stops after a bound.

The supervisor restarts each killed child; after ``rpc_max_attempts`` lost runs (3) the
caller gets ``WorkerLost``, and the service keeps answering other calls. The os._exit twin
of this case (classic and quorum queues) is tests/integration/test_poison_requests.py.

Each worker moves itself into the cgroup as it takes the request, as the matrix row says
("run the worker in a memory cgroup"); the supervisor stays out. With the supervisor inside
too, the run is a race, not a test: a restart forked while a killed worker's memory is
still being torn down charges the cgroup again, and the kernel, which skips the victim it
already chose, may then pick the supervisor, the only other task left (CI saw it, exit
-9). Workers raise their ``oom_score_adj`` to make that rare (tests/unit/test_supervisor.py);
docs/production.md says what makes it impossible.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from amqprpc import ClusterRpcClient, Config, RemoteError, RpcTimeout
from amqprpc.testing.pytest import broker_admin

from ..integration.worker_processes import ROOT, call_when_ready

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

MEMORY_ROOT = Path("/sys/fs/cgroup/memory")
LIMIT_MB = 200  # only what a worker allocates after joining is charged: a 1 GiB request is not
HOG_MB = 1024


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    """A memory cgroup of our own (cgroup v1), removed afterwards; skip where there is none."""
    if not (MEMORY_ROOT / "memory.limit_in_bytes").exists() or not os.access(MEMORY_ROOT, os.W_OK):
        pytest.skip("needs a writable cgroup-v1 memory hierarchy at /sys/fs/cgroup/memory")
    group = MEMORY_ROOT / f"amqprpc-w7-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(f"{LIMIT_MB}M")
        swap_limit = group / "memory.memsw.limit_in_bytes"
        if swap_limit.exists():  # no swapping out of the limit
            swap_limit.write_text(f"{LIMIT_MB}M")
        yield group
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait_empty(group)
        group.rmdir()


def _wait_empty(group: Path) -> None:
    from ..waiting import wait_until

    wait_until(lambda: not (group / "cgroup.procs").read_text().split(), "the cgroup to empty",
               timeout=20)


def _oom_kills(group: Path) -> int:
    for line in (group / "memory.oom_control").read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill":
            return int(value)
    return 0


def test_W7_a_request_that_oom_kills_every_worker_ends_in_worker_lost(memory_cgroup, amqp_uri,
                                                                     unique_name, tmp_path):
    service = unique_name("hog")
    log = (tmp_path / "worker.log").open("w")
    command = [sys.executable, "-m", "amqprpc.cli", "run", "tests.integration.apps.echo",
               "--broker", amqp_uri, "--workers", "2", "--log-level", "INFO"]
    supervisor = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "ECHO_SERVICE_NAME": service, "PYTHONPATH": str(ROOT)})
    try:
        # While every child is dead and in restart backoff no worker consumes the queue; a
        # patience past the crash loop keeps presence from ending the call before the bound does.
        patient = Config(rpc_presence_patience=120)
        with ClusterRpcClient(amqp_uri, config=patient, timeout=90) as client:
            assert call_when_ready(client, service, "echo", "up") == "up"
            with pytest.raises(RemoteError) as caught:
                try:
                    client.call(service, "hog", str(tmp_path), HOG_MB, str(memory_cgroup))
                except RpcTimeout:  # say what the workers did: the log is a file, not captured
                    log.flush()
                    pytest.fail(f"no answer: runs {sorted(p.name for p in tmp_path.glob('*.hog'))}, "
                                f"OOM kills {_oom_kills(memory_cgroup)}, supervisor exit "
                                f"{supervisor.poll()}, worker log:\n"
                                + (tmp_path / "worker.log").read_text()[-6000:])
            assert caught.value.exc_type == "WorkerLost"
            runs = sorted(tmp_path.glob("*.hog"))
            assert len(runs) == 3, [path.name for path in runs]  # rpc_max_attempts, a new process each
            assert _oom_kills(memory_cgroup) >= 3  # the kernel did it, not the handler
            assert call_when_ready(client, service, "echo", "after") == "after"  # others still flow
        assert supervisor.poll() is None, (tmp_path / "worker.log").read_text()  # it lived through it
    finally:
        supervisor.kill()
        supervisor.wait(10)
        log.close()
        with broker_admin(amqp_uri) as channel:
            channel.queue_delete(f"rpc-{service}")
