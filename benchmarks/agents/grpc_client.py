"""gRPC Python load client: a unary call per request, FIFO window of futures (sync:
``stub.future()``; ``{"aio": true}``: ``grpc.aio`` calls as tasks). One channel."""

import asyncio

import _common
import grpc
from grpc_echo import METHOD


def run_sync(p, payload):
    with grpc.insecure_channel(f"127.0.0.1:{p['port']}") as channel:
        echo = channel.unary_unary(METHOD)
        _common.fifo_window(lambda: echo.future(payload), lambda f: f.result(), payload,
                            p["window"], p["warmup"], p["duration"])


async def run_aio(p, payload):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{p['port']}") as channel:
        echo = channel.unary_unary(METHOD)
        await _common.fifo_window_async(lambda: echo(payload), payload, p["window"], p["warmup"],
                                        p["duration"])


if __name__ == "__main__":
    p = _common.params()
    payload = b"x" * p["payload"]
    if p.get("aio"):
        asyncio.run(run_aio(p, payload))
    else:
        run_sync(p, payload)
