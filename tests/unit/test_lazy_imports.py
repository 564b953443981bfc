"""A worker whose handlers are all plain loads none of the modules only some workers need.

Each is imported where it is used (docs/benchmarks.md, "Idle memory"): together they were
~4 MiB of an idle worker's 32 MiB. The check runs in a fresh interpreter: this one has
imported everything by now.
"""

from __future__ import annotations

import json
import subprocess
import sys

# module -> the one feature that needs it
LAZY = {
    "asyncio": "async def handlers and AsyncRpcClient",
    "importlib.metadata": "command plugins (amqprpc.cli entry points)",
    "http.server": "the health port (--health-port)",
    "tomllib": "a config file (--config)",
}

WORKER = """
import json, sys
from amqprpc import Config, ServiceContainer, rpc
from amqprpc.cli import run  # what `amqprpc run` imports before it starts a worker
from amqprpc.runner import ServiceRunner

class Plain:
    name = "plain"

    @rpc
    def echo(self, value):
        return value

runner = ServiceRunner(Config(broker_url="memory://lazy-imports"))
runner.add_service(Plain)
runner.start()
try:
    loaded = [name for name in json.loads(sys.argv[1]) if name in sys.modules]
finally:
    runner.stop()
print(json.dumps(loaded))
"""


def test_a_plain_worker_loads_none_of_the_lazy_modules() -> None:
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(list(LAZY))],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    assert not loaded, "a plain worker imported " + ", ".join(f"{name} (only {LAZY[name]} needs it)"
                                                             for name in loaded)


def test_an_async_handler_still_gets_its_loop() -> None:
    """The other side: asyncio is imported when a service has an ``async def`` handler."""
    code = WORKER.replace("    def echo(self, value):", "    async def echo(self, value):")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(["asyncio"])],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == ["asyncio"]
