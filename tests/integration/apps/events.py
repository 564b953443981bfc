"""An event handler for subprocess tests: it says it started, then waits to be released.

Names come from the environment so tests don't collide: EVENTS_SERVICE_NAME,
EVENTS_SOURCE, EVENTS_MARKER_DIR.
"""

import os
import time
from pathlib import Path

from amqprpc import event_handler

SOURCE = os.environ.get("EVENTS_SOURCE", "source")


class HoldingHandler:
    name = os.environ.get("EVENTS_SERVICE_NAME", "holder")

    @event_handler(SOURCE, "hold")
    def hold(self, payload):
        """Mark ``<pid>.started`` in the marker folder, then wait for a ``release`` file."""
        folder = Path(os.environ["EVENTS_MARKER_DIR"])
        (folder / f"{os.getpid()}.started").write_text(str(payload))
        deadline = time.monotonic() + 60
        while not (folder / "release").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("never released")
            time.sleep(0.01)
