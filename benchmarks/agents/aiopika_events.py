"""aio-pika 10 event handler: ``queue.consume`` on the run's handler queue (durable, bound with
routing key ``tick`` to the durable topic exchange ``<source>.events``, as amqprpc and Nameko
declare them), prefetch 100 on the channel, each message acked by ``message.process()`` after
the handler ran.

It prints ``H <count>`` every ``_common.REPORT_EVERY`` events, like amqprpc_events.py. Runs in the
peers venv: ``python aiopika_events.py '{"url": ..., "queue": ..., "source": ...}'``.
"""

import asyncio
import signal

import _common
import aio_pika


async def on_tick(message):
    async with message.process():
        _common.handled()


async def run(p):
    connection = await aio_pika.connect_robust(p["url"])
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=p.get("prefetch", 100))
        exchange = await channel.declare_exchange(f"{p['source']}.events", aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(p["queue"], durable=True)
        await queue.bind(exchange, "tick")
        await queue.consume(on_tick)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(run(_common.params()))
