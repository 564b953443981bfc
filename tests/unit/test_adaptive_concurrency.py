"""The bridge's adaptive concurrency limit (http_bridge/adaptive_concurrency.py) on a fake clock."""

from __future__ import annotations

import pytest

from amqprpc import Config, ConfigError
from http_bridge.adaptive_concurrency import AdaptiveLimit, AdaptiveParams, adaptive_limit, admitted
from http_bridge.errors import ApiError
from http_bridge.settings import BridgeSettings

PARAMS = AdaptiveParams(sample_interval=0.1, min_rtt_interval=10.0, min_rtt_requests=5,
                        buffer=0.25, min_limit=3, max_limit=100)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(limit: AdaptiveLimit, clock: Clock, latency: float, calls: int) -> None:
    """``calls`` calls that each take ``latency``, one after another, as far as the limit goes."""
    for _ in range(calls):
        assert limit.try_acquire()
        clock.now += latency
        limit.release(latency)


def test_it_measures_min_rtt_at_the_floor_then_grows_while_latency_stays_there() -> None:
    clock = Clock()
    limit = AdaptiveLimit(PARAMS, clock)
    assert limit.limit == 3  # pinned while the first min RTT is measured
    run(limit, clock, 0.010, 5)
    assert limit.min_rtt == pytest.approx(0.010)
    seen = [limit.limit]
    for _ in range(5):  # windows at the floor: gradient 1.25 (the buffer), plus headroom
        run(limit, clock, 0.010, 11)
        seen.append(limit.limit)
    assert seen == sorted(seen) and seen[-1] > 20


def test_latency_over_the_floor_shrinks_the_limit_to_its_bounds() -> None:
    clock = Clock()
    limit = AdaptiveLimit(PARAMS, clock)
    run(limit, clock, 0.010, 5)
    for _ in range(15):
        run(limit, clock, 0.010, 11)
    assert limit.limit == 100  # the ceiling
    run(limit, clock, 0.100, 1)  # 10x the floor: gradient 0.5 (its lower bound), one window
    assert limit.sample_rtt == pytest.approx(0.100)
    assert limit.limit == int(50 + 50 ** 0.5)
    run(limit, clock, 0.100, 10)
    assert limit.limit == 3  # the floor, never below


def test_calls_past_the_limit_are_shed_and_counted() -> None:
    clock = Clock()
    limit = AdaptiveLimit(PARAMS, clock)
    assert [limit.try_acquire() for _ in range(5)] == [True, True, True, False, False]
    assert limit.shed == 2 and limit.in_flight == 3
    limit.release(None)  # not a sample
    assert limit.try_acquire()


def test_a_new_min_rtt_window_pins_the_limit_then_resumes_it() -> None:
    clock = Clock()
    limit = AdaptiveLimit(PARAMS, clock)
    run(limit, clock, 0.010, 5)
    for _ in range(3):
        run(limit, clock, 0.010, 11)
    learnt = limit.limit
    clock.now += 10.0  # the min-RTT interval has passed
    run(limit, clock, 0.010, 1)
    assert limit.limit == 3
    run(limit, clock, 0.020, 5)  # the service got slower: the floor moves up
    assert limit.min_rtt == pytest.approx(0.020)
    assert limit.limit >= learnt - 1


def test_admitted_sheds_with_503_and_samples_answers_and_timeouts_only() -> None:
    clock = Clock()
    limit = AdaptiveLimit(AdaptiveParams(min_limit=1, max_limit=1, min_rtt_requests=100), clock)
    with admitted(limit):
        with pytest.raises(ApiError) as shed:
            with admitted(limit):
                pass
    assert shed.value.status == 503 and shed.value.code == "overloaded"
    assert shed.value.headers == {"Retry-After": "1"}
    with pytest.raises(ApiError), admitted(limit):
        raise ApiError(504, "deadline_exceeded", "late")
    with pytest.raises(ApiError), admitted(limit):
        raise ApiError(400, "bad", "not a sample")
    assert len(limit._samples) == 2 and limit.in_flight == 0


def test_settings_turn_it_on_and_check_its_knobs() -> None:
    assert adaptive_limit(BridgeSettings()) is None  # off by default
    on = BridgeSettings.from_config(Config(extra={"bridge": {"adaptive_concurrency": True,
                                                             "adaptive_max_limit": 50}}))
    made = adaptive_limit(on)
    assert made is not None and made.params.max_limit == 50
    with pytest.raises(ConfigError, match="adaptive_max_limit"):
        BridgeSettings(adaptive_min_limit=10, adaptive_max_limit=5)
    with pytest.raises(ConfigError, match="adaptive_sample_interval must be positive"):
        BridgeSettings(adaptive_sample_interval=0)
