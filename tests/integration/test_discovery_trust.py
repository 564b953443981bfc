"""Signed announcements end to end (issue #19 item 1): real containers, a real registry.

A registry holding the deployment's key sees services that sign with it, and nothing else:
not a container signing with another key, not an unsigned message published by hand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import amqp
import pytest

from amqprpc import Config, ServiceRegistry, rpc
from amqprpc.testing.pytest import with_name

from ..waiting import wait_until

pytestmark = pytest.mark.integration

KEY = "a-deployment-key-of-32-characters"
INTERVAL = 0.2


class Ledger:
    name = "ledger"

    @rpc(http="GET /ledger/{entry_id}", roles=("auditor",))
    def get(self, entry_id: int) -> dict:
        return {}


@pytest.fixture
def registry_for(amqp_uri) -> Iterator:
    registries: list[ServiceRegistry] = []

    def make(**settings) -> ServiceRegistry:
        registry = ServiceRegistry(Config(broker_url=amqp_uri, discovery_interval=INTERVAL, **settings))
        registry.start()
        registries.append(registry)
        return registry

    yield make
    for registry in registries:
        registry.stop()


def test_only_announcements_signed_with_the_key_are_believed(container_factory, unique_name,
                                                             registry_for, caplog):
    trusted = registry_for(discovery_key=KEY)
    signed = with_name(Ledger, unique_name("ledger"))
    other_key = with_name(Ledger, unique_name("ledger"))
    container_factory(signed, discovery_interval=INTERVAL, discovery_key=KEY)
    container_factory(other_key, discovery_interval=INTERVAL, discovery_key="x" * 32)
    assert trusted.wait_for(lambda r: r.is_live(signed.name), timeout=10)
    # A forged, unsigned announcement that would make the method public goes nowhere.
    forged = ({"protocol": 1, "event": "up", "service": signed.name,
                                         "instance": "forged", "host": "h", "pid": 1, "version": None,
                                         "amqprpc": None, "started_at": time.time(),
                                         "sent_at": time.time(), "interval": INTERVAL, "errors": {},
                                         "methods": [{"name": "get", "public": True, "roles": [],
                                                      "http": {"method": "GET", "path": "/ledger/{entry_id}"},
                                                      "params": [{"name": "entry_id", "schema": {}}]}]})
    connection = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest")
    connection.connect()
    try:
        connection.channel().basic_publish(amqp.Message(json.dumps(forged), content_type="application/json"),
                                           exchange="amqprpc.discovery", routing_key=f"{signed.name}.up")
    finally:
        connection.close()
    wait_until(lambda: "unsigned announcement" in caplog.text, "the registry to refuse it", timeout=10)
    view = trusted.service(signed.name)
    assert view is not None and all(i.instance != "forged" for i in view.instances)
    method = view.method("get")
    assert method is not None and not method.public and method.roles == ("auditor",)
    assert trusted.service(other_key.name) is None  # signed with another key


def test_an_owner_is_the_broker_verified_user(container_factory, unique_name, registry_for):
    ledger = with_name(Ledger, unique_name("ledger"))
    owners = f"{ledger.name}=guest"
    registry = registry_for(discovery_owners=owners)
    wrong_owner = registry_for(discovery_owners=f"{ledger.name}=svc-ledger")
    container_factory(ledger, discovery_interval=INTERVAL, discovery_owners=owners)
    assert registry.wait_for(lambda r: r.is_live(ledger.name), timeout=10)
    assert not wrong_owner.wait_for(lambda r: r.is_live(ledger.name), timeout=1)
