"""Validation on the worker, on the in-memory broker: who gets a contract, what the handler
sees, what the caller gets back, and that plain services stay as they were."""

from __future__ import annotations

import datetime
import decimal
import logging
import sys
import uuid
from typing import Any

import pytest

from amqprpc import DecodeLimits, IncorrectSignature, ValidationError, rpc
from amqprpc.contracts.validation import field_path, method_contract, needs_contract
from amqprpc.discovery import schema_of
from amqprpc.exceptions import deserialize_error, serialize_error
from amqprpc.serialization import JSON, MSGPACK, codec_for
from tests.contract_services import Colour, Item, Order, Orders, Receipt, Window, sample_order


@pytest.mark.parametrize("hint", [Order, list[Item], dict[str, Colour], Receipt, Window, datetime.datetime,
                                  uuid.UUID, decimal.Decimal, Order | None, tuple[int, datetime.date]])
def test_contract_types_need_validation(hint):
    assert needs_contract(hint)


@pytest.mark.parametrize("hint", [int, str, list[int], dict[str, Any], Any, None, int | None, bytes])
def test_plain_hints_do_not(hint):
    assert not needs_contract(hint)


def test_plain_methods_get_no_contract_and_typed_ones_do():
    assert method_contract(Orders.add, "orders.add") is None
    assert method_contract(Orders.create, "orders.create") is not None


def test_without_pydantic_nothing_is_validated(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydantic", None)  # import pydantic now raises ImportError
    assert method_contract(Orders.create, "orders.create") is None


class Odd:
    """A type pydantic has no schema for."""


def test_a_hint_pydantic_refuses_is_left_unchecked_with_a_warning(caplog):
    class Svc:
        @rpc
        def f(self, when: datetime.datetime, odd: Odd) -> None: ...

    with caplog.at_level(logging.WARNING):
        contract = method_contract(Svc.f, "svc.f")
    assert contract is not None and "svc.f(odd): not validated" in caplog.text


def test_validation_error_crosses_the_wire_with_its_fields():
    error = ValidationError("orders.create: 1 invalid argument value(s)",
                            [{"loc": ["order", "items", 0, "qty"], "msg": "too small",
                              "type": "greater_than"}])
    for codec in (codec_for(JSON), codec_for(MSGPACK)):
        wire = codec.loads(codec.dumps(serialize_error(error)), DecodeLimits())
        assert wire["exc_path"] == "nameko.exceptions.IncorrectSignature"  # what a Nameko caller knows
        back = deserialize_error(wire)
        assert isinstance(back, ValidationError) and isinstance(back, IncorrectSignature)
        assert back.errors == error.errors and str(back) == str(error)
    assert field_path(["order", "items", 0, "qty"]) == "order.items[0].qty"


def test_models_as_call_arguments_are_encoded_by_their_schema():
    order = sample_order()
    for codec in (codec_for(JSON), codec_for(MSGPACK)):
        body = codec.loads(codec.dumps({"order": order, "window": Window(datetime.date(2026, 1, 1),
                                                                          datetime.date(2026, 1, 2)),
                                        "colour": Colour.BLUE}), DecodeLimits())
        assert Order.model_validate(body["order"]) == order
        assert body["window"] == {"start": "2026-01-01", "end": "2026-01-02"} and body["colour"] == "blue"


def test_model_schemas_are_inlined_and_recursion_ends():
    from pydantic import BaseModel

    class Node(BaseModel):
        value: int
        children: list[Node] = []

    Node.model_rebuild()
    schema = schema_of(Node)
    assert "$defs" not in str(schema) and "$ref" not in str(schema)
    assert schema["properties"]["children"]["items"] == {}  # the repeat is "any value"
    assert schema_of(Receipt)["required"] == ["order_id", "total"]  # typing_extensions' TypedDict
    order = schema_of(Order)
    assert order["properties"]["items"]["items"]["title"] == "Item"
    assert order["properties"]["colour"]["enum"] == ["red", "blue"]


def test_on_the_memory_broker_the_handler_sees_models(container_factory, unique_name, rpc_client):
    from amqprpc.testing.pytest import with_name

    name = container_factory(with_name(Orders, unique_name("orders"))).service_name
    order = sample_order()
    assert Order.model_validate(rpc_client.call(name, "create", order)) == order
    with pytest.raises(ValidationError) as caught:
        rpc_client.call(name, "create", {"id": "x"})
    assert {tuple(e["loc"]) for e in caught.value.errors} == {
        ("order", "id"), ("order", "items"), ("order", "placed_at")}
