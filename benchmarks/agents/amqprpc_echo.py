"""The amqprpc echo service, run by ``amqprpc run benchmarks.agents.amqprpc_echo``.

Its name (``BENCH_SERVICE``) is unique per run so that runs never share queues; with
``BENCH_HTTP_ROUTE`` (``POST /bench-xyz/echo``) the bridge exposes ``echo`` there without
authentication, taking ``{"payload": ...}`` as the body.
"""

from __future__ import annotations

import os

from amqprpc import rpc

_ROUTE = os.environ.get("BENCH_HTTP_ROUTE") or None


class EchoService:
    name = os.environ.get("BENCH_SERVICE", "bench-echo")

    @rpc(http=_ROUTE, public=True)
    def echo(self, payload: str) -> str:
        return payload
