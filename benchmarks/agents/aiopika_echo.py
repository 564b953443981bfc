"""aio-pika ``patterns.JsonRPC`` echo service: ``rpc.register(<method>, echo)``.

The pattern declares one queue per method name, so the method is named after the run's
queue to keep runs apart. Prefetch 100 on the channel, as every contender gets.
"""

import asyncio
import signal

import _common
import aio_pika
from aio_pika.patterns import JsonRPC


async def echo(*, payload):
    return payload


async def run(p):
    connection = await aio_pika.connect_robust(p["url"])
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=p.get("prefetch", 100))
        rpc = await JsonRPC.create(channel)
        await rpc.register(p["queue"], echo, auto_delete=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(run(_common.params()))
