"""`amqprpc run` as a real process for the integration tests, and waiting for it to serve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from amqprpc import ClusterRpcClient
from amqprpc.testing.pytest import broker_admin

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """One `amqprpc run` process serving the echo app under a test's own service name."""

    def __init__(self, service: str, amqp_uri: str, log_path: Path, *extra: str) -> None:
        env = {**os.environ, "ECHO_SERVICE_NAME": service, "PYTHONPATH": str(ROOT)}
        self.log_path = log_path
        with log_path.open("w") as log:  # a file, not a pipe: a full pipe would block the worker
            self.process = subprocess.Popen(
                [sys.executable, "-m", "amqprpc.cli", "run", "tests.integration.apps.echo",
                 "--broker", amqp_uri, "--log-level", "WARNING", *extra],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def output(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def workers(amqp_uri: str, unique_name, tmp_path_factory) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []
    service = unique_name("echo")

    def start(*extra: str) -> Worker:
        log_path = tmp_path_factory.mktemp("worker") / "worker.log"
        worker = Worker(service, amqp_uri, log_path, *extra)
        started.append(worker)
        return worker

    start.service = service  # type: ignore[attr-defined]
    yield start
    for worker in started:
        worker.stop(signal.SIGKILL)
    with broker_admin(amqp_uri) as channel:
        channel.queue_delete(f"rpc-{service}")


def call_when_ready(client: ClusterRpcClient, service: str, method: str, *args: object) -> object:
    """Call once the worker has declared its queue (UnknownService until then)."""
    from amqprpc import UnknownService

    deadline = time.monotonic() + 20
    while True:
        try:
            return client.call(service, method, *args, _timeout=10)
        except UnknownService:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
