"""orders: takes orders and follows them until they are paid. Orders live in SQL.

The flow (docs/demo.md)::

    POST /orders -> orders.create: users.get(user_id) over RPC, store the order (pending),
                    dispatch order_created
    payments.on_order_created: charge, dispatch payment_succeeded | payment_failed
    orders.on_payment_*: the order becomes paid | failed

``create`` is safe to run twice for one request (a redelivery after the worker died
between commit and ack): ``self.db.once()`` tells the rerun, which answers with the order
the first run stored and dispatches its event again (handlers of ``order_created`` are
once-only too). The database is ``ORDERS_DATABASE_URL`` or ``DATABASE_URL``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from amqprpc import (
    CallContext,
    Database,
    EventDispatcher,
    RemoteError,
    RpcProxy,
    event_handler,
    remote_error,
    rpc,
)

MAX_AMOUNT = Decimal("1000000")


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    amount: Mapped[Decimal] = mapped_column(sa.Numeric(12, 2))
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    request_id: Mapped[str] = mapped_column(sa.String(128), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True))

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "user_id": self.user_id, "amount": float(self.amount),
                "status": self.status, "reason": self.reason}


@remote_error
class OrderNotFound(LookupError):
    """No order has this id."""


@remote_error
class InvalidOrder(ValueError):
    """The order cannot be placed: unknown user, or an amount out of range."""


class OrdersService:
    name = "orders"
    http_errors = {OrderNotFound: 404, InvalidOrder: 422}

    ctx = CallContext()
    db = Database(Base, create_tables=True)
    dispatch = EventDispatcher()
    users = RpcProxy("users")

    @rpc(http="POST /orders", expected_exceptions=InvalidOrder)
    def create(self, user_id: str, amount: float) -> dict[str, Any]:
        """Place an order; it is ``pending`` until its payment succeeds or fails."""
        value = Decimal(str(amount)).quantize(Decimal("0.01"))
        if not Decimal("0") < value < MAX_AMOUNT:
            raise InvalidOrder(f"amount must be above 0 and below {MAX_AMOUNT}, got {amount}")
        try:
            self.users.get(user_id)
        except Exception as exc:
            if _error_type(exc) == "UserNotFound":
                raise InvalidOrder(f"no user {user_id!r}") from None
            raise
        request_id = self.ctx.request_id
        if self.db.once():
            order = Order(user_id=user_id, amount=value, status="pending", request_id=request_id,
                          created_at=dt.datetime.now(dt.UTC))
            self.db.add(order)
            self.db.commit()  # stored before anyone hears of it
        else:  # this request ran before: answer as the first run did
            order = self.db.scalars(sa.select(Order).where(Order.request_id == request_id)).one()
        self.dispatch("order_created", order.as_dict())
        return order.as_dict()

    @rpc(http="GET /orders/{order_id}", expected_exceptions=OrderNotFound)
    def get(self, order_id: int) -> dict[str, Any]:
        """One order, with its status: pending, paid or failed."""
        order = self.db.get(Order, order_id)
        if order is None:
            raise OrderNotFound(f"no order {order_id}")
        return order.as_dict()

    @rpc(http="GET /users/{user_id}/orders")
    def for_user(self, user_id: str) -> list[dict[str, Any]]:
        """A user's orders, newest first."""
        query = sa.select(Order).where(Order.user_id == user_id).order_by(Order.id.desc()).limit(100)
        return [order.as_dict() for order in self.db.scalars(query)]

    @event_handler("payments", "payment_succeeded")
    def on_payment_succeeded(self, payment: dict[str, Any]) -> None:
        self._settle(payment["order_id"], "paid", None)

    @event_handler("payments", "payment_failed")
    def on_payment_failed(self, payment: dict[str, Any]) -> None:
        self._settle(payment["order_id"], "failed", payment.get("reason"))

    def _settle(self, order_id: int, status: str, reason: str | None) -> None:
        # Idempotent by itself: only a pending order changes, so a redelivery is a no-op.
        self.db.execute(sa.update(Order).where(Order.id == order_id, Order.status == "pending")
                        .values(status=status, reason=reason))


def _error_type(exc: BaseException) -> str:
    """The remote type name, whether the caller rebuilt the class or got a RemoteError."""
    return exc.exc_type if isinstance(exc, RemoteError) else type(exc).__name__
