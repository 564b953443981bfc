"""Celery 5 event handler: a task consumed from the run's handler queue, the closest thing
Celery has to an event handler; run by ``celery -A celery_events worker``.

The queue is bound with routing key ``tick`` to the topic exchange ``<source>.events`` (the
topology amqprpc and Nameko declare; Celery's own default would be a direct exchange named
after the queue), durable, messages persistent (Celery's defaults). ``ignore_result``: no
result backend. Worker at its best as in celery_echo.py: ``--pool threads`` with 10 threads,
prefetch multiplier 10 (100 unacked), acks before running (Celery's default). Env:
BENCH_URL, BENCH_QUEUE, BENCH_EVENT_SOURCE.

It prints ``H <count>`` every ``_common.REPORT_EVERY`` events, like amqprpc_events.py.
"""

import os

import _common  # on PYTHONPATH: the worker runs with the agents directory there
from celery import Celery

app = Celery("bench-events", broker=os.environ.get("BENCH_URL"))
app.conf.update(
    task_default_queue=os.environ.get("BENCH_QUEUE", "celery"),
    task_default_exchange=f"{os.environ.get('BENCH_EVENT_SOURCE', 'bench-source')}.events",
    task_default_exchange_type="topic",
    task_default_routing_key="tick",
    task_queues=None,
    task_ignore_result=True,
    worker_prefetch_multiplier=10,
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.on_tick", ignore_result=True)
def on_tick(payload):
    _common.handled()
