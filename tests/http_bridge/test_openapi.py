"""The OpenAPI spec: every error a route can answer, and services gone for long left out."""

from __future__ import annotations

from amqprpc import Config, ServiceRegistry, rpc
from http_bridge.openapi import build_openapi, listed_by
from http_bridge.routing import RouteTable

from .support import descriptor_of


class InvalidUser(Exception):
    pass


class Conflict(Exception):
    pass


class Accounts:
    name = "accounts"
    http_errors = {InvalidUser: 422}

    @rpc(http="POST /accounts", roles=["admin"], expected_exceptions=Conflict)
    def create(self, name: str) -> None:
        """Open an account."""

    @rpc(http="GET /accounts/{account_id}", public=True)
    def get(self, account_id: int) -> None:
        """One account."""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec_of(registry: ServiceRegistry, **kwargs):
    table = RouteTable.build(registry.services(), generation=registry.generation)
    return build_openapi(table, **kwargs)


def test_each_route_lists_the_errors_it_can_answer_with_their_codes():
    registry = ServiceRegistry(Config())
    registry.ingest(descriptor_of(Accounts))
    paths = spec_of(registry, expected_status=409)["paths"]
    create = paths["/accounts"]["post"]["responses"]
    assert {"400", "401", "403", "404", "409", "413", "415", "422", "429", "503", "504"} <= set(create)
    assert "invalid_user" in create["422"]["x-amqprpc-codes"]
    assert "validation_error" in create["422"]["x-amqprpc-codes"]
    assert "conflict" in create["409"]["x-amqprpc-codes"]  # expected_exceptions -> expected_status
    assert "`invalid_user`: the service raised InvalidUser" in create["422"]["description"]
    get = paths["/accounts/{account_id}"]["get"]["responses"]
    assert not {"401", "403", "413", "415"} & set(get)  # public, and no body
    assert get["422"]["x-amqprpc-codes"] == ["validation_error", "idempotency_key_reused", "invalid_user"]


def test_services_gone_longer_than_the_window_are_left_out():
    clock = Clock()
    registry = ServiceRegistry(Config(discovery_hide_after=60), clock=clock)
    registry.ingest(descriptor_of(Accounts, instance="one"))
    registry.ingest(descriptor_of(Accounts, instance="one", event="down"))
    clock.now += 30
    assert spec_of(registry, listed=listed_by(registry))["paths"]
    clock.now += 31
    assert registry.service("accounts").down_for == 61
    assert spec_of(registry, listed=listed_by(registry))["paths"] == {}
    assert spec_of(registry, listed=listed_by(registry, hide_after=3600))["paths"]
    assert listed_by(None)("anything")
