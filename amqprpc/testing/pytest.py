"""pytest fixtures for amqprpc services; enable with ``pytest_plugins = ["amqprpc.testing.pytest"]``.

* ``amqp_uri``: the broker to test against (``--amqp-uri``, else ``$AMQPRPC_TEST_BROKER_URL``,
  else the local default). When it cannot be reached, tests fail with a clear message.
* ``unique_name``: a name no other test (or earlier run) uses, for services and queues.
* ``container_factory(ServiceClass, **config)``: a started container; stopped, and its
  queues deleted, after the test.
* ``rpc_client``: a connected ``ClusterRpcClient``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import amqp
import pytest

from ..client import ClusterRpcClient
from ..config import Config
from ..containers import ServiceContainer
from ..transport import BrokerAddress

DEFAULT_TEST_BROKER = "amqp://guest:guest@127.0.0.1:5672/"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--amqp-uri", default=None, help="Broker URL for integration tests.")


@pytest.fixture(scope="session")
def amqp_uri(request: pytest.FixtureRequest) -> str:
    uri: str = (
        request.config.getoption("--amqp-uri")
        or os.environ.get("AMQPRPC_TEST_BROKER_URL")
        or DEFAULT_TEST_BROKER
    )
    try:
        with broker_admin(uri):
            pass
    except Exception as exc:
        pytest.fail(f"no RabbitMQ at {uri} ({exc}); start one (`rabbitmq-server -detached`) "
                    "or pass --amqp-uri", pytrace=False)
    return uri


class broker_admin:
    """A short-lived raw connection for test set-up and clean-up (delete queues, publish raw)."""

    def __init__(self, uri: str) -> None:
        address = BrokerAddress.from_url(uri)
        self.connection = amqp.Connection(
            host=f"{address.host}:{address.port}", userid=address.userid,
            password=address.password, virtual_host=address.virtual_host, connect_timeout=5,
        )

    def __enter__(self) -> amqp.Channel:
        self.connection.connect()
        self.channel = self.connection.channel()
        return self.channel

    def __exit__(self, *exc: Any) -> None:
        self.connection.close()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    def make(prefix: str = "svc") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


def with_name(service_cls: type, name: str) -> type:
    """A subclass of ``service_cls`` with another ``name`` (isolates tests on one broker)."""
    return type(service_cls.__name__, (service_cls,), {"name": name, "__module__": service_cls.__module__})


@pytest.fixture
def container_factory(amqp_uri: str) -> Iterator[Callable[..., ServiceContainer]]:
    containers: list[ServiceContainer] = []

    def make(service_cls: type, config: Config | None = None, **settings: Any) -> ServiceContainer:
        config = (config or Config(broker_url=amqp_uri)).replace(**settings)
        container = ServiceContainer(service_cls, config)
        container.start()
        containers.append(container)
        return container

    yield make
    for container in containers:
        container.stop(grace=5)
    with broker_admin(amqp_uri) as channel:
        for container in containers:
            channel.queue_delete(f"rpc-{container.service_name}")


@pytest.fixture
def rpc_client(amqp_uri: str) -> Iterator[ClusterRpcClient]:
    with ClusterRpcClient(amqp_uri, timeout=10) as client:
        yield client
