"""aio-pika ``patterns.JsonRPC`` load client: ``rpc.call(<method>, kwargs=...)`` in a FIFO
window of tasks."""

import asyncio

import _common
import aio_pika
from aio_pika.patterns import JsonRPC


async def run(p):
    payload = "x" * p["payload"]
    connection = await aio_pika.connect_robust(p["url"])
    async with connection:
        channel = await connection.channel()
        rpc = await JsonRPC.create(channel)
        kwargs = {"payload": payload}
        await _common.fifo_window_async(lambda: rpc.call(p["queue"], kwargs=kwargs), payload,
                                        p["window"], p["warmup"], p["duration"])


if __name__ == "__main__":
    asyncio.run(run(_common.params()))
