"""pytest fixtures for amqprpc services; enable with ``pytest_plugins = ["amqprpc.testing.pytest"]``.

* ``amqp_uri`` (session): the broker to test against: ``--amqp-uri``, else
  ``$AMQPRPC_TEST_BROKER_URL``, else the local default. When it cannot be reached, every
  test that needs it fails with one clear message instead of a connection traceback.
* ``broker_uri``: the URL this test's containers and clients use. It is ``amqp_uri``;
  override it with ``amqp_vhost_uri`` (below) to give every test a vhost of its own.
* ``amqp_vhost_uri``: a fresh vhost for this test, deleted afterwards (needs ``rabbitmqctl``;
  about 2.4 s a test, so opt-in; see docs/testing.md).
* ``unique_name(prefix)``: a name no other test (or earlier run) uses, for services.
* ``container_factory(Service, config=None, *, start=True, **settings)``: a container
  (started unless ``start=False``, for ``replace_dependencies``/``restrict_entrypoints``);
  stopped, and its queues deleted, after the test.
* ``runner_factory(*services, config=None, *, start=True, **settings)``: the same for a
  ``ServiceRunner`` with several services.
* ``rpc_client``: a connected ``ClusterRpcClient``.

The plain helpers (``worker_factory``, ``entrypoint_hook``, ``entrypoint_waiter``, ...) live
in ``amqprpc.testing.services`` and import nothing of pytest.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..client import ClusterRpcClient
from ..config import Config
from ..containers import ServiceContainer
from ..exceptions import BrokerUnreachable
from ..runner import ServiceRunner, service_container
from .broker import TemporaryVhost, broker_admin, check_broker, delete_queues, queues_declared_by
from .services import with_name

__all__ = ["broker_admin", "with_name"]  # re-exported: tests import them from here

DEFAULT_TEST_BROKER = "amqp://guest:guest@127.0.0.1:5672/"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--amqp-uri", default=None,
                     help="Broker URL for integration tests (default $AMQPRPC_TEST_BROKER_URL, "
                          f"else {DEFAULT_TEST_BROKER}).")


@pytest.fixture(scope="session")
def amqp_uri(request: pytest.FixtureRequest) -> str:
    uri: str = (
        request.config.getoption("--amqp-uri")
        or os.environ.get("AMQPRPC_TEST_BROKER_URL")
        or DEFAULT_TEST_BROKER
    )
    try:
        check_broker(uri)
    except BrokerUnreachable as exc:
        problem = str(exc)
    else:
        return uri
    pytest.fail(problem, pytrace=False)  # outside `except`: no chained traceback in the report


@pytest.fixture
def amqp_vhost_uri(amqp_uri: str) -> Iterator[str]:
    vhost = TemporaryVhost(amqp_uri)
    try:
        uri = vhost.__enter__()
    except RuntimeError as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:
        pytest.fail(f"cannot create a vhost for this test: {problem}", pytrace=False)
    try:
        yield uri
    finally:
        vhost.__exit__()


@pytest.fixture
def broker_uri(amqp_uri: str) -> str:
    return amqp_uri


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    def make(prefix: str = "svc") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


def _config(broker_uri: str, config: Config | None, settings: dict[str, Any]) -> Config:
    return (config or Config(broker_url=broker_uri)).replace(**settings)


@pytest.fixture
def container_factory(broker_uri: str) -> Iterator[Callable[..., ServiceContainer]]:
    containers: list[ServiceContainer] = []

    def make(service_cls: type, config: Config | None = None, *, start: bool = True,
             **settings: Any) -> ServiceContainer:
        container = service_container(service_cls, _config(broker_uri, config, settings))
        containers.append(container)
        if start:
            container.start()
        return container

    yield make
    _tear_down(containers)


@pytest.fixture
def runner_factory(broker_uri: str) -> Iterator[Callable[..., ServiceRunner]]:
    runners: list[ServiceRunner] = []

    def make(*service_classes: type, config: Config | None = None, start: bool = True,
             **settings: Any) -> ServiceRunner:
        runner = ServiceRunner(_config(broker_uri, config, settings))
        for service_cls in service_classes:
            runner.add_service(service_cls)
        runners.append(runner)
        if start:
            runner.start()
        return runner

    yield make
    _tear_down([c for runner in runners for c in runner.containers])


def _tear_down(containers: list[ServiceContainer]) -> None:
    """Stop what runs, then delete the queues the containers declared, on their brokers."""
    for container in containers:
        if container.running:
            container.stop(grace=5)
    queues: dict[str, set[str]] = {}
    for container in containers:
        queues.setdefault(container.config.broker_url, set()).update(queues_declared_by(container))
    for uri, names in queues.items():
        delete_queues(uri, names)


@pytest.fixture
def rpc_client(broker_uri: str) -> Iterator[ClusterRpcClient]:
    with ClusterRpcClient(broker_uri, timeout=10) as client:
        yield client
