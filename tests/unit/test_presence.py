"""Presence's decisions, on a scripted transport: who is asked about, when, and who fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from amqprpc import ServiceUnavailable, UnknownService
from amqprpc.presence import GRACE, PATIENCE, Presence
from amqprpc.transport import QueueInfo

from ..waiting import wait_until


@dataclass
class Call:
    service: str
    correlation_id: str
    deadline: float
    timeout: float = 30.0
    queue: str = ""

    def __post_init__(self) -> None:
        self.queue = self.queue or f"rpc-{self.service}"


class ScriptedBroker:
    """Answers queue_info from ``answers``; runs call_soon functions when ``run_io`` says."""

    name = "test"

    def __init__(self, answers: dict[str, QueueInfo | Exception | None]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.io: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def queue_info(self, queue: str, timeout: float = 5.0, *,
                   detached: bool = False) -> QueueInfo | None:
        assert detached  # never waits on the caller's I/O thread
        self.asked.append(queue)
        answer = self.answers[queue]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def call_soon(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self.io.append(fn)

    def run_io(self) -> None:
        """Wait for the question's answer to come back, and settle it (the I/O thread's part)."""
        wait_until(lambda: self.io, "the answer")
        with self._lock:
            todo, self.io = self.io, []
        for fn in todo:
            fn()


def sent(service: str, cid: str, ago: float) -> Call:
    """A call sent ``ago`` seconds before now (with a 30 s timeout)."""
    return Call(service, cid, time.monotonic() - ago + 30.0)


@pytest.fixture
def failed() -> dict[str, BaseException]:
    return {}


def fail_into(failed: dict[str, BaseException]) -> Callable[[str, BaseException], None]:
    return lambda cid, error: failed.__setitem__(cid, error)


def test_nothing_is_asked_before_the_grace(failed):
    broker = ScriptedBroker({})
    presence = Presence(broker)
    presence.sweep([sent("svc", "1", ago=GRACE / 2)], time.monotonic(), fail_into(failed))
    assert broker.asked == [] and broker.io == []


def test_no_consumer_fails_every_waiting_call_of_that_service_after_one_question(failed):
    broker = ScriptedBroker({"rpc-svc": QueueInfo("rpc-svc", 3, 0)})
    presence = Presence(broker)
    pending = {c.correlation_id: c for c in
               [sent("svc", "1", 2), sent("svc", "2", 1.5), sent("other", "3", 0.1)]}
    presence.sweep(pending.values(), time.monotonic(), fail_into(failed))
    presence.sweep(pending.values(), time.monotonic(), fail_into(failed))  # already asking
    broker.run_io()
    assert broker.asked == ["rpc-svc"]
    assert set(failed) == {"1", "2"}
    assert all(isinstance(e, ServiceUnavailable) and e.service == "svc" for e in failed.values())
    assert failed["1"] is not failed["2"]  # one instance per call


def test_a_consumer_means_a_slow_handler_and_is_not_asked_again_soon(failed):
    broker = ScriptedBroker({"rpc-svc": QueueInfo("rpc-svc", 0, 2)})
    presence = Presence(broker)
    pending = [sent("svc", "1", 2)]
    presence.sweep(pending, time.monotonic(), fail_into(failed))
    broker.run_io()
    presence.sweep(pending, time.monotonic(), fail_into(failed))
    assert failed == {} and broker.asked == ["rpc-svc"] and broker.io == []


def test_a_service_seen_a_moment_ago_gets_patience(failed):
    broker = ScriptedBroker({"rpc-svc": QueueInfo("rpc-svc", 1, 0)})
    presence = Presence(broker)
    presence.seen("rpc-svc")  # a reply just now: a restart may be under way
    pending = [sent("svc", "1", 2)]
    presence.sweep(pending, time.monotonic(), fail_into(failed))
    broker.run_io()
    assert failed == {}
    presence._seen["rpc-svc"] -= PATIENCE  # as if that reply were PATIENCE ago
    presence.sweep(pending, time.monotonic() + 1.0, fail_into(failed))  # past RECHECK
    broker.run_io()
    assert isinstance(failed["1"], ServiceUnavailable)


def test_nothing_ready_means_a_worker_holds_the_request(failed):
    """No consumer but no ready message: a worker stopping gracefully still replies."""
    broker = ScriptedBroker({"rpc-svc": QueueInfo("rpc-svc", 0, 0)})
    presence = Presence(broker)
    presence.sweep([sent("svc", "1", 2)], time.monotonic(), fail_into(failed))
    broker.run_io()
    assert failed == {}


def test_a_deleted_queue_is_an_unknown_service(failed):
    broker = ScriptedBroker({"rpc-svc": None})
    presence = Presence(broker)
    presence.sweep([sent("svc", "1", 2)], time.monotonic(), fail_into(failed))
    broker.run_io()
    assert isinstance(failed["1"], UnknownService)


def test_no_answer_leaves_the_calls_to_their_deadline_and_asks_again_later(failed):
    broker = ScriptedBroker({"rpc-svc": OSError("broker gone")})
    presence = Presence(broker)
    pending = [sent("svc", "1", 2)]
    presence.sweep(pending, time.monotonic(), fail_into(failed))
    broker.run_io()
    assert failed == {}
    presence.sweep(pending, time.monotonic(), fail_into(failed))  # too soon: RECHECK
    assert broker.asked == ["rpc-svc"]
    presence.sweep(pending, time.monotonic() + 1.0, fail_into(failed))
    broker.run_io()
    assert broker.asked == ["rpc-svc", "rpc-svc"]


def test_calls_sent_after_the_question_wait_for_their_own(failed):
    broker = ScriptedBroker({"rpc-svc": QueueInfo("rpc-svc", 2, 0)})
    presence = Presence(broker)
    pending = [sent("svc", "1", 2)]
    presence.sweep(pending, time.monotonic() - 0.5, fail_into(failed))  # asked 0.5 s ago
    pending.append(sent("svc", "2", 0.1))  # sent after the question
    broker.run_io()
    assert set(failed) == {"1"}
