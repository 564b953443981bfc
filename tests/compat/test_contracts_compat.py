"""A Nameko 2.14.1 caller calls a pydantic-typed amqprpc method with plain JSON, and gets
Nameko's own IncorrectSignature when a field is wrong (docs/contracts.md)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from amqprpc import Config, ServiceContainer
from amqprpc.testing.broker import delete_queues, queues_declared_by
from amqprpc.testing.pytest import with_name
from tests.contract_services import Order, Orders, sample_order

from .conftest import Names

pytestmark = [pytest.mark.compat, pytest.mark.integration]


@pytest.fixture(scope="module")
def typed_container(amqp_uri: str, names: Names) -> Iterator[ServiceContainer]:
    container = ServiceContainer(with_name(Orders, names.amqprpc), Config(broker_url=amqp_uri))
    container.start()
    try:
        yield container
    finally:
        container.stop(grace=5)
        delete_queues(amqp_uri, queues_declared_by(container))


def test_nameko_caller_calls_a_typed_method_with_plain_json(typed_container, names, nameko_client):
    order = sample_order()
    plain = order.model_dump(mode="json")
    bad = {**plain, "items": [{**plain["items"][0], "qty": -1}]}
    call = {"service": names.amqprpc, "method": "create", "args": [], "kwargs": {}}
    good, refused = nameko_client([{**call, "kwargs": {"order": plain, "channel": "shop"}},
                                   {**call, "args": [bad]}])
    assert Order.model_validate(good["result"]) == order
    error = refused["error"]
    assert (error["module"], error["class"]) == ("nameko.exceptions", "IncorrectSignature")
    assert "order.items[0].qty: Input should be greater than 0" in error["str"]
