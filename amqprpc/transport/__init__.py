"""The seam under amqprpc: a typed transport contract and the transports behind it.

``base`` is the contract every transport keeps; ``pyamqp`` is RabbitMQ over py-amqp (the
only module that imports ``amqp``), ``memory`` an in-process broker for tests, and
``create_transport`` the one place either is built. Nothing above this package sees a channel.
"""

from .base import (
    Binding,
    ConfirmCallback,
    Delivery,
    DeliveryCallback,
    Entity,
    Exchange,
    LostCallback,
    Outgoing,
    Queue,
    QueueInfo,
    ReturnCallback,
    Transport,
)
from .factory import create_transport

__all__ = [
    "Binding",
    "ConfirmCallback",
    "Delivery",
    "DeliveryCallback",
    "Entity",
    "Exchange",
    "LostCallback",
    "Outgoing",
    "Queue",
    "QueueInfo",
    "ReturnCallback",
    "Transport",
    "create_transport",
]
