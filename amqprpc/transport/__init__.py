"""The seam under amqprpc: a typed transport contract and the transports behind it.

``base`` is the contract every transport keeps; ``pyamqp`` is RabbitMQ over py-amqp (the
only module that imports ``amqp``). Nothing above this package sees a channel.
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
from .pyamqp import RECOVERABLE_ERRORS, BrokerConnection

__all__ = [
    "RECOVERABLE_ERRORS",
    "Binding",
    "BrokerConnection",
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
]
