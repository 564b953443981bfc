"""payments: charges each new order once. Payments live in SQL.

Listens to ``orders.order_created``; records a payment and dispatches
``payment_succeeded`` or ``payment_failed`` (amounts above ``LIMIT`` are declined, so the
demo can show both). The handler is once-only per order: a redelivered or re-dispatched
event finds the recorded payment and announces the same outcome again, never charging
twice. The database is ``PAYMENTS_DATABASE_URL`` or ``DATABASE_URL``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from amqprpc import Database, EventDispatcher, event_handler, remote_error, rpc

LIMIT = Decimal("10000")


class Base(DeclarativeBase):
    pass


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(unique=True)
    user_id: Mapped[str] = mapped_column(sa.String(64))
    amount: Mapped[Decimal] = mapped_column(sa.Numeric(12, 2))
    status: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True))

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "order_id": self.order_id, "user_id": self.user_id,
                "amount": float(self.amount), "status": self.status, "reason": self.reason}


@remote_error
class PaymentNotFound(LookupError):
    """No payment for this order (yet)."""


class PaymentsService:
    name = "payments"
    http_errors = {PaymentNotFound: 404}

    db = Database(Base, create_tables=True)
    dispatch = EventDispatcher()

    @event_handler("orders", "order_created")
    def on_order_created(self, order: dict[str, Any]) -> None:
        if self.db.once(f"order-{order['id']}"):
            payment = self._charge(order)
            self.db.add(payment)
            self.db.commit()  # recorded before it is announced
        else:  # charged before: announce the recorded outcome again
            payment = self.db.scalars(sa.select(Payment).where(Payment.order_id == order["id"])).one()
        event = "payment_succeeded" if payment.status == "succeeded" else "payment_failed"
        self.dispatch(event, payment.as_dict())

    @rpc(http="GET /orders/{order_id}/payment", expected_exceptions=PaymentNotFound)
    def for_order(self, order_id: int) -> dict[str, Any]:
        """The payment of an order."""
        payment = self.db.scalars(sa.select(Payment).where(Payment.order_id == order_id)).first()
        if payment is None:
            raise PaymentNotFound(f"no payment for order {order_id}")
        return payment.as_dict()

    def _charge(self, order: dict[str, Any]) -> Payment:
        amount = Decimal(str(order["amount"])).quantize(Decimal("0.01"))
        declined = amount > LIMIT
        return Payment(order_id=order["id"], user_id=order["user_id"], amount=amount,
                       status="failed" if declined else "succeeded",
                       reason=f"amount above the limit of {LIMIT}" if declined else None,
                       created_at=dt.datetime.now(dt.UTC))
