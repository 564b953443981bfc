from __future__ import annotations

import pytest

from amqprpc.testing import worker_factory
from services.payments import Base, Payment, PaymentNotFound, PaymentsService


@pytest.fixture
def payments(sql_session):
    def make(request_id: str = "m-1") -> PaymentsService:
        return worker_factory(PaymentsService, db=sql_session(Base, "payments", "on_order_created",
                                                              request_id))

    return make


def order(order_id: int = 1, amount: float = 12.5) -> dict:
    return {"id": order_id, "user_id": "u1", "amount": amount, "status": "pending", "reason": None}


def test_a_new_order_is_charged_and_the_success_announced(payments):
    service = payments()
    service.on_order_created(order())
    event, payment = service.dispatch.call_args.args
    assert event == "payment_succeeded"
    assert payment == {"id": 1, "order_id": 1, "user_id": "u1", "amount": 12.5,
                       "status": "succeeded", "reason": None}
    assert service.for_order(1) == payment


def test_above_the_limit_is_declined(payments):
    service = payments()
    service.on_order_created(order(amount=20000))
    event, payment = service.dispatch.call_args.args
    assert event == "payment_failed" and payment["reason"] == "amount above the limit of 10000"


def test_an_order_event_delivered_twice_charges_once_and_announces_the_same_outcome(payments):
    first, second = payments("m-1"), payments("m-2")  # a re-dispatch has another message id
    first.on_order_created(order())
    second.on_order_created(order())
    assert second.db.query(Payment).count() == 1
    assert second.dispatch.call_args == first.dispatch.call_args


def test_no_payment_yet(payments):
    with pytest.raises(PaymentNotFound):
        payments().for_order(7)
