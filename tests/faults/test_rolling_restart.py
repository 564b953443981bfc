"""W4 at scale: an orchestrator's scale-downs and rollouts lose nothing (issue #17, item 4).

The test plays Kubernetes: it runs ``amqprpc run`` worker processes on the machine's broker,
keeps a steady stream of calls and confirmed events going, and in rounds starts new workers
(a rollout's surge), SIGTERMs old ones (a rollout's or a scale-down's termination) and
scales back up. Every run of a call or an event is recorded by id in a file shared by all
workers. At the end:

* every call got exactly one outcome, its own result (invariant i);
* every call ran exactly once: a graceful stop cancels the consumer, finishes and acks what
  it took, so nothing is redelivered (invariant iii without an idempotency key);
* every event the broker confirmed was handled, once (invariant ii);
* every SIGTERMed worker exited 0 (it stopped cleanly within its grace).

One generation runs under the prefork supervisor (``--workers 2``): its SIGTERM reaches the
parent, which forwards it to both children, as in a pod whose PID 1 is ``amqprpc run``.

No private broker node is needed: nothing here breaks the broker, only the workers.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from amqprpc import ClusterRpcClient, Config, EventPublisher
from amqprpc.testing.pytest import broker_admin

from ..waiting import wait_until

pytestmark = [pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
GRACE = 10.0  # far more than a 20 ms call needs: a stop that hits it is a failure
WINDOW = 16  # calls in flight at any moment


class Fleet:
    """The worker processes of one service, as an orchestrator sees them."""

    def __init__(self, amqp_uri: str, service: str, source: str, log: Path, folder: Path) -> None:
        self.amqp_uri = amqp_uri
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "ROLLING_SERVICE_NAME": service,
                    "ROLLING_SOURCE": source, "ROLLING_LOG": str(log)}
        self.folder = folder
        self.queues = (f"rpc-{service}", f"evt-{source}-tick--{service}.on_tick")
        self.live: list[subprocess.Popen[bytes]] = []
        self.stopped: list[tuple[subprocess.Popen[bytes], int]] = []
        self._count = 0
        self.processes: dict[int, int] = {}  # pid -> worker processes it supervises

    def start(self, n: int, *, workers: int = 1) -> None:
        """Start ``n`` workers (each ``--workers`` processes under one supervisor) and wait
        until each process consumes both of the service's queues."""
        for _ in range(n):
            self._count += 1
            with (self.folder / f"worker-{self._count}.log").open("w") as out:
                self.live.append(subprocess.Popen(
                    [sys.executable, "-m", "amqprpc.cli", "run", "tests.faults.apps.rolling",
                     "--broker", self.amqp_uri, "--grace", str(GRACE), "--concurrency", "4",
                     "--log-level", "WARNING", "--workers", str(workers)],
                    env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
            self.processes[self.live[-1].pid] = workers
        expected = sum(self.processes[p.pid] for p in self.live)
        wait_until(lambda: self.consumers() == [expected] * 2,
                   f"{expected} consumers on {self.queues}", timeout=45)

    def terminate(self, n: int) -> None:
        """SIGTERM the ``n`` oldest workers at once, as a scale-down does; wait for them to exit."""
        victims, self.live = self.live[:n], self.live[n:]
        for process in victims:
            process.send_signal(signal.SIGTERM)
        for process in victims:
            self.stopped.append((process, process.wait(GRACE + 20)))

    def consumers(self) -> list[int]:
        try:
            with broker_admin(self.amqp_uri) as channel:
                return [channel.queue_declare(queue, passive=True).consumer_count
                        for queue in self.queues]
        except Exception:  # not declared yet
            return []

    def kill_all(self) -> None:
        for process in self.live:
            process.kill()
            process.wait(10)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.folder.glob("*.log")))


