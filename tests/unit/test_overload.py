"""Overload protection on ``memory://`` (amqprpc/resilience/overload.py): a bounded service
queue refuses the excess at once, and a client's calls in flight to a service are capped."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from amqprpc import ClusterRpcClient, Config, ConfigError, ServiceContainer, ServiceOverloaded, rpc
from amqprpc.resilience.overload import InFlightLimits, max_queue_length, queue_bound_arguments
from amqprpc.topology import rpc_queue_topology
from amqprpc.transport.base import Queue
from tests.waiting import wait_until

TIMEOUT = 10.0


class Bounded:
    name = "bounded"
    max_queue_length = 3
    gate = threading.Event()
    runs: list[int] = []

    @rpc
    def work(self, n: int) -> int:
        assert self.gate.wait(TIMEOUT)
        self.runs.append(n)
        return n


@pytest.fixture
def config(request: pytest.FixtureRequest) -> Config:
    return Config(broker_url=f"memory://{request.node.name}", concurrency=1)


@pytest.fixture
def bounded(config: Config) -> Iterator[type]:
    service = type("Bounded", (Bounded,), {"gate": threading.Event(), "runs": []})
    container = ServiceContainer(service, config)
    container.start()
    yield service
    service.gate.set()
    container.stop()


def test_the_bound_comes_from_the_config_first_then_the_class() -> None:
    assert max_queue_length(Config(), "bounded", Bounded) == 3
    assert max_queue_length(Config(extra={"BOUNDED_MAX_QUEUE_LENGTH": "7"}), "bounded", Bounded) == 7
    assert max_queue_length(Config(extra={"max_queue_length": 9}), "other", None) == 9
    assert max_queue_length(Config(), "other", object) == 0
    with pytest.raises(ConfigError, match="BOUNDED_MAX_QUEUE_LENGTH must be a whole number"):
        max_queue_length(Config(extra={"BOUNDED_MAX_QUEUE_LENGTH": "many"}), "bounded", Bounded)
    with pytest.raises(ConfigError, match=">= 0"):
        max_queue_length(Config(extra={"MAX_QUEUE_LENGTH": -1}), "bounded", Bounded)


def test_a_bounded_queue_is_declared_reject_publish_and_an_unbounded_one_as_before() -> None:
    config = Config()
    queue = rpc_queue_topology(config, "s", 100)[1]
    assert isinstance(queue, Queue) and queue.arguments == queue_bound_arguments(100) == {
        "x-max-length": 100, "x-overflow": "reject-publish"}
    plain = rpc_queue_topology(config, "s")[1]
    assert isinstance(plain, Queue) and plain.arguments is None  # Nameko's declaration
    quorum = rpc_queue_topology(Config(queue_type="quorum"), "s", 5)[1]
    assert isinstance(quorum, Queue) and quorum.arguments is not None
    assert quorum.arguments["x-queue-type"] == "quorum" and quorum.arguments["x-max-length"] == 5


def test_calls_past_a_full_queue_fail_at_once_and_the_accepted_ones_run_once(config, bounded) -> None:
    with ClusterRpcClient(config=config, timeout=TIMEOUT) as client:
        futures = [client.bounded.work.call_async(n) for n in range(10)]
        # One is running (prefetch 1), three wait in the queue: the other six are refused.
        wait_until(lambda: sum(f.done() for f in futures) >= 6, "the excess to be refused")
        refused = [n for n, f in enumerate(futures) if f.done()]
        assert len(refused) == 6
        for n in refused:
            with pytest.raises(ServiceOverloaded, match="rpc-bounded is full"):
                futures[n].result()
        bounded.gate.set()
        accepted = [n for n in range(10) if n not in refused]
        assert [futures[n].result(TIMEOUT) for n in accepted] == accepted
        assert sorted(bounded.runs) == accepted  # each accepted call ran once, no refused one
        assert client.bounded.work(99) == 99  # room again


def test_a_client_caps_its_calls_in_flight_per_service(config, bounded) -> None:
    capped = config.replace(extra={"RPC_MAX_IN_FLIGHT": 2, "OTHER_RPC_MAX_IN_FLIGHT": "0"})
    with ClusterRpcClient(config=capped, timeout=TIMEOUT) as client:
        first, second = (client.bounded.work.call_async(n) for n in (1, 2))
        with pytest.raises(ServiceOverloaded, match=r"2 calls in flight.*rpc_max_in_flight = 2"):
            client.bounded.work.call_async(3)
        assert client._caller.pending_count() == 2  # the refused one was never sent
        bounded.gate.set()
        assert (first.result(TIMEOUT), second.result(TIMEOUT)) == (1, 2)
        assert client.bounded.work(4) == 4  # places are given back when calls end
        assert sorted(bounded.runs) == [1, 2, 4]


def test_in_flight_limits_parse_the_config_and_cost_nothing_when_unset() -> None:
    assert InFlightLimits.from_config(Config()) is None
    assert InFlightLimits.from_config(Config(extra={"RPC_MAX_IN_FLIGHT": 0})) is None
    limits = InFlightLimits.from_config(Config(extra={"rpc_max_in_flight": 5,
                                                      "MY_SVC_RPC_MAX_IN_FLIGHT": "2"}))
    assert limits is not None
    assert (limits.cap("my-svc"), limits.cap("other")) == (2, 5)
    with pytest.raises(ConfigError, match="RPC_MAX_IN_FLIGHT must be a whole number"):
        InFlightLimits.from_config(Config(extra={"RPC_MAX_IN_FLIGHT": "lots"}))


def test_in_flight_places_are_released_by_every_outcome() -> None:
    from concurrent.futures import Future

    class Call(Future[Any]):
        service = "s"

    limits = InFlightLimits(1, {})
    ok, failed = Call(), Call()
    limits.admit(ok)
    with pytest.raises(ServiceOverloaded):
        limits.admit(Call())
    ok.set_result(1)
    limits.admit(failed)
    failed.set_exception(RuntimeError("lost"))
    assert limits.in_flight("s") == 0
