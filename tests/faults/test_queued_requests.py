"""B1 for calls nobody has taken yet: requests queued in a durable service queue survive a
broker restart and run once a worker is back (they are published persistent).

The callers of those requests get an error (``ServiceUnavailable`` about a second in, as
no worker consumes the queue, or the restart takes their direct reply-to with the
connection); what must not be lost is the work itself.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator

import pytest

from amqprpc import (
    ClusterRpcClient,
    Config,
    ConnectionLost,
    RpcTimeout,
    ServiceContainer,
    ServiceUnavailable,
    rpc,
)

from ..waiting import wait_until
from .rabbit_node import RabbitNode

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

CALLS = 20


class Recorder:
    """What the test service saw, shared with the test (one per test)."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self.lock = threading.Lock()

    def add(self, value: int) -> None:
        with self.lock:
            self.values.append(value)

    def count(self) -> int:
        with self.lock:
            return len(self.values)


@pytest.fixture
def service(unique_name) -> type:
    recorder = Recorder()

    class Queued:
        name = unique_name("queued")

        @rpc
        def record(self, value: int) -> int:
            recorder.add(value)
            return value

    Queued.recorder = recorder  # type: ignore[attr-defined]
    return Queued


def ready_messages(node: RabbitNode, queue: str, *, booting: bool = False) -> int:
    """The broker's own count of ready messages in ``queue`` (0 when it does not exist;
    -1 when ``booting`` and rabbitmqctl cannot list yet)."""
    try:
        listing = node.ctl("list_queues", "name", "messages_ready")
    except subprocess.CalledProcessError:
        if booting:
            return -1
        raise
    for line in listing.splitlines():
        name, _, count = line.rpartition("\t")
        if name == queue:
            return int(count)
    return 0


@pytest.fixture
def client(rabbit_node: RabbitNode) -> Iterator[ClusterRpcClient]:
    rpc_client = ClusterRpcClient(config=Config(broker_url=rabbit_node.url, heartbeat=2.0), timeout=90)
    rpc_client.start()
    yield rpc_client
    rpc_client.stop()


def test_B1_queued_requests_survive_a_broker_restart(rabbit_node, service, client):
    config = Config(broker_url=rabbit_node.url, heartbeat=2.0)
    first = ServiceContainer(service, config)
    first.start()  # declares the durable rpc-<service> queue, then goes away
    first.stop()
    queue = f"rpc-{service.name}"

    calls = [client.call_async(service.name, "record", value) for value in range(CALLS)]
    wait_until(lambda: ready_messages(rabbit_node, queue) == CALLS,
               f"{CALLS} requests to wait in {queue}", timeout=30)

    rabbit_node.stop()
    rabbit_node.start()
    # The node answers AMQP before it has recovered every queue (rabbitmqctl may even fail
    # for a moment): wait for the count, which stays short if the restart lost requests.
    wait_until(lambda: ready_messages(rabbit_node, queue, booting=True) == CALLS,
               f"the restart to keep the {CALLS} queued requests", timeout=60)

    second = ServiceContainer(service, config)
    second.start()
    try:
        wait_until(lambda: service.recorder.count() >= CALLS, "every queued request to run",
                   timeout=30)
        assert sorted(service.recorder.values) == list(range(CALLS))  # each once, none lost
    finally:
        second.stop()
    # The callers did not wait for this: no worker consumed the queue, so each call failed
    # with ServiceUnavailable (or its reply went with the old connection). The work still ran.
    for call in calls:
        with pytest.raises((ServiceUnavailable, ConnectionLost, RpcTimeout)):
            call.result(timeout=95)
