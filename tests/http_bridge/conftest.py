"""Fixtures of the bridge tests (helpers live in support.py)."""

from __future__ import annotations

import pytest

from amqprpc import Config, ServiceRegistry


@pytest.fixture
def fed_registry() -> ServiceRegistry:
    """A registry that is never started: tests feed it with ``ingest``."""
    return ServiceRegistry(Config())
