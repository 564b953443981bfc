"""FastStream 0.7 load client: ``await broker.request(payload, queue)`` in a FIFO window of tasks."""

import asyncio

import _common
from faststream.rabbit import RabbitBroker


async def run(p):
    payload = "x" * p["payload"]
    async with RabbitBroker(p["url"], log_level=30) as broker:
        await broker.start()

        async def call():
            reply = await broker.request(payload, p["queue"], timeout=p.get("timeout") or 120.0)
            return await reply.decode()

        await _common.fifo_window_async(call, payload, p["window"], p["warmup"], p["duration"])


if __name__ == "__main__":
    asyncio.run(run(_common.params()))
