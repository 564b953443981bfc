from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest

from amqprpc import RemoteError
from amqprpc.testing import worker_factory
from services.orders import Base, InvalidOrder, Order, OrdersService


@pytest.fixture
def orders(sql_session):
    def make(request_id: str = "r-1", method: str = "create") -> OrdersService:
        db = sql_session(Base, "orders", method, request_id)
        return worker_factory(OrdersService, db=db, ctx=SimpleNamespace(request_id=request_id))

    return make


def test_create_checks_the_user_stores_a_pending_order_and_announces_it(orders):
    service = orders()
    order = service.create(user_id="u1", amount=12.5)
    assert order == {"id": 1, "user_id": "u1", "amount": 12.5, "status": "pending", "reason": None}
    service.users.get.assert_called_once_with("u1")
    service.dispatch.assert_called_once_with("order_created", order)
    service.db.rollback()  # create committed by itself: a rollback now undoes nothing
    assert service.db.get(Order, 1).status == "pending"


def test_the_same_request_twice_stores_one_order_and_answers_the_same(orders):
    first = orders("same").create(user_id="u1", amount=5)
    again = orders("same")
    assert again.create(user_id="u1", amount=5) == first
    assert again.db.query(Order).count() == 1
    again.dispatch.assert_called_once_with("order_created", first)  # re-announced, once-only downstream
    assert orders("other").create(user_id="u1", amount=5)["id"] == 2


def test_unknown_user_is_an_invalid_order(orders):
    service = orders()
    service.users.get.side_effect = RemoteError("UserNotFound", "no user 'u9'")
    with pytest.raises(InvalidOrder, match="no user 'u9'"):
        service.create(user_id="u9", amount=5)
    service.dispatch.assert_not_called()


def test_other_user_errors_propagate(orders):
    service = orders()
    service.users.get.side_effect = RemoteError("ServerSelectionTimeoutError", "mongo down")
    with pytest.raises(RemoteError, match="mongo down"):
        service.create(user_id="u1", amount=5)


@pytest.mark.parametrize("amount", [0, -1, 1_000_000, 5e9])
def test_amount_out_of_range(orders, amount):
    service = orders()
    with pytest.raises(InvalidOrder, match="amount"):
        service.create(user_id="u1", amount=amount)
    service.users.get.assert_not_called()


def test_payment_outcomes_settle_a_pending_order_once(orders):
    service = orders()
    paid = service.create(user_id="u1", amount=5)["id"]
    failed = orders("r-2").create(user_id="u1", amount=7)["id"]
    handler = orders("e-1", "on_payment_succeeded")
    handler.on_payment_succeeded({"order_id": paid})
    handler.on_payment_failed({"order_id": failed, "reason": "declined"})
    handler.on_payment_failed({"order_id": paid, "reason": "late duplicate"})  # already settled
    handler.db.commit()
    assert handler.get(paid)["status"] == "paid"
    assert handler.get(failed) == {"id": failed, "user_id": "u1", "amount": 7.0,
                                        "status": "failed", "reason": "declined"}
    assert [o["id"] for o in handler.for_user("u1")] == [failed, paid]


def test_get_unknown_order(orders):
    from services.orders import OrderNotFound

    with pytest.raises(OrderNotFound):
        orders().get(404)


def test_dependencies_are_declared():
    assert isinstance(worker_factory(OrdersService).users, MagicMock)
