"""Breaker states on the bus (memory://): announced on transitions, listened to with checks."""

from __future__ import annotations

import json

import pytest

from amqprpc import CircuitOpen, ClusterRpcClient, Config, UnknownService
from amqprpc.cli.services import _breaker_line
from amqprpc.exceptions import MalformedRequest
from amqprpc.resilience.announce import BreakerStates
from tests.waiting import wait_until


def test_an_open_breaker_is_announced_and_heard() -> None:
    config = Config(broker_url="memory://breaker-announce", breaker=1, discovery_interval=0.1)
    states = BreakerStates(config)
    states.start()
    try:
        with ClusterRpcClient(config=config, name="client-announce") as client:
            with pytest.raises(UnknownService):
                client.call("absent-svc", "x")
            with pytest.raises(CircuitOpen):
                client.call("absent-svc", "x")
            [state] = wait_until(lambda: states.of("absent-svc"), "the announcement")
        assert (state.owner, state.service, state.method, state.state) == (
            "client-announce", "absent-svc", "*", "open")
        assert "no consumer" in state.reason and state.retry_after > 0
        assert _breaker_line(state).startswith("breaker open at client-announce on ")
        assert states.of("other") == []
    finally:
        states.stop()


def good() -> dict[str, object]:
    return {"owner": "o", "host": "h", "pid": 1, "service": "s", "method": "*", "state": "open",
            "reason": "r", "retry_after": 1.5, "sent_at": 0}


@pytest.mark.parametrize(("change", "problem"), [
    ({"state": "exploded"}, "unknown breaker state"),
    ({"pid": "1"}, "'pid' must be an integer"),
    ({"retry_after": True}, "'retry_after' must be a number"),
    ({"owner": None}, "'owner' must be a string"),
    ({"reason": "x" * 501}, "'reason' must be a string of at most 500"),
])
def test_hostile_announcements_are_refused_with_a_reason(change: dict[str, object], problem: str) -> None:
    states = BreakerStates(Config(broker_url="memory://x"))
    assert states.receive(json.dumps(good()).encode(), "application/json").state == "open"
    with pytest.raises(MalformedRequest, match=problem):
        states.receive(json.dumps({**good(), **change}).encode(), "application/json")
    with pytest.raises(MalformedRequest):
        states.receive(b"[1, 2]", "application/json")
