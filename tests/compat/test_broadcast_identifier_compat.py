"""Reliable BROADCAST with a custom identifier, between Nameko 2.14.1 and amqprpc.

apps/nameko_broadcast.py overrides ``EventHandler.broadcast_identifier`` as Nameko documents;
the amqprpc build of the same service passes ``broadcast_identifier=``. With the same id,
both declare the same queue (either may declare first: no PRECONDITION_FAILED) and compete
for its events; either may take over what the other left queued while it was down.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from amqprpc import (
    BROADCAST,
    CallContext,
    ClusterRpcClient,
    Config,
    EventPublisher,
    ServiceContainer,
    event_handler,
)
from amqprpc.testing.broker import broker_admin, delete_queues, queues_declared_by

from .conftest import APPS, NamekoProcess, _stop, _wait_ready

pytestmark = [pytest.mark.compat, pytest.mark.integration]

WAIT = 15.0


class Seen:
    """Payloads the amqprpc instances handled, tagged with the instance's identifier."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, identifier: str, payload: Any) -> None:
        with self._lock:
            self.items.append((identifier, payload))

    def of(self, identifier: str) -> list[Any]:
        with self._lock:
            return [payload for ident, payload in self.items if ident == identifier]


class Setting:
    """One test's names: the service (the same in both frameworks) and the event source."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.service = f"bc-{tag}"
        self.source = f"bcsrc-{tag}"

    def queue(self, identifier: str) -> str:
        return f"evt-{self.source}-invalidate--{self.service}.drop-{identifier}"


@pytest.fixture
def setting(amqp_uri: str) -> Iterator[Setting]:
    setting = Setting()
    yield setting
    with broker_admin(amqp_uri) as channel:
        channel.exchange_delete(f"{setting.source}.events")


@pytest.fixture
def start_nameko(nameko_python: Path, amqp_uri: str, setting: Setting,
                 tmp_path: Path) -> Iterator[Callable[[str], NamekoProcess]]:
    """Start apps/nameko_broadcast.py as the instance ``identifier``; killed after the test."""
    started: list[NamekoProcess] = []

    def start(identifier: str) -> NamekoProcess:
        log = tmp_path / f"nameko-{len(started)}.log"
        env = {**os.environ, "AMQP_URI": amqp_uri, "NAMEKO_SERVICE": setting.service,
               "EVENT_SOURCE": setting.source, "BROADCAST_ID": identifier,
               "PYTHONUNBUFFERED": "1"}
        with log.open("w") as sink:
            process = subprocess.Popen([str(nameko_python), str(APPS / "nameko_broadcast.py")],
                                       stdout=sink, stderr=subprocess.STDOUT, env=env, text=True)
        service = NamekoProcess(process, log)
        started.append(service)
        _wait_ready(service)  # fails, with its log, if Nameko's declaration was refused
        return service

    try:
        yield start
    finally:
        for service in started:
            _stop(service.process)
        delete_queues(amqp_uri, [f"rpc-{setting.service}"])


@pytest.fixture
def start_amqprpc(amqp_uri: str, setting: Setting) -> Iterator[Callable[[str, Seen], ServiceContainer]]:
    """Start the amqprpc build of the service as the instance ``identifier``."""
    containers: list[ServiceContainer] = []

    def start(identifier: str, seen: Seen) -> ServiceContainer:
        class AmqprpcBroadcast:
            name = setting.service
            ctx = CallContext()

            @event_handler(setting.source, "invalidate", handler_type=BROADCAST,
                           broadcast_identifier=identifier)
            def drop(self, payload: Any) -> None:
                seen.add(identifier, payload)

        container = ServiceContainer(AmqprpcBroadcast, Config(broker_url=amqp_uri))
        containers.append(container)
        container.start()
        return container

    try:
        yield start
    finally:
        for container in containers:
            if container.running:
                container.stop(grace=5)
        delete_queues(amqp_uri, {q for c in containers for q in queues_declared_by(c)}
                      - {f"rpc-{setting.service}"})


def dispatch(amqp_uri: str, source: str, payloads: list[Any]) -> None:
    with EventPublisher(amqp_uri) as events:
        for payload in payloads:
            events.dispatch(source, "invalidate", payload)


def nameko_received(amqp_uri: str, service: str) -> list[Any]:
    with ClusterRpcClient(amqp_uri, direct_reply_to=False, timeout=10) as client:
        received: list[Any] = client.call(service, "received")
    return received


def queue_depth(amqp_uri: str, queue: str) -> int:
    with broker_admin(amqp_uri) as channel:
        return int(channel.queue_declare(queue, passive=True).message_count)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT}s waiting for {what}")
        time.sleep(0.05)  # state in another process and on the broker: poll, with a deadline


def test_nameko_and_amqprpc_instances_share_one_identifiers_queue(
        amqp_uri, setting, start_nameko, start_amqprpc):
    seen = Seen()
    start_nameko("web-1")  # Nameko declares evt-...-web-1 first
    shared = start_amqprpc("web-1", seen)  # the same declaration: no PRECONDITION_FAILED
    start_amqprpc("web-2", seen)  # another instance: a queue of its own
    assert shared.entrypoints[0].queue_name == setting.queue("web-1")

    dispatch(amqp_uri, setting.source, list(range(20)))
    wait_for(lambda: len(seen.of("web-2")) == 20, "web-2 to get every event")
    wait_for(lambda: len(seen.of("web-1")) + len(nameko_received(amqp_uri, setting.service)) >= 20,
             "web-1's events, between Nameko and amqprpc")
    wait_for(lambda: queue_depth(amqp_uri, setting.queue("web-1")) == 0, "web-1's queue drained")
    by_nameko = nameko_received(amqp_uri, setting.service)
    by_amqprpc = seen.of("web-1")
    assert sorted(by_nameko + by_amqprpc) == list(range(20))  # each event once for web-1
    assert by_nameko and by_amqprpc  # they compete for it (round robin)
    assert sorted(seen.of("web-2")) == list(range(20))


def test_nameko_takes_over_what_an_amqprpc_instance_left_queued(
        amqp_uri, setting, start_nameko, start_amqprpc):
    """The amqprpc instance declares first and stops; events wait for ``web-1``, and the
    Nameko build of ``web-1`` declares over the queue and gets them."""
    seen = Seen()
    start_amqprpc("web-1", seen).stop(grace=5)
    dispatch(amqp_uri, setting.source, ["a", "b", "c"])
    assert queue_depth(amqp_uri, setting.queue("web-1")) == 3
    start_nameko("web-1")
    wait_for(lambda: sorted(nameko_received(amqp_uri, setting.service)) == ["a", "b", "c"],
             "Nameko to handle the queued events")
    assert seen.items == []
