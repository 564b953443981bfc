"""Celery 5 event load: ``on_tick.apply_async((payload,), ignore_result=True)``, routed by
celery_events.py's defaults (topic exchange ``<source>.events``, routing key ``tick``).

Celery publishes without publisher confirms by default (kombu's ``confirm_publish`` is off),
so a dispatch is done when ``apply_async`` returns. The same loop and backlog bound as
benchmarks/agents/nameko_dispatch.py.
"""

import os
import sys

import _common
from _dispatch import Backlog, run_dispatcher


def main():
    p = _common.params()
    os.environ["BENCH_URL"] = p["url"]
    os.environ["BENCH_QUEUE"] = p["queue"]
    os.environ["BENCH_EVENT_SOURCE"] = p["source"]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from celery_events import on_tick

    payload = "x" * p["payload"]
    backlog = Backlog(p["url"], p["queue"], p["max_backlog"])
    try:
        run_dispatcher(lambda: on_tick.apply_async((payload,), ignore_result=True), lambda sent: sent,
                       backlog, p)
    finally:
        backlog.close()


if __name__ == "__main__":
    main()
