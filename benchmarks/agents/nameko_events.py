"""The Nameko event handler, run by ``nameko run benchmarks.agents.nameko_events``.

It handles ``tick`` events of ``BENCH_EVENT_SOURCE`` (service pool) and prints ``H <count>``
every 20 events, like benchmarks/agents/amqprpc_events.py.
"""

import itertools
import os

from nameko.events import event_handler

REPORT_EVERY = 20
_handled = itertools.count(1)


class EventSink:
    name = os.environ.get("BENCH_SERVICE", "bench-sink")

    @event_handler(os.environ.get("BENCH_EVENT_SOURCE", "bench-source"), "tick")
    def on_tick(self, payload):
        count = next(_handled)
        if count % REPORT_EVERY == 0:
            os.write(1, b"H %d\n" % count)
