"""A health port that cannot be served is a clear ConfigError, not a traceback."""

import socket

import pytest

from amqprpc import Config, ConfigError
from amqprpc.health import HealthServer
from amqprpc.runner import ServiceRunner


def test_a_taken_health_port_names_host_and_port(request: pytest.FixtureRequest) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HealthServer(ServiceRunner(Config(broker_url=f"memory://{request.node.name}")), port)
        with pytest.raises(ConfigError, match=f"cannot serve health endpoints on .*:{port}"):
            server.start()
