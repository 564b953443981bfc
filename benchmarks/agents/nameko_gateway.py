"""Nameko's HTTP gateway doing what the amqprpc bridge does: ``POST`` JSON -> RPC -> echo.

Run by ``nameko run benchmarks.agents.nameko_gateway`` in its own process (the echo
service runs in another); ``BENCH_GATEWAY`` names it, ``BENCH_SERVICE`` is the echo
service, ``BENCH_HTTP_PATH`` the path.
"""

import json
import os

from nameko.rpc import RpcProxy
from nameko.web.handlers import http


class Gateway:
    name = os.environ.get("BENCH_GATEWAY", "bench-gateway")
    echo_service = RpcProxy(os.environ.get("BENCH_SERVICE", "bench-echo"))

    @http("POST", os.environ.get("BENCH_HTTP_PATH", "/echo"))
    def echo(self, request):
        payload = json.loads(request.get_data(as_text=True))["payload"]
        return 200, {"Content-Type": "application/json"}, json.dumps(self.echo_service.echo(payload))
