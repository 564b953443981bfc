"""The amqprpc event handler, run by ``amqprpc run benchmarks.agents.amqprpc_events``.

It handles ``tick`` events of ``BENCH_EVENT_SOURCE`` (service-pool: instances compete)
and reports its running count on stdout every ``REPORT_EVERY`` events (``H <count>``):
the runner sums the instances' counts to measure dispatch -> handled throughput.
"""

from __future__ import annotations

import itertools
import os

from amqprpc import event_handler

REPORT_EVERY = 20
_handled = itertools.count(1)  # next() on a count is atomic under the GIL


class EventSink:
    name = os.environ.get("BENCH_SERVICE", "bench-sink")

    @event_handler(os.environ.get("BENCH_EVENT_SOURCE", "bench-source"), "tick")
    def on_tick(self, payload: str) -> None:
        count = next(_handled)
        if count % REPORT_EVERY == 0:
            os.write(1, b"H %d\n" % count)
