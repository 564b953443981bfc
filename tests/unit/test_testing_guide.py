"""The unit-test example of docs/testing.md, verbatim: services.orders with no broker."""

from decimal import Decimal

import pytest

from amqprpc import RemoteError
from amqprpc.testing import worker_factory
from services.orders import InvalidOrder, OrdersService


def test_create_stores_a_pending_order_and_announces_it():
    orders = worker_factory(OrdersService)  # ctx, db, dispatch, users: MagicMocks
    orders.db.once.return_value = True  # the first run of this request
    orders.users.get.return_value = {"id": "u-1", "name": "Ann"}

    order = orders.create(user_id="u-1", amount=12.5)

    assert order["status"] == "pending" and order["amount"] == 12.5
    orders.users.get.assert_called_once_with("u-1")
    stored = orders.db.add.call_args.args[0]
    assert stored.amount == Decimal("12.50")
    orders.db.commit.assert_called_once_with()
    orders.dispatch.assert_called_once_with("order_created", order)


def test_create_refuses_unknown_users_and_announces_nothing():
    orders = worker_factory(OrdersService)
    orders.users.get.side_effect = RemoteError("UserNotFound", "no user 'u-0'")

    with pytest.raises(InvalidOrder, match="no user 'u-0'"):
        orders.create(user_id="u-0", amount=5)
    orders.db.add.assert_not_called()
    orders.dispatch.assert_not_called()
