"""W5/B5: a delivery that outlives RabbitMQ's ``consumer_timeout``.

The broker closes the consumer's channel (``PRECONDITION_FAILED - delivery acknowledgement
... timed out``) and requeues what that channel held. One node per module with the timer
compressed (``consumer_timeout`` 3 s, checked every second: ~4 s in all). What must hold:

* the worker notices, replaces its channel (a new connection generation), consumes again
  and serves on;
* it never acks a delivery tag of the dead channel on the new one (that would be an
  ``unknown delivery tag`` channel error, i.e. one more reconnect, and the broker says so
  in its log);
* the caller gets exactly one reply although the request ran twice.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from amqprpc import ClusterRpcClient, Config, ServiceContainer

from ..integration.worker_processes import Worker, call_when_ready
from ..waiting import wait_until
from .rabbit_node import RabbitNode
from .test_worker_faults import FaultService, Probe

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

CONSUMER_TIMEOUT_MS = 3000
STALE_TAG = "unknown delivery tag"


@pytest.fixture(scope="module")
def timeout_node() -> Iterator[RabbitNode]:
    node = RabbitNode(advanced_config=(
        "[{rabbit, [{channel_tick_interval, 1000},"
        f" {{consumer_timeout, {CONSUMER_TIMEOUT_MS}}}]}}]."))
    try:
        node.start()
        yield node
    finally:
        node.cleanup()


def broker_log(node: RabbitNode) -> str:
    try:
        return node.log_file.read_text(errors="replace")
    except OSError:
        return ""


def test_B5_handler_past_consumer_timeout_recovers_without_stale_acks(timeout_node, unique_name):
    """A handler that runs past the timeout: channel replaced, request re-run, one reply."""
    service = type("Slow", (FaultService,), {"name": unique_name("slow"), "probe": Probe()})
    config = Config(broker_url=timeout_node.url, heartbeat=2.0, concurrency=2)
    container = ServiceContainer(service, config)
    container.connection.max_backoff = 1.0
    container.start()
    try:
        with ClusterRpcClient(config=config, timeout=40) as client:
            assert client.call(service.name, "echo", 1) == 1
            future = client.call_async(service.name, "hold", 60)
            wait_until(service.probe.started.is_set, "the call to start", timeout=10)
            wait_until(lambda: container.connection.generation == 2,
                       "the broker to close the channel of the overdue delivery", timeout=30)
            # Redelivered (counted as a lost run) to the new channel: it runs again.
            wait_until(lambda: sum(service.probe.runs.values()) == 2,
                       "the redelivered request to run again", timeout=20)
            service.probe.release.set()
            assert future.result(timeout=20) == "held"
            assert len(service.probe.runs) == 1  # one request, run twice
            assert container.wait_idle(10)
            # A round trip after both runs finished: any stale ack went out before its reply.
            assert client.call(service.name, "echo", 2) == 2
            assert client._caller.pending_count() == 0
        assert container.connection.generation == 2, "a stale ack broke the new channel"
        assert STALE_TAG not in broker_log(timeout_node)
        assert "timed out" in broker_log(timeout_node)  # it was the consumer timeout
    finally:
        container.stop(grace=5)


def test_W5_worker_frozen_past_consumer_timeout(timeout_node, unique_name, tmp_path, monkeypatch):
    """A worker SIGSTOPped with a call: another worker answers; the thawed one recovers.

    Its heartbeat is longer than the freeze, so the consumer timeout, not a missed
    heartbeat, is what takes the delivery away from it.
    """
    monkeypatch.setenv("AMQPRPC_HEARTBEAT", "60")
    service = unique_name("frozen")
    markers = tmp_path / "markers"
    markers.mkdir()
    started: list[Worker] = []

    def start(name: str) -> Worker:
        worker = Worker(service, timeout_node.url, tmp_path / f"{name}.log")
        started.append(worker)
        return worker

    def started_by(worker: Worker) -> bool:
        return (markers / f"{worker.pid}.started").exists()

    try:
        frozen = start("frozen")
        with ClusterRpcClient(config=Config(broker_url=timeout_node.url, heartbeat=2.0),
                              timeout=40) as client:
            assert call_when_ready(client, service, "pid") == frozen.pid
            future = client.call_async(service, "hold", str(markers), 60)
            wait_until(lambda: started_by(frozen), "the call to start", timeout=20)
            frozen.process.send_signal(signal.SIGSTOP)
            try:
                helper = start("helper")
                wait_until(lambda: started_by(helper),
                           "the overdue call to reach the other worker", timeout=40)
                (markers / "release").touch()
                assert future.result(timeout=20) == helper.pid
            finally:
                frozen.process.send_signal(signal.SIGCONT)

            def frozen_serves_again() -> bool:
                return client.call(service, "pid", _timeout=5) == frozen.pid

            wait_until(frozen_serves_again, "the thawed worker to serve again", timeout=40)
            assert client._caller.pending_count() == 0
        assert frozen.process.poll() is None and helper.process.poll() is None
        output = frozen.output()
        assert "PRECONDITION_FAILED" in output  # it saw why its channel went away
        assert "Traceback" not in output
        assert STALE_TAG not in output and STALE_TAG not in broker_log(timeout_node)
    finally:
        for worker in started:
            worker.process.send_signal(signal.SIGCONT)
            worker.stop(signal.SIGKILL)
        _delete(timeout_node, f"rpc-{service}")


def _delete(node: RabbitNode, queue: str) -> None:
    from amqprpc.testing.pytest import broker_admin

    with broker_admin(node.url) as channel:
        channel.queue_delete(queue)


