"""FastStream 0.7's HTTP path doing what the amqprpc bridge does: ``POST`` JSON -> RPC -> echo.

A FastAPI app with FastStream's ``faststream.rabbit.fastapi.RabbitRouter`` (the way FastStream
documents HTTP + RabbitMQ: the router's broker starts and stops with the app's lifespan); the
endpoint takes ``{"payload": str}`` and answers, as JSON, the reply of
``await router.broker.request(payload, queue)`` to the faststream echo service
(faststream_echo.py), the same request faststream_client.py makes. Served by uvicorn in one
process on its fast loop and parser (uvloop, httptools), access log off.

Runs in the peers venv: ``python faststream_gateway.py '{"url": ..., "queue": ..., "path": ...,
"port": ...}'``.
"""

import warnings

import _common

# 0.7.8 warns that the integration is moving to a separate package; it is still FastStream's own.
warnings.filterwarnings("ignore", message="The integration has been moved", category=DeprecationWarning)

import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from faststream.rabbit.fastapi import RabbitRouter  # noqa: E402
from pydantic import BaseModel  # noqa: E402


class Body(BaseModel):
    payload: str


def make_app(p: dict) -> FastAPI:
    router = RabbitRouter(p["url"], log_level=30)
    queue, timeout = p["queue"], p.get("timeout") or 120.0

    @router.post(p["path"])
    async def echo(body: Body) -> str:
        reply = await router.broker.request(body.payload, queue, timeout=timeout)
        return await reply.decode()

    app = FastAPI(lifespan=router.lifespan_context)
    app.include_router(router)
    return app


def main() -> None:
    p = _common.params()
    # SIGTERM: uvicorn shuts down gracefully, the lifespan closes the broker
    uvicorn.run(make_app(p), host="127.0.0.1", port=p["port"], log_level="warning",
                access_log=False, loop="uvloop", http="httptools")


if __name__ == "__main__":
    main()
