"""Overload protection against RabbitMQ and a real worker process (docs/resilience.md).

A service with ``max_queue_length = 100`` gets three times what its one worker can do. The
excess must fail fast with ``ServiceOverloaded`` (the broker nacks it: reject-publish), the
accepted calls must finish within their deadline, and every accepted call must run exactly
once while no refused one runs (the worker appends each run to a file we count). The client
keeps its connection throughout: a reject-publish nack is not a broken channel.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from amqprpc import ClusterRpcClient, Config, RpcTimeout, ServiceOverloaded, rpc
from amqprpc.testing.pytest import broker_admin

from ..waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
HANDLER_SECONDS = 0.04
CONCURRENCY = 4  # one worker: ~100 calls/s, bound by sleeps, not CPU
OFFERED_PER_SECOND = 300  # 3x its capacity
SECONDS = 2.0
DEADLINE = 10.0  # a full queue holds ~1 s of work: the accepted ones are far inside it
SHED_WITHIN = 1.0  # seconds; ~1 ms here, generous for a loaded CI machine


class Slow:
    """The service the worker process runs: ``max_queue_length`` and a fixed service time."""

    name = os.environ.get("OVERLOAD_SERVICE_NAME", "overload")
    max_queue_length = 100

    @rpc
    def work(self, n: int, runs_file: str) -> int:
        time.sleep(HANDLER_SECONDS)
        with open(runs_file, "a") as runs:  # one short O_APPEND write per run: never interleaved
            runs.write(f"{n}\n")
        return n


@pytest.fixture
def worker(amqp_uri: str, unique_name, tmp_path: Path):
    service = unique_name("overload")
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "amqprpc.cli", "run", "tests.integration.test_overload:Slow",
         "--broker", amqp_uri, "--concurrency", str(CONCURRENCY), "--log-level", "WARNING"],
        env={**os.environ, "OVERLOAD_SERVICE_NAME": service, "PYTHONPATH": str(ROOT)},
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    yield service
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    log.close()
    with broker_admin(amqp_uri) as channel:
        channel.queue_delete(f"rpc-{service}")


def test_a_bounded_service_at_3x_its_capacity_sheds_the_excess_at_once(amqp_uri, worker, tmp_path):
    runs_file = str(tmp_path / "runs")
    with ClusterRpcClient(config=Config(broker_url=amqp_uri), timeout=DEADLINE) as client:
        def ready() -> bool:
            try:
                return client.call(worker, "work", -1, runs_file, _timeout=2) == -1
            except Exception:  # UnknownService until the worker has declared its queue
                return False
        wait_until(ready, "the worker to serve", timeout=30)
        generation = client._connection.generation

        ended: dict[int, float] = {}
        lock = threading.Lock()
        futures, sent_at = [], []
        total = int(OFFERED_PER_SECOND * SECONDS)
        batch = 15
        started = time.monotonic()
        for first in range(0, total, batch):  # paced: 15 calls every 50 ms
            while time.monotonic() < started + first / OFFERED_PER_SECOND:
                time.sleep(0.002)
            for n in range(first, min(total, first + batch)):
                future = client.call_async(worker, "work", n, runs_file)
                sent_at.append(time.monotonic())

                def done(_: object, n: int = n) -> None:
                    with lock:
                        ended[n] = time.monotonic()
                future.add_done_callback(done)
                futures.append(future)

        accepted, refused, shed_seconds = [], [], []
        for n, future in enumerate(futures):
            try:
                assert future.result(DEADLINE + 5) == n
                accepted.append(n)
            except ServiceOverloaded:
                refused.append(n)
                shed_seconds.append(ended[n] - sent_at[n])
            except RpcTimeout:
                pytest.fail(f"call {n} timed out: an accepted call must finish within its deadline")
        assert client._connection.generation == generation, "the client replaced its connection"

    assert len(accepted) + len(refused) == total
    assert refused, "3x the capacity through a 100-message queue must refuse some calls"
    assert len(accepted) >= 100  # the queue's worth at least, plus what the worker took meanwhile
    shed_seconds.sort()
    assert shed_seconds[len(shed_seconds) * 99 // 100] < SHED_WITHIN
    wait_until(lambda: len(Path(runs_file).read_text().split()) >= len(accepted) + 1,
               "every accepted call to have run", timeout=20)
    runs = [int(line) for line in Path(runs_file).read_text().split() if line != "-1"]
    assert sorted(runs) == accepted, "an accepted call ran twice or not at all, or a refused one ran"
    print(f"{total} offered: {len(accepted)} accepted, {len(refused)} refused; shed p50 "
          f"{shed_seconds[len(shed_seconds) // 2] * 1000:.1f} ms")


def test_a_changed_bound_on_an_existing_queue_is_a_clear_error(amqp_uri, unique_name, caplog):
    """RabbitMQ cannot change a queue's arguments: the worker says which, and what to do."""
    from amqprpc import BrokerUnreachable, ServiceContainer

    name = unique_name("rebound")
    with broker_admin(amqp_uri) as channel:
        channel.queue_declare(f"rpc-{name}", durable=True, auto_delete=False,
                              arguments={"x-max-length": 100, "x-overflow": "reject-publish"})
    service = type("Rebound", (Slow,), {"name": name, "max_queue_length": 200})
    try:
        with pytest.raises(BrokerUnreachable, match="received '200' but current is '100'"):
            ServiceContainer(service, Config(broker_url=amqp_uri)).start()
        logged = caplog.text
        assert f"rpc-{name}" in logged and "'x-max-length': 200" in logged
        assert "cannot change the arguments of an existing queue" in logged
        assert "policy" in logged
    finally:
        with broker_admin(amqp_uri) as channel:
            channel.queue_delete(f"rpc-{name}")
