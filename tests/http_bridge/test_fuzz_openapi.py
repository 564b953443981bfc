"""G13: the bridge fuzzed from its own OpenAPI with schemathesis, bounded in examples (< 60 s).

The bridge runs in-process on a loopback port (its own event loop on a thread), wired to a
fake RPC client that answers what each method's type hints promise. Every operation gets
schema-conforming and non-conforming requests; no answer may be a 5xx but 503/504 (none
here: the fake is always up and fast), and every answer must match the spec (status
declared, content type, body schema).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amqprpc import rpc

from .support import FakeRpc, descriptor_of, make_app

schemathesis = pytest.importorskip("schemathesis")


class Catalog:
    name = "catalog"

    @rpc(http="GET /items/{item_id}", public=True)
    def get(self, item_id: int, verbose: bool = False, fields: list[str] | None = None) -> dict[str, Any]:
        """One item."""
        return {}

    @rpc(http="POST /items", public=True)
    def create(self, name: str, price: float, tags: list[str] | None = None,
               extra: dict[str, int] | None = None) -> int:
        """A new item; its id."""
        return 0

    @rpc(http="GET /search", public=True)
    def search(self, q: str, limit: int = 10, ratio: float | None = None) -> list[str]:
        return []

    @rpc(http="PUT /items/{item_id}/stock", public=True)
    def restock(self, item_id: int, count: int, note: str | None = None) -> bool:
        return True


ANSWERS = {"get": {"id": 1}, "create": 7, "search": ["a", "b"], "restock": True}


async def answer(service: str, method: str, kwargs: dict[str, Any], context: Any) -> Any:
    return ANSWERS[method]


class BridgeThread:
    """The bridge on its own loop and thread; ``url`` once it listens."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.url = ""
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="bridge-under-fuzz", daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = TestServer(self.app)
        await server.start_server()
        self.url = str(server.make_url("")).rstrip("/")
        self._ready.set()
        await self._stop.wait()
        await server.close()

    def __enter__(self) -> BridgeThread:
        self._thread.start()
        assert self._ready.wait(10), "the bridge did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def bridge() -> Iterator[BridgeThread]:
    from amqprpc import Config, ServiceRegistry

    registry = ServiceRegistry(Config())
    registry.ingest(descriptor_of(Catalog, interval=3600))  # live for the whole module
    app = make_app(registry, FakeRpc(answer), allow_anonymous=True, rate_limit=0)
    with BridgeThread(app) as running:
        yield running


def operations(bridge: BridgeThread) -> list[Any]:
    spec = requests.get(f"{bridge.url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec)
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) == 4, [op.label for op in found]
    return found


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_g13_every_operation_answers_within_its_spec(bridge: BridgeThread, mode: str) -> None:
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    strategy = st.one_of([op.as_strategy(generation_mode=generation) for op in operations(bridge)])
    session = requests.Session()
    seen: dict[int, int] = {}

    @settings(max_examples=150, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case: Any) -> None:
        response = case.call(base_url=bridge.url, session=session, timeout=10)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500 or response.status_code in (503, 504), (
            response.status_code, response.text[:500], case.as_curl_command())
        case.validate_response(response, excluded_checks=[not_a_server_error])  # 503/504 allowed

    check()
    if mode == "positive":
        assert seen.get(200), seen  # conforming requests reach the service
    else:
        assert any(400 <= status < 500 for status in seen), seen
