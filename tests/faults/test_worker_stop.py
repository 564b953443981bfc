"""N4 + W4: stopping a worker (SIGTERM to ``amqprpc run``) when the stop cannot go well.

* W4: calls still running when ``--grace`` ends. The worker exits 1 (not 0: work was left
  undone), its calls are not acked, and the broker gives them to another worker, whose
  reply is the one the caller gets.
* N4: the worker's link to the broker is blackholed (bytes swallowed, sockets open) while
  it stops. Cancelling the consumer, flushing and closing cannot get an answer; each of
  those waits is bounded, so the process still exits in bounded time. nameko had to skip
  this case because kombu hung in ``Consumer.__exit__``.

Each worker is a real process on the session's private node (N4: through the fault proxy),
and the bound asserted is generous (``grace`` + 20 s): what matters is that it exists.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from amqprpc import ClusterRpcClient, Config
from amqprpc.testing.pytest import broker_admin

from ..integration.worker_processes import Worker, call_when_ready
from ..waiting import wait_until
from .proxy import FaultProxy
from .rabbit_node import RabbitNode

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

GRACE = 1.0
STOP_BOUND = GRACE + 20.0  # cancel (5 s) + grace + I/O thread join (5 s), with room to spare


@pytest.fixture
def service(unique_name, rabbit_node: RabbitNode) -> Iterator[str]:
    name = unique_name("stopping")
    yield name
    with broker_admin(rabbit_node.url) as channel:
        channel.queue_delete(f"rpc-{name}")


@pytest.fixture
def workers(service: str, tmp_path: Path, monkeypatch) -> Iterator[Callable[..., Worker]]:
    # Short heartbeats: the broker notices the blackholed worker's connection within ~4 s
    # and requeues what it held.
    monkeypatch.setenv("AMQPRPC_HEARTBEAT", "2")
    started: list[Worker] = []

    def start(url: str, name: str, *extra: str) -> Worker:
        worker = Worker(service, url, tmp_path / f"{name}.log", "--grace", str(GRACE), *extra)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(signal.SIGKILL)


@pytest.fixture
def client(rabbit_node: RabbitNode) -> Iterator[ClusterRpcClient]:
    with ClusterRpcClient(config=Config(broker_url=rabbit_node.url, heartbeat=2.0), timeout=60) as client:
        yield client


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    return folder


def stop_and_time(worker: Worker) -> tuple[int, float]:
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    try:
        code = worker.process.wait(STOP_BOUND + 30)
    except Exception:
        worker.process.kill()
        raise AssertionError(f"the worker did not exit after SIGTERM:\n{worker.output()}") from None
    return code, time.monotonic() - started


def started_by(markers: Path, worker: Worker) -> bool:
    return (markers / f"{worker.pid}.started").exists()


def test_W4_calls_past_grace_are_requeued_and_the_exit_status_says_so(
        rabbit_node, service, workers, client, markers):
    first = workers(rabbit_node.url, "first")
    assert call_when_ready(client, service, "pid") == first.pid
    future = client.call_async(service, "hold", str(markers), 60)
    wait_until(lambda: started_by(markers, first), "the call to start", timeout=20)

    code, took = stop_and_time(first)
    assert code == 1, f"calls outlived --grace: exit 1, not {code}\n{first.output()}"
    assert took < STOP_BOUND
    assert "still running after" in first.output()

    second = workers(rabbit_node.url, "second")
    wait_until(lambda: started_by(markers, second), "the requeued call to reach another worker",
               timeout=30)
    (markers / "release").touch()
    assert future.result(timeout=20) == second.pid  # one reply, from the worker that finished it
    assert client._caller.pending_count() == 0


def test_N4_stop_while_blackholed_ends_in_bounded_time(rabbit_node, service, workers, client,
                                                       markers):
    """Idle worker: nothing to finish, every goodbye to the broker unanswered.

    It still exits 1: without the broker's close-ok it cannot know that the acks it sent
    before the stop arrived, so the calls they finished may run again elsewhere.
    """
    with FaultProxy("127.0.0.1", rabbit_node.port) as proxy:
        worker = workers(proxy.url_for(rabbit_node.url), "blackholed")
        assert call_when_ready(client, service, "pid") == worker.pid
        proxy.blackhole()
        code, took = stop_and_time(worker)
        assert took < STOP_BOUND, f"took {took:.1f}s\n{worker.output()}"
        assert code == 1, worker.output()
        assert "closed without the broker's answer" in worker.output()


def test_N4_W4_stop_while_blackholed_with_calls_past_grace(rabbit_node, service, workers, client,
                                                           markers):
    """Both at once: bounded exit, status 1, and the call is answered once by another worker."""
    with FaultProxy("127.0.0.1", rabbit_node.port) as proxy:
        first = workers(proxy.url_for(rabbit_node.url), "blackholed")
        assert call_when_ready(client, service, "pid") == first.pid
        future = client.call_async(service, "hold", str(markers), 60)
        wait_until(lambda: started_by(markers, first), "the call to start", timeout=20)
        proxy.blackhole()
        code, took = stop_and_time(first)
        assert code == 1, f"exit {code}\n{first.output()}"
        assert took < STOP_BOUND, f"took {took:.1f}s\n{first.output()}"

        second = workers(rabbit_node.url, "direct")
        wait_until(lambda: started_by(markers, second),
                   "the broker to requeue the call of the silent worker", timeout=40)
        (markers / "release").touch()
        assert future.result(timeout=20) == second.pid
        assert client._caller.pending_count() == 0


def test_N4_call_finished_while_blackholed_is_answered_once(rabbit_node, service, workers, client,
                                                            markers):
    """The handler finishes within the grace, but its reply and ack vanish in the blackhole.

    The worker exits 1: it cannot know its reply arrived. The broker requeues the request
    once it misses the worker's heartbeats; another worker runs it again, and the caller
    gets that reply, once.
    """
    with FaultProxy("127.0.0.1", rabbit_node.port) as proxy:
        first = workers(proxy.url_for(rabbit_node.url), "blackholed")
        assert call_when_ready(client, service, "pid") == first.pid
        future = client.call_async(service, "hold", str(markers), 60)
        wait_until(lambda: started_by(markers, first), "the call to start", timeout=20)
        proxy.blackhole()
        (markers / "release").touch()  # it finishes now, well within the grace
        code, took = stop_and_time(first)
        assert took < STOP_BOUND, f"took {took:.1f}s\n{first.output()}"
        assert code == 1, f"its reply was never confirmed: exit 1, not {code}\n{first.output()}"
        assert "closed without the broker's answer" in first.output()
        second = workers(rabbit_node.url, "direct")
        assert future.result(timeout=40) == second.pid
        assert client._caller.pending_count() == 0
