"""Nameko load client: ``ClusterRpcProxy`` with a FIFO window of ``call_async`` replies.

Runs in the bench venv under eventlet, as Nameko's own tools do.
"""

import eventlet

eventlet.monkey_patch()

import _common  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402


def main():
    p = _common.params()
    payload = "x" * p["payload"]
    with ClusterRpcProxy({"AMQP_URI": p["url"]}, timeout=p.get("timeout", 120.0)) as proxy:
        method = getattr(proxy, p["service"]).echo
        _common.fifo_window(lambda: method.call_async(payload), lambda reply: reply.result(), payload,
                            p["window"], p["warmup"], p["duration"])


if __name__ == "__main__":
    main()
