"""FastStream 0.7 event load: ``broker.publish(payload, exchange=..., routing_key="tick",
persist=True)``; FastStream's channel has publisher confirms on, so each publish awaits its
confirm: up to ``confirm_window`` of them in flight as tasks (_dispatch.run_dispatcher_async).
"""

import asyncio

import _common
from _dispatch import Backlog, run_dispatcher_async
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange


async def run(p):
    payload = "x" * p["payload"]
    exchange = RabbitExchange(f"{p['source']}.events", type=ExchangeType.TOPIC, durable=True)
    backlog = Backlog(p["url"], p["queue"], p["max_backlog"])
    try:
        async with RabbitBroker(p["url"], log_level=30) as broker:
            await broker.declare_exchange(exchange)
            await run_dispatcher_async(
                lambda: broker.publish(payload, exchange=exchange, routing_key="tick", persist=True),
                backlog, p)
    finally:
        backlog.close()


if __name__ == "__main__":
    asyncio.run(run(_common.params()))
