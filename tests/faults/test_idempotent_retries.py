"""Idempotent retries across a SIGKILLed worker, never for other methods; hedging past a frozen one.

Real `amqprpc run` processes on the shared broker (this module is also the service they
run: ``TallyService``, named from the environment). Workers run with
``rpc_max_attempts = 1``, so a request whose worker was SIGKILLed is answered ``WorkerLost``
by the worker that gets it next instead of being run again by the framework: what a caller
then does is up to its retries. The client learns which methods are idempotent from the
services' descriptors (a ``ServiceRegistry``), as the bridge does.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amqprpc import ClusterRpcClient, Config, RemoteError, RpcTimeout, rpc
from amqprpc.discovery import ServiceRegistry
from amqprpc.testing.pytest import broker_admin
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


class TallyService:
    """Records every run in ``$TALLY_DIR/<key>.runs``; the first run of a key can be made to hang."""

    name = os.environ.get("TALLY_SERVICE_NAME", "tally")

    def _run(self, key: str, hang_first: bool) -> int:
        folder = Path(os.environ["TALLY_DIR"])
        runs = folder / f"{key}.runs"
        first = not runs.exists()
        with runs.open("a") as log:
            log.write(f"{os.getpid()}\n")
        if first and hang_first:
            (folder / f"{key}.hanging").write_text(str(os.getpid()))
            time.sleep(60)  # until the test SIGKILLs us
        return os.getpid()

    @rpc(idempotent=True)
    def record(self, key: str, hang_first: bool = False) -> int:
        return self._run(key, hang_first)

    @rpc
    def record_once(self, key: str, hang_first: bool = False) -> int:
        return self._run(key, hang_first)

    @rpc(idempotent=True)
    def quick(self) -> int:
        return os.getpid()


pytestmark = pytest.mark.integration


class Workers:
    def __init__(self, amqp_uri: str, service: str, folder: Path) -> None:
        self.amqp_uri, self.service, self.folder = amqp_uri, service, folder
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TALLY_SERVICE_NAME": self.service,
               "TALLY_DIR": str(self.folder), "AMQPRPC_RPC_MAX_ATTEMPTS": "1",
               "AMQPRPC_DISCOVERY_INTERVAL": "0.5"}
        with (self.folder / f"worker-{len(self.processes)}.log").open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "amqprpc.cli", "run", "tests.faults.test_idempotent_retries",
                 "--broker", self.amqp_uri, "--concurrency", "2", "--log-level", "WARNING"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def consumers(self) -> int:
        with broker_admin(self.amqp_uri) as channel:
            try:
                return int(channel.queue_declare(f"rpc-{self.service}", passive=True)[2])
            except Exception:
                return 0

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.wait(10)
        with broker_admin(self.amqp_uri) as channel:
            channel.queue_delete(f"rpc-{self.service}")


    def ensure(self, count: int) -> list[subprocess.Popen[bytes]]:
        """``count`` live workers, consuming (killed ones replaced)."""
        alive = [p for p in self.processes if p.poll() is None]
        while len(alive) < count:
            alive.append(self.start())
        wait_until(lambda: self.consumers() == count, f"{count} workers to consume", timeout=30)
        return alive


@pytest.fixture(scope="module")
def tally(amqp_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """Three workers for the whole module (starting them costs ~1 s of CPU each)."""
    workers = Workers(amqp_uri, f"tally-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("tally"))
    try:
        workers.ensure(3)
        yield workers
    finally:
        workers.stop()


@pytest.fixture(scope="module")
def client(tally: Workers, amqp_uri: str) -> Iterator[ClusterRpcClient]:
    config = Config(broker_url=amqp_uri, retries=1, retry_window=60.0, retry_backoff=0.02,
                    discovery_interval=0.5)
    registry = ServiceRegistry(config)
    registry.start()
    try:
        wait_until(lambda: registry.is_idempotent(tally.service, "record"),
                   "the descriptor to say record is idempotent", timeout=10)
        with ClusterRpcClient(config=config, timeout=15) as rpc_client:
            assert rpc_client.resilience is not None
            rpc_client.resilience.lookups.append(registry.is_idempotent)
            for _ in range(20):  # calls that earn the budget its first retries (10 %)
                rpc_client.call(tally.service, "quick")
            yield rpc_client
    finally:
        registry.stop()


def kill_the_hanging_worker(tally: Workers, key: str) -> None:
    marker = tally.folder / f"{key}.hanging"
    wait_until(marker.exists, "the first run to start", timeout=15)
    os.kill(int(marker.read_text()), signal.SIGKILL)


def runs_of(tally: Workers, key: str) -> int:
    return len((tally.folder / f"{key}.runs").read_text().split())


def test_an_idempotent_call_survives_a_sigkilled_worker_and_is_answered_once(tally, client):
    future = client.call_async(tally.service, "record", "k1", hang_first=True)
    kill_the_hanging_worker(tally, "k1")
    pid = future.result(timeout=20)
    assert isinstance(pid, int)
    runs = runs_of(tally, "k1")
    assert runs >= 1  # at least once: the killed run, then the retry
    print(f"idempotent call: {runs} run(s), one answer from pid {pid}")
    assert client.resilience is not None and client.resilience.budget.totals()[1] >= 1


def test_a_non_idempotent_call_is_never_retried(tally, client):
    future = client.call_async(tally.service, "record_once", "k2", hang_first=True)
    kill_the_hanging_worker(tally, "k2")
    with pytest.raises(RemoteError) as raised:
        future.result(timeout=20)
    assert raised.value.exc_type == "WorkerLost"
    # the answer is in: had anyone sent it again, the run would have been recorded by now
    assert runs_of(tally, "k2") == 1


def latencies(client: ClusterRpcClient, service: str, calls: int, **kwargs: Any) -> list[float]:
    taken = []
    for _ in range(calls):
        started = time.perf_counter()
        try:
            client.call(service, "quick", _timeout=1.0, **kwargs)
        except RpcTimeout:
            pass  # counted at its full timeout
        taken.append(time.perf_counter() - started)
    return sorted(taken)


def test_hedging_past_a_frozen_worker_cuts_p99_within_the_budget(tally, client):
    frozen = tally.ensure(3)[2]
    sent: list[Any] = []
    client._caller.on_call = sent.append  # every attempt the caller publishes
    calls = 150

    def phase(**kwargs: Any) -> list[float]:
        frozen.send_signal(signal.SIGSTOP)
        try:
            return latencies(client, tally.service, calls, **kwargs)
        finally:
            frozen.send_signal(signal.SIGCONT)
            wait_until(lambda: client.call(tally.service, "quick") > 0, "the worker to thaw")

    plain = phase(_hedge_after=0.0)
    sent.clear()
    hedged = phase(_hedge_after=0.05)
    extra = len(sent) - calls
    p99 = math.ceil(calls * 0.99) - 1  # nearest rank
    print(f"p50/p99 without hedging: {plain[calls // 2] * 1e3:.1f}/{plain[p99] * 1e3:.1f} ms; "
          f"with hedge_after=50ms: {hedged[calls // 2] * 1e3:.1f}/{hedged[p99] * 1e3:.1f} ms; "
          f"hedges sent: {extra} for {calls} calls")
    assert client.resilience is not None
    budget_calls, budget_extra = client.resilience.budget.totals()
    assert extra <= 0.1 * budget_calls and budget_extra <= 0.1 * budget_calls
    assert hedged[p99] < plain[p99]

