"""Service descriptors and the registry, without a broker (the registry is fed by hand)."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import os
import typing
import uuid
from typing import Any, Literal, TypedDict

import pytest

from amqprpc import Config, ConfigError, ServiceContainer, ServiceRegistry, rpc
from amqprpc.discovery import DescriptorError, build_descriptor, parse_descriptor, parse_http_binding
from amqprpc.discovery.schema import schema_of


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(TypedDict):
    street: str
    number: int


@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0


@pytest.mark.parametrize(("hint", "schema"), [
    (int, {"type": "integer"}),
    (float, {"type": "number"}),
    (bool, {"type": "boolean"}),
    (str | None, {"anyOf": [{"type": "string"}, {"type": "null"}]}),
    (typing.Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),  # noqa: UP045
    (list[str], {"type": "array", "items": {"type": "string"}}),
    (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
    (dict, {"type": "object"}),
    (tuple[int, str], {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}],
                       "minItems": 2, "maxItems": 2}),
    (Literal["a", "b"], {"enum": ["a", "b"]}),
    (Color, {"enum": ["red", "blue"]}),
    (datetime.datetime, {"type": "string", "format": "date-time"}),
    (uuid.UUID, {"type": "string", "format": "uuid"}),
    (Any, {}),
    (object, {}),
    (int | Any, {}),
    (Address, {"type": "object", "title": "Address", "required": ["number", "street"],
               "properties": {"street": {"type": "string"}, "number": {"type": "integer"}}}),
    (Point, {"type": "object", "title": "Point", "required": ["x"],
             "properties": {"x": {"type": "number"}, "y": {"type": "number"}}}),
])
def test_schema_of(hint, schema):
    assert schema_of(hint) == schema


def test_http_bindings():
    assert str(parse_http_binding("get /users/{user_id}", "users", "get")) == "GET /users/{user_id}"
    assert str(parse_http_binding(True, "users", "create")) == "POST /rpc/users/create"
    assert parse_http_binding(None, "users", "x") is None
    for bad in ("FETCH /x", "GET users", "GET /a//b", "GET /a/{b", "GET /{a}/{a}", 42):
        with pytest.raises(ConfigError):
            parse_http_binding(bad, "users", "x")


_NOT_JSON = object()


class Users:
    name = "users"
    version = "1.4.2"
    http_errors = {KeyError: 404, "Conflict": 409}

    @rpc(http="GET /users/{user_id}", roles=["reader"])
    def get(self, user_id: int, fields: list[str] | None = None) -> dict[str, Any]:
        """Fetch a user.

        More words.
        """
        return {}

    @rpc(http="POST /users", public=True, expected_exceptions=ValueError)
    def create(self, name: str, **extra: Any) -> int:
        return 1

    @rpc
    def hidden(self, x, /, y=_NOT_JSON):  # no hints on purpose
        return None


def descriptor(cls: type = Users, **changes: Any) -> dict[str, Any]:
    container = ServiceContainer(cls, Config())
    data = build_descriptor(container, event="up", instance=uuid.uuid4().hex, host="h", pid=os.getpid(),
                            started_at=100.0, sent_at=100.0, interval=1.0, amqprpc_version="x")
    data.update(changes)
    return data


def test_descriptor_round_trip():
    parsed = parse_descriptor(descriptor())
    assert (parsed.service, parsed.version, parsed.errors) == ("users", "1.4.2", {"KeyError": 404,
                                                                                 "Conflict": 409})
    methods = {m.name: m for m in parsed.methods}
    get, create, hidden = methods["get"], methods["create"], methods["hidden"]
    assert str(get.http) == "GET /users/{user_id}" and get.roles == ("reader",) and not get.public
    assert get.doc == "Fetch a user.\n\nMore words."
    assert [(p.name, p.schema, p.required) for p in get.params] == [
        ("user_id", {"type": "integer"}, True),
        ("fields", {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]}, False),
    ]
    assert get.returns == {"type": "object"}
    assert create.public and create.variadic_keywords and create.expected == ("ValueError",)
    assert hidden.http is None and hidden.params[0].positional_only
    assert not hidden.params[1].has_default  # object() is no JSON value


@pytest.mark.parametrize("change", [
    {"protocol": 2}, {"event": "maybe"}, {"service": "bad name"}, {"pid": "1"}, {"interval": 0},
    {"methods": [{"name": "x", "http": {"method": "GET", "path": "nope"}}]},
    {"methods": [{"name": "__init__"}]}, {"errors": {"X": 200}}, {"methods": "all"},
])
def test_malformed_descriptors_are_refused(change):
    with pytest.raises(DescriptorError):
        parse_descriptor(descriptor(**change))


def test_bad_http_binding_fails_at_container_start():
    class Broken:
        name = "broken"

        @rpc(http="GET /things/{thing_id}")
        def get(self, other: int) -> None: ...

    with pytest.raises(ConfigError, match="thing_id"):
        build_descriptor(ServiceContainer(Broken, Config()), event="up", instance="i", host="h", pid=1,
                         started_at=0, sent_at=0, interval=1, amqprpc_version=None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_registry_liveness_expiry_and_down():
    clock = Clock()
    registry = ServiceRegistry(Config(), clock=clock, forget_after=60)
    changes: list[int] = []
    registry.add_listener(lambda r: changes.append(r.generation))
    first = descriptor(instance="a")
    registry.ingest(first)
    assert registry.is_live("users") and registry.generation == 1 and changes
    clock.now += 3.0
    registry.ingest({**first, "event": "alive"})  # heartbeat within 3.5 intervals
    clock.now += 3.4
    assert registry.is_live("users")
    clock.now += 0.2
    assert not registry.is_live("users")  # missed ~3 heartbeats
    view = registry.service("users")
    assert view is not None and not view.instances and view.method("get") is not None  # still known
    registry.sweep()
    clock.now += 61
    registry.sweep()
    assert registry.service("users") is None and registry.generation == 2  # forgotten

    registry.ingest(descriptor(instance="b"))
    registry.ingest(descriptor(instance="b", event="down"))
    assert not registry.is_live("users")
    registry.ingest(descriptor(instance="b", event="alive"))  # late heartbeat cannot revive it
    assert not registry.is_live("users")


def test_registry_newest_instance_defines_the_methods():
    class UsersV2(Users):
        version = "2.0"

        @rpc(http="DELETE /users/{user_id}")
        def delete(self, user_id: int) -> None: ...

    registry = ServiceRegistry(Config())
    registry.ingest(descriptor(instance="old", started_at=1.0))
    generation = registry.generation
    registry.ingest(descriptor(UsersV2, instance="new", started_at=2.0))
    view = registry.service("users")
    assert view is not None
    assert view.version == "2.0" and view.method("delete") is not None and len(view.instances) == 2
    assert registry.generation == generation + 1
    registry.ingest(descriptor(UsersV2, instance="new", started_at=2.0, event="down"))
    view = registry.service("users")
    assert view is not None and view.version == "1.4.2" and view.method("delete") is None
    assert registry.wait_for(lambda r: r.is_live("users"), timeout=0.1)
    assert not registry.wait_for(lambda r: r.is_live("ghost"), timeout=0.05)


def test_a_service_with_mqtt_topic_handlers_still_announces_itself():
    # A topic filter ("sensors.*.temperature" on amq.topic) is no event name: the descriptor
    # lists it nowhere in `events`, and the registry must accept the announcement.
    from services.telemetry import TelemetryService

    parsed = parse_descriptor(descriptor(TelemetryService))
    assert parsed.service == TelemetryService.name
    assert all(row["source"] != "amq.topic" for row in parsed.events["handles"])
