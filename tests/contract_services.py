"""A service typed with pydantic models, shared by the contract tests (unit, integration, bridge)."""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from amqprpc import BROADCAST, RpcProxy, event_handler, rpc


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(BaseModel):
    sku: str
    qty: int = Field(gt=0)
    price: decimal.Decimal


class Order(BaseModel):
    id: uuid.UUID
    items: list[Item]
    placed_at: datetime.datetime
    colour: Colour = Colour.RED


class Receipt(TypedDict):
    order_id: uuid.UUID
    total: decimal.Decimal


@dataclass
class Window:
    start: datetime.date
    end: datetime.date


class Orders:
    name = "orders"

    @rpc(http="POST /orders")
    def create(self, order: Order, channel: Literal["web", "shop"] = "web") -> Order:
        """Echo the order: the handler sees real models, so types are checked here."""
        assert isinstance(order, Order) and isinstance(order.items[0].price, decimal.Decimal)
        assert isinstance(order.placed_at, datetime.datetime)
        return order

    @rpc
    def receipt(self, order: Order) -> Receipt:
        return {"order_id": order.id, "total": sum((i.price * i.qty for i in order.items), decimal.Decimal())}

    @rpc
    def count(self, window: Window, colours: list[Colour]) -> dict[str, int]:
        assert isinstance(window, Window) and all(isinstance(c, Colour) for c in colours)
        return {"days": (window.end - window.start).days, "colours": len(colours)}

    @rpc
    def add(self, a: int, b: int) -> int:
        return a + b  # plain hints: not validated, as before


def relay_of(orders_name: str) -> type:
    """A service that calls ``orders`` through a nested RpcProxy, with models as arguments."""

    class Relay:
        name = f"relay-{orders_name}"
        orders = RpcProxy(orders_name)

        @rpc
        def forward(self, order: Order) -> Order:
            return Order.model_validate(self.orders.create(order))

    return Relay


def sample_order() -> Order:
    return Order(
        id=uuid.uuid4(),
        items=[Item(sku="a-1", qty=2, price=decimal.Decimal("19.990")),
               Item(sku="b-2", qty=1, price=decimal.Decimal("0.10"))],
        placed_at=datetime.datetime(2026, 12, 3, 15, 4, 5, 123456, tzinfo=datetime.UTC),
    )


class Shipped(BaseModel):
    order_id: uuid.UUID
    at: datetime.datetime


class Shipping:
    """Dispatches and handles events: described offline only (no broker in its tests)."""

    name = "shipping"
    event_types = {"shipped": Shipped}

    @event_handler("orders", "order_created")
    def on_order(self, order: Order) -> None:
        pass

    @event_handler("orders", "order_cancelled", handler_type=BROADCAST)
    def on_cancel(self, payload: dict[str, str]) -> None:
        pass

    @rpc
    def track(self, order_id: uuid.UUID) -> Shipped | None:
        return None
