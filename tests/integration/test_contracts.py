"""Typed contracts on real workers: pydantic models validated before the handler, returns dumped
by their schema, field errors as a typed remote error, JSON and msgpack alike (docs/contracts.md)."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest

from amqprpc import ClusterRpcClient, Config, IncorrectSignature, ValidationError
from amqprpc.testing.pytest import with_name
from tests.contract_services import Order, Orders, relay_of, sample_order

pytestmark = pytest.mark.integration


@pytest.fixture
def orders(container_factory, unique_name):
    return container_factory(with_name(Orders, unique_name("orders"))).service_name


@pytest.fixture(params=["json", "msgpack"])
def client(request, amqp_uri):
    with ClusterRpcClient(config=Config(broker_url=amqp_uri, serializer=request.param), timeout=10) as rpc:
        yield rpc


def test_models_round_trip_exactly(orders, client):
    order = sample_order()
    result = client.call(orders, "create", order=order, channel="shop")
    assert Order.model_validate(result) == order  # datetime to the microsecond, Decimal("19.990"), UUID
    assert result["items"][0]["price"] == "19.990"
    assert result["placed_at"].startswith("2026-12-03T15:04:05.123456")
    receipt = client.call(orders, "receipt", order.model_dump(mode="json"))  # plain JSON works the same
    assert uuid.UUID(receipt["order_id"]) == order.id
    assert decimal.Decimal(receipt["total"]) == decimal.Decimal("40.080")
    window = {"start": datetime.date(2026, 1, 1), "end": datetime.date(2026, 1, 31)}
    assert client.call(orders, "count", window, ["red", "blue"]) == {"days": 30, "colours": 2}


def test_invalid_arguments_never_reach_the_handler(orders, client):
    bad = sample_order().model_dump(mode="json")
    bad["items"][1]["qty"] = 0
    bad["placed_at"] = "yesterday"
    with pytest.raises(ValidationError) as caught:
        client.call(orders, "create", order=bad, channel="phone")
    error = caught.value
    assert isinstance(error, IncorrectSignature)
    assert sorted(tuple(e["loc"]) for e in error.errors) == [
        ("channel",), ("order", "items", 1, "qty"), ("order", "placed_at")]
    assert "order.items[1].qty: Input should be greater than 0" in str(error)
    with pytest.raises(IncorrectSignature):  # not bindable at all: as before
        client.call(orders, "create")
    assert client.call(orders, "add", 2, 3) == 5


def test_models_through_a_nested_rpc_proxy(orders, container_factory, client):
    relay = container_factory(relay_of(orders)).service_name
    order = sample_order()
    assert Order.model_validate(client.call(relay, "forward", order)) == order
    bad = order.model_dump(mode="json")
    bad["items"] = []
    bad["id"] = "not-a-uuid"
    with pytest.raises(ValidationError) as caught:
        client.call(relay, "forward", bad)
    assert [e["loc"] for e in caught.value.errors] == [["order", "id"]]


def test_contract_dump_and_asyncapi_from_live_descriptors(runner_factory, unique_name, amqp_uri, tmp_path):
    import json

    from click.testing import CliRunner

    from amqprpc.cli import main

    runner = runner_factory(with_name(Orders, unique_name("orders")), discovery_interval=0.2)
    name = runner.containers[0].service_name
    cli = CliRunner()
    live = cli.invoke(main, ["contract", "dump", name, "--broker", amqp_uri, "--wait", "10"])
    assert live.exit_code == 0, live.output
    contract = json.loads(live.output)
    assert contract["services"][name]["methods"]["create"]["http"] == "POST /orders"
    (tmp_path / "live.json").write_text(live.output)
    same = cli.invoke(main, ["contract", "diff", str(tmp_path / "live.json"), "live", "--broker", amqp_uri,
                             "--wait", "2"])
    assert same.exit_code == 0, same.output  # other services on a shared broker are only additions
    assert name not in same.output  # and this one is unchanged
    document = cli.invoke(main, ["asyncapi", name, "--broker", amqp_uri, "--wait", "10"])
    assert document.exit_code == 0, document.output
    assert f"{name}.create" in json.loads(document.output)["operations"]
    missing = cli.invoke(main, ["asyncapi", unique_name("nobody"), "--broker", amqp_uri, "--wait", "0.5"])
    assert missing.exit_code == 2 and "no running instance announced it" in missing.output
