"""The Nameko echo service, run by ``nameko run benchmarks.agents.nameko_echo`` (bench venv).

``BENCH_SERVICE`` names it (unique per run).
"""

import os

from nameko.rpc import rpc


class EchoService:
    name = os.environ.get("BENCH_SERVICE", "bench-echo")

    @rpc
    def echo(self, payload):
        return payload
