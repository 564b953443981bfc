"""Fixtures the event suites share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from amqprpc import EventPublisher
from amqprpc.testing.pytest import broker_admin

from .worker_processes import workers  # noqa: F401  (the fixture, for every module here)


@pytest.fixture
def source(unique_name, amqp_uri) -> Iterator[str]:
    """A unique event source; its exchange is deleted after the test."""
    name = unique_name("src")
    yield name
    with broker_admin(amqp_uri) as channel:
        channel.exchange_delete(f"{name}.events")


@pytest.fixture
def publisher(amqp_uri) -> Iterator[EventPublisher]:
    with EventPublisher(amqp_uri) as events:
        yield events
