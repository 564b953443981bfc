"""aio-pika 10 event load: ``exchange.publish(Message(payload, delivery_mode=PERSISTENT),
routing_key="tick")`` on a channel with publisher confirms (aio-pika's default), so each
publish awaits its confirm: up to ``confirm_window`` in flight as tasks
(_dispatch.run_dispatcher_async).
"""

import asyncio

import _common
import aio_pika
from _dispatch import Backlog, run_dispatcher_async


async def run(p):
    body = b"x" * p["payload"]
    backlog = Backlog(p["url"], p["queue"], p["max_backlog"])
    try:
        connection = await aio_pika.connect_robust(p["url"])
        async with connection:
            channel = await connection.channel()  # publisher_confirms=True
            exchange = await channel.declare_exchange(f"{p['source']}.events", aio_pika.ExchangeType.TOPIC,
                                                      durable=True)

            def dispatch():
                message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                return exchange.publish(message, routing_key="tick")

            await run_dispatcher_async(dispatch, backlog, p)
    finally:
        backlog.close()


if __name__ == "__main__":
    asyncio.run(run(_common.params()))
