"""FastStream 0.7 event handler on RabbitMQ: one ``@broker.subscriber`` on the run's handler
queue (durable, bound with routing key ``tick`` to the durable topic exchange
``<source>.events``, the topology amqprpc and Nameko declare), prefetch 100 on its channel,
acked after the handler returns (FastStream's default ack policy).

It prints ``H <count>`` every ``_common.REPORT_EVERY`` events, like amqprpc_events.py. Runs in the
peers venv: ``python faststream_events.py '{"url": ..., "queue": ..., "source": ...}'``.
"""

import _common
from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream_echo import serve


def main():
    p = _common.params()
    broker = RabbitBroker(p["url"], log_level=30)
    exchange = RabbitExchange(f"{p['source']}.events", type=ExchangeType.TOPIC, durable=True)
    queue = RabbitQueue(p["queue"], durable=True, routing_key="tick")

    @broker.subscriber(queue, exchange, channel=Channel(prefetch_count=p.get("prefetch", 100)),
                       no_reply=True)
    async def on_tick(payload: str) -> None:
        _common.handled()

    serve(broker)


if __name__ == "__main__":
    main()
