"""The telemetry demo service with plain instances (``worker_factory``): readings and alerts."""

from __future__ import annotations

import pytest

from amqprpc.testing import worker_factory
from services.telemetry import KEEP, THRESHOLD, BadReading, Readings, TelemetryService


def readings() -> Readings:
    store = Readings()
    store.setup()
    return store


def test_a_hot_reading_is_kept_and_alerts() -> None:
    service = worker_factory(TelemetryService, readings=readings())
    service.record("sensors/hall/temperature", 21.0)
    service.dispatch.assert_not_called()
    service.record("sensors/hall/temperature", {"celsius": THRESHOLD + 5})
    (event_type, alert), _ = service.dispatch.call_args
    assert event_type == "alert"
    assert alert["sensor"] == "hall" and alert["celsius"] == THRESHOLD + 5 and alert["threshold"] == THRESHOLD
    assert [r["celsius"] for r in service.latest("hall")] == [21.0, THRESHOLD + 5]
    assert service.latest("cellar") == []


@pytest.mark.parametrize("payload", ["hot", {"celsius": "35"}, float("nan"), True, None, [35]])
def test_a_reading_that_is_not_a_temperature_is_refused(payload: object) -> None:
    service = worker_factory(TelemetryService, readings=readings())
    with pytest.raises(BadReading):
        service.record("sensors/hall/temperature", payload)


def test_the_store_is_bounded() -> None:
    store = readings()
    for n in range(KEEP + 10):
        store.add("s", float(n))
    assert len(store.latest("s")) == KEEP and store.latest("s")[0]["celsius"] == 10.0
