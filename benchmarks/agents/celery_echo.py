"""Celery 5 echo task: RabbitMQ broker, ``rpc://`` result backend (results over AMQP, the
RPC-shaped backend), run by ``celery -A celery_echo worker``.

At its best for request/reply: ``--pool threads`` with 10 threads (one process, as the other
contenders' single worker), prefetch multiplier 10 (100 unacked), no result persistence,
``task_acks_late`` off (Celery's default). Env: BENCH_URL, BENCH_QUEUE.
"""

import os

from celery import Celery

app = Celery("bench", broker=os.environ.get("BENCH_URL"), backend="rpc://")
app.conf.update(
    task_default_queue=os.environ.get("BENCH_QUEUE", "celery"),
    task_queues=None,
    worker_prefetch_multiplier=10,
    result_persistent=False,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.echo")
def echo(payload):
    return payload
