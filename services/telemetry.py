"""telemetry: temperature readings from MQTT sensors, and a live alert over a threshold.

The flow (docs/realtime.md)::

    sensor --MQTT--> sensors/<id>/temperature --(amq.topic)--> telemetry.record
    telemetry.record: keep the reading; over the threshold, dispatch ``alert``
    bridge /ws: clients subscribed to ``telemetry.alert`` see it at once (/realtime/ shows it)

A reading is a JSON number (``21.5``) or an object ``{"celsius": 21.5}``. Readings are kept
in memory, the last ``KEEP`` per sensor and at most ``MAX_SENSORS`` sensors per process (the
oldest sensor is forgotten first): this is a demo of the edge, not a time-series store.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from typing import Any

from amqprpc import DependencyProvider, EventDispatcher, WorkerContext, rpc, topic_handler

_log = logging.getLogger(__name__)

THRESHOLD = 30.0  # degrees Celsius: a reading above it raises an alert
KEEP = 100
MAX_SENSORS = 1000


class BadReading(ValueError):
    """The payload is not a temperature (the reading is dead-lettered, not retried for ever)."""


class Readings(DependencyProvider):
    """The container's in-memory store: bounded per sensor and in sensors, shared by its workers."""

    def setup(self) -> None:
        self._lock = threading.Lock()
        self._by_sensor: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()

    def get_dependency(self, worker_ctx: WorkerContext) -> Readings:
        return self

    def add(self, sensor: str, celsius: float) -> dict[str, Any]:
        reading = {"sensor": sensor, "celsius": celsius, "at": time.time()}
        with self._lock:
            kept = self._by_sensor.pop(sensor, None) or deque(maxlen=KEEP)
            kept.append(reading)
            self._by_sensor[sensor] = kept  # most recent last
            while len(self._by_sensor) > MAX_SENSORS:
                self._by_sensor.popitem(last=False)
        return reading

    def latest(self, sensor: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._by_sensor.get(sensor, ()))


def celsius_of(payload: Any) -> float:
    value = payload.get("celsius") if isinstance(payload, dict) else payload
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadReading(f"a reading is a number or {{\"celsius\": <number>}}, got {payload!r:.100}")
    return float(value)


class TelemetryService:
    name = "telemetry"
    ws_events = {"alert": []}  # any authenticated WebSocket client of the bridge may subscribe
    readings = Readings()
    dispatch = EventDispatcher()

    @topic_handler("sensors/+/temperature", max_attempts=2, retry_delay=0.5,
                   expected_exceptions=BadReading)
    def record(self, topic: str, payload: Any) -> None:
        """One reading from ``sensors/<id>/temperature``."""
        sensor = topic.split("/")[1]
        reading = self.readings.add(sensor, celsius_of(payload))
        if reading["celsius"] > THRESHOLD:
            self.dispatch("alert", {**reading, "threshold": THRESHOLD})

    @rpc(http="GET /telemetry/{sensor}")
    def latest(self, sensor: str) -> list[dict[str, Any]]:
        """The last readings of one sensor kept by this instance, oldest first."""
        return self.readings.latest(sensor)