class Traffic:
    """A steady stream: ``WINDOW`` calls in flight, and an event after every call sent."""

    def __init__(self, amqp_uri: str, service: str, source: str) -> None:
        self.service = service
        self.source = source
        self.client = ClusterRpcClient(config=Config(broker_url=amqp_uri), timeout=60)
        self.events = EventPublisher(amqp_uri)
        self.calls: dict[str, Future[object]] = {}
        self.sent_events: dict[str, Future[None]] = {}
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rolling-traffic")
        self._slots = threading.Semaphore(WINDOW)

    def __enter__(self) -> Traffic:
        self.client.start()
        self.events.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.events.stop()
        self.client.stop()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue
            n += 1
            ident = f"c{n}"
            future = self.client.call_async(self.service, "work", ident)
            future.add_done_callback(self._done)
            self.calls[ident] = future
            self.sent_events[f"e{n}"] = self.events.dispatch(self.source, "tick", {"id": f"e{n}"})

    def _done(self, future: Future[object]) -> None:
        self.answered += 1
        self._slots.release()

    def wait_for_more(self, n: int) -> None:
        """Let ``n`` more calls be answered (the stream keeps flowing between rounds)."""
        target = self.answered + n
        wait_until(lambda: self.answered >= target, f"{n} more answered calls", timeout=30)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture
def fleet(amqp_uri: str, unique_name, tmp_path: Path) -> Iterator[Fleet]:
    service = unique_name("rolling")
    fleet = Fleet(amqp_uri, service, f"{service}-src", tmp_path / "runs.log", tmp_path)
    yield fleet
    fleet.kill_all()
    with broker_admin(amqp_uri) as channel:
        for queue in fleet.queues:
            channel.queue_delete(queue)
        channel.exchange_delete(f"{service}-src.events")


def test_rolling_restarts_and_scale_downs_lose_nothing(fleet: Fleet, amqp_uri: str) -> None:
    service = fleet.env["ROLLING_SERVICE_NAME"]
    fleet.start(3)
    with Traffic(amqp_uri, service, fleet.env["ROLLING_SOURCE"]) as traffic:
        traffic.wait_for_more(50)
        fleet.start(1)       # rollout: surge one new worker...
        fleet.terminate(1)   # ...then retire an old one
        traffic.wait_for_more(50)
        fleet.terminate(2)   # scale down 3 -> 1, two at once
        traffic.wait_for_more(50)
        fleet.start(1, workers=2)  # scale up again, with a supervisor of two processes
        fleet.terminate(1)   # and roll the last of the first generation
        traffic.wait_for_more(50)
        traffic.stop()
        outcomes = {ident: future.exception(60) or future.result() for ident, future in traffic.calls.items()}
        confirmed = {ident for ident, future in traffic.sent_events.items() if future.exception(30) is None}

    runs = Path(fleet.env["ROLLING_LOG"])
    wait_until(lambda: confirmed <= _runs(runs, "event").keys(), "every confirmed event handled", timeout=30)
    fleet.terminate(len(fleet.live))  # the last generation stops cleanly too

    failed = {ident: outcome for ident, outcome in outcomes.items() if outcome != ident}
    assert not failed, f"calls without their own result: {list(failed.items())[:5]}\n{fleet.logs()}"
    call_runs = _runs(runs, "call")
    assert set(call_runs) == set(outcomes), "a call ran that was never sent, or one never ran"
    twice = {ident: n for ident, n in call_runs.items() if n != 1}
    assert not twice, f"calls run more than once: {twice}\n{fleet.logs()}"
    event_runs = _runs(runs, "event")
    assert not {ident: n for ident, n in event_runs.items() if n != 1}, "an event handled twice"
    assert [code for _, code in fleet.stopped] == [0] * len(fleet.stopped), fleet.logs()
    assert len(outcomes) >= 200 and len(fleet.stopped) == 5


def _runs(log: Path, kind: str) -> collections.Counter[str]:
    if not log.exists():
        return collections.Counter()
    return collections.Counter(line.split()[1] for line in log.read_text().splitlines()
                               if line.startswith(f"{kind} "))
