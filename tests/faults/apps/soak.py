"""The service the S1 chaos soak runs as real worker processes (names from the environment).

``echo`` answers calls; ``record`` writes each event's id to a file of this process
before it returns (so before the ack): an id in a file is an event that was handled.
"""

import os
from pathlib import Path

from amqprpc import event_handler, rpc

SOURCE = os.environ.get("SOAK_SOURCE", "soak-source")


class SoakService:
    name = os.environ.get("SOAK_SERVICE_NAME", "soak")

    @rpc
    def echo(self, value):
        return value

    @event_handler(SOURCE, "tick", retry_delay=0.2, max_retry_delay=1.0)
    def record(self, payload):
        folder = Path(os.environ["SOAK_EVENTS_DIR"])
        with (folder / f"{os.getpid()}.events").open("a") as handled:
            handled.write(f"{payload['id']}\n")
