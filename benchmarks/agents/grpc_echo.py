"""gRPC Python unary echo on loopback, no broker: the bar of a point-to-point RPC stack.

A generic handler with identity (de)serializers (raw bytes, no protobuf codegen): the
transport and gRPC's own machinery are all that is measured. ``{"aio": true}`` runs the
``grpc.aio`` server, else the sync server with a 10-thread pool.
"""

import asyncio
import signal
import threading
from concurrent import futures

import _common
import grpc

METHOD = "/bench.Echo/Echo"


def _handlers(behaviour):
    return grpc.method_handlers_generic_handler("bench.Echo", {
        "Echo": grpc.unary_unary_rpc_method_handler(behaviour),
    })


def serve_sync(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    server.add_generic_rpc_handlers((_handlers(lambda request, context: request),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()


async def serve_aio(port):
    async def echo(request, context):
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handlers(echo),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    p = _common.params()
    if p.get("aio"):
        asyncio.run(serve_aio(p["port"]))
    else:
        serve_sync(p["port"])
