"""A service for the rolling-restart test: every run of a call or an event leaves a line.

Each run appends ``<kind> <id> <pid>`` to ``$ROLLING_LOG`` (one short ``O_APPEND`` write,
atomic between processes), so the test counts executions by id across every worker that
ever lived. Names come from the environment so tests don't collide.
"""

import os
import time

from amqprpc import event_handler, rpc

SOURCE = os.environ.get("ROLLING_SOURCE", "rolling-source")


def _record(kind: str, ident: str) -> None:
    line = f"{kind} {ident} {os.getpid()}\n".encode()
    fd = os.open(os.environ["ROLLING_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class RollingService:
    name = os.environ.get("ROLLING_SERVICE_NAME", "rolling")

    @rpc
    def work(self, ident: str, seconds: float = 0.02):
        """Take a little time (so a stop finds calls in flight), then record the run."""
        time.sleep(seconds)
        _record("call", ident)
        return ident

    @event_handler(SOURCE, "tick")
    def on_tick(self, payload):
        time.sleep(0.01)
        _record("event", str(payload["id"]))
