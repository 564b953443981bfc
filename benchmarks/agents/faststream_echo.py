"""FastStream 0.7 echo service on RabbitMQ, at its best: one subscriber on the run's queue,
replies through FastStream's own request/reply (``broker.request`` on the client side).

Runs in the peers venv: ``python faststream_echo.py '{"url": ..., "queue": ...}'``.
"""

import asyncio
import signal

import _common
from faststream import FastStream
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue


def main():
    p = _common.params()
    broker = RabbitBroker(p["url"], log_level=30)
    # auto_delete: the queue goes with the run; prefetch 100, as every contender gets
    queue = RabbitQueue(p["queue"], auto_delete=True)

    @broker.subscriber(queue, channel=Channel(prefetch_count=p.get("prefetch", 100)))
    async def echo(payload: str) -> str:
        return payload

    serve(broker)


def serve(broker: RabbitBroker) -> None:
    """Run ``broker``'s subscribers as a FastStream app until SIGTERM (the runner's stop)."""
    app = FastStream(broker)
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: app.exit())
    loop.run_until_complete(app.run())


if __name__ == "__main__":
    main()
