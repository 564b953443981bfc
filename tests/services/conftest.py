"""Unit tests of the demo services: plain instances (``worker_factory``), real SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from amqprpc.dependencies.sqlalchemy import WorkerSession, processed_requests


@pytest.fixture
def sql_session() -> Iterator[Callable[..., WorkerSession]]:
    """``make(Base, service, method, request_id)``: a session on one in-memory SQLite database,
    as the ``Database`` dependency would inject it for that call."""
    engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    processed_requests.create(engine)
    sessions: list[WorkerSession] = []

    def make(base: Any, service: str, method: str, request_id: str = "r-1") -> WorkerSession:
        base.metadata.create_all(engine)
        session = WorkerSession(engine, expire_on_commit=False)
        session.worker_ctx = SimpleNamespace(  # type: ignore[assignment]
            service_name=service, method_name=method, request_id=request_id)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.close()
    engine.dispose()
