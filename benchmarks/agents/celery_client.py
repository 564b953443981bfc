"""Celery 5 load client: ``echo.apply_async((payload,)).get()`` in a FIFO window."""

import os
import sys

import _common


def main():
    p = _common.params()
    os.environ["BENCH_URL"] = p["url"]
    os.environ["BENCH_QUEUE"] = p["queue"]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from celery_echo import echo

    payload = "x" * p["payload"]
    timeout = p.get("timeout") or 120.0
    _common.fifo_window(lambda: echo.apply_async((payload,)), lambda r: r.get(timeout=timeout),
                        payload, p["window"], p["warmup"], p["duration"])


if __name__ == "__main__":
    main()
