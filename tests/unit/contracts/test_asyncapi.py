"""The AsyncAPI document validates against the official AsyncAPI 3.0.0 JSON Schema.

tests/data/asyncapi-3.0.0.schema.json is ``schemas/3.0.0-without-$id.json`` of the npm
package ``@asyncapi/specs`` 6.11.1 (Apache-2.0, tests/data/asyncapi-specs-LICENSE).
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from amqprpc import Config
from amqprpc.contracts.asyncapi import build_asyncapi
from amqprpc.contracts.model import describe_offline
from tests.contract_services import Orders, Shipping

SCHEMA = Path(__file__).parents[2] / "data" / "asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


@pytest.fixture(scope="module")
def document() -> dict:
    config = Config(broker_url="amqp://user:secret@rabbit.example:5673/prod")
    return build_asyncapi([describe_offline(Orders), describe_offline(Shipping)], config)


def test_the_document_is_valid_asyncapi_3(validator, document):
    problems = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)]
    assert problems == []
    broken = json.loads(json.dumps(document))
    broken["operations"]["orders.create"]["action"] = "call"
    assert not validator.is_valid(broken)  # the check has teeth


def test_rpc_methods_are_request_reply_operations(document):
    assert document["servers"]["broker"] == {"host": "rabbit.example:5673", "protocol": "amqp",
                                             "protocolVersion": "0-9-1", "pathname": "/prod"}
    assert "secret" not in json.dumps(document)
    create = document["operations"]["orders.create"]
    assert create["action"] == "receive"
    assert create["reply"]["address"]["location"] == "$message.header#/reply_to"
    assert create["reply"]["messages"] == [{"$ref": "#/channels/orders.replies/messages/create"}]
    reply = document["channels"]["orders.replies"]["messages"]["create"]["payload"]["schema"]
    assert reply["properties"]["result"]["title"] == "Order"
    request = document["channels"]["orders.create"]
    assert request["bindings"]["amqp"]["exchange"]["name"] == "nameko-rpc"
    kwargs = request["messages"]["request"]["payload"]["schema"]["properties"]["kwargs"]
    assert kwargs["required"] == ["order"] and kwargs["properties"]["channel"]["enum"] == ["web", "shop"]
    queue = document["channels"]["rpc-orders"]
    assert queue["x-amqprpc-bindings"] == [{"exchange": "nameko-rpc", "routingKey": "orders.*"}]


def test_events_dispatched_and_handled(document):
    shipped = document["channels"]["shipping.events.shipped"]
    assert shipped["address"] == "shipped"
    assert shipped["bindings"]["amqp"]["exchange"]["name"] == "shipping.events"
    assert shipped["messages"]["event"]["payload"]["schema"]["title"] == "Shipped"
    assert document["operations"]["shipping.dispatch.shipped"]["action"] == "send"
    handled = document["channels"]["shipping.on_order.handles.orders.order_created"]
    assert handled["address"] == "evt-orders-order_created--shipping.on_order"
    assert handled["messages"]["event"]["payload"]["schema"]["title"] == "Order"
    assert handled["x-amqprpc-bindings"] == [{"exchange": "orders.events", "routingKey": "order_created"}]
