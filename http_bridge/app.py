"""``create_app``: the aiohttp application. No module-level state: everything hangs off the app.

::

    app = create_app(Config.load())           # owns its AsyncRpcClient and ServiceRegistry
    web.run_app(app, port=8000)

    app = create_app(config, rpc_client=client, registry=registry)   # tests: bring your own

What the app opens it closes (its cleanup context); an ``rpc_client`` or ``registry``
passed in belongs to the caller, who starts and stops it. Besides the routes the services
announce, the bridge serves ``/healthz`` (the process answers), ``/readyz`` (broker
connected, not blocked, registry complete), ``/metrics`` (Prometheus), ``/openapi.json``,
``/asyncapi.json`` (AsyncAPI 3.0 of the live services) and ``/docs`` (a page that renders
the OpenAPI, with no external assets), and with ``dashboard`` on, ``/dashboard``
(``http_bridge.dashboard``); ``/soap/<service>`` is the SOAP 1.1 front end
(``http_bridge.soap``) over the same routes. With
``cors_allowed_origins`` set, a middleware (``http_bridge.cors``) answers CORS preflights
and adds CORS headers to every answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources

from aiohttp import web

from amqprpc import AsyncRpcClient, Config, DecodeLimits, ServiceRegistry

from .asyncapi import asyncapi_response
from .auth import Authenticator
from .connections import ConnectionGate
from .cors import CorsPolicy, cors_middleware
from .dashboard import Dashboard
from .errors import ApiError, error_body
from .gateway import Gateway
from .openapi import build_openapi, listed_by
from .settings import BridgeSettings
from .soap import SOAP_PREFIX, SoapEndpoint
from .token_endpoint import TokenEndpoint
from .websocket import WS_PATH, WebSocketEndpoint
from .ws_events import EventHub

GATEWAY = web.AppKey("gateway", Gateway)
CONNECTIONS = web.AppKey("connections", ConnectionGate)  # counted by server.start_server

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    config: Config | None = None,
    rpc_client: AsyncRpcClient | None = None,
    *,
    registry: ServiceRegistry | None = None,
    settings: BridgeSettings | None = None,
) -> web.Application:
    """Build the bridge. Auth material (key file, JWT key) is loaded now: a bad one raises here."""
    config = config or Config.load()
    settings = settings or BridgeSettings.from_config(config)
    gateway = Gateway(settings, Authenticator.from_settings(settings), DecodeLimits.from_config(config))
    ops: dict[str, Handler] = {
        "/healthz": _healthz,
        "/readyz": _readyz,
        "/metrics": _metrics,
        "/openapi.json": _openapi,
        "/asyncapi.json": _asyncapi,
        "/docs": _docs,
    }
    if settings.websocket:  # /ws: calls and event subscriptions (http_bridge.websocket)
        hub = EventHub(config, max_queued=settings.ws_event_queue_max, name="http-bridge-events")
        websocket = WebSocketEndpoint(gateway, hub)
        ops[WS_PATH] = websocket.handle
        ops["/realtime/"] = _realtime_page
    tokens = TokenEndpoint.for_gateway(gateway)  # None unless token_signing_key_file is set

    def methods_for(raw_path: str) -> tuple[str, ...] | None:
        """What a CORS preflight may ask for on ``raw_path`` (None: no such route)."""
        if raw_path in ops:
            return ("GET", "HEAD")
        if tokens is not None and tokens.methods(raw_path) is not None:
            return tokens.methods(raw_path)
        if settings.soap and raw_path.startswith(SOAP_PREFIX):
            return ("GET", "HEAD", "POST")
        return gateway.table().verbs(raw_path)

    policy = CorsPolicy.from_settings(settings)
    middlewares = [cors_middleware(policy, gateway, methods_for)] if policy is not None else []
    if config.tracing:  # first: the span covers CORS and everything after it
        from .tracing import tracing_middleware
        middlewares = [tracing_middleware, *middlewares]
    app = web.Application(client_max_size=settings.max_body_size, middlewares=middlewares)
    app[GATEWAY] = gateway
    app[CONNECTIONS] = ConnectionGate(settings.max_connections)
    app.cleanup_ctx.append(_lifespan(gateway, config, rpc_client, registry))
    if settings.websocket:
        app.on_shutdown.append(lambda app: websocket.close_all())  # 1001 to every socket
        app.on_cleanup.append(lambda app: hub.stop())

    soap = SoapEndpoint(gateway)
    dashboard = Dashboard(gateway) if settings.dashboard else None

    async def dispatch(request: web.Request) -> web.StreamResponse:
        if tokens is not None and request.path in tokens.routes:
            return await tokens.handle(request)
        handler = ops.get(request.path)
        if handler is None:
            if dashboard is not None and dashboard.handles(request.path):
                return await dashboard.handle(request)
            if settings.soap and request.path.startswith(SOAP_PREFIX):
                return await soap.handle(request)
            return await gateway.handle(request)
        if request.method not in ("GET", "HEAD"):
            error = ApiError(405, "method_not_allowed", f"{request.method} is not allowed here; use GET")
            response = web.json_response(error_body(error, "-"), status=405)
            response.headers["Allow"] = "GET, HEAD"
            return response
        return await handler(request)

    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


def _lifespan(gateway: Gateway, config: Config, rpc_client: AsyncRpcClient | None,
              registry: ServiceRegistry | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        own_client = rpc_client is None
        own_registry = registry is None
        gateway.rpc = rpc_client or AsyncRpcClient(config=config, name=f"http-bridge-{id(app):x}")
        gateway.metrics.watch_client(gateway.rpc)
        gateway.registry = registry or ServiceRegistry(config)
        resilience = getattr(gateway.rpc, "resilience", None)  # None: off, or a test double
        if resilience is not None:  # retries learn @rpc(idempotent=True) from the descriptors
            resilience.lookups.append(gateway.registry.is_idempotent)
        loop = asyncio.get_running_loop()
        try:
            if own_client:
                await gateway.rpc.start()
            if own_registry:
                await loop.run_in_executor(None, gateway.registry.start)
            yield
        finally:
            if own_registry:
                await loop.run_in_executor(None, gateway.registry.stop)
            if own_client:
                await gateway.rpc.stop()

    return lifespan


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    rpc, registry = gateway.rpc, gateway.registry
    checks = {
        "broker": bool(rpc and rpc.is_connected),
        "not_blocked": bool(rpc and not rpc.blocked_reason),
        "registry": bool(registry and registry.ready),
    }
    ready = all(checks.values())
    return web.json_response({"status": "ready" if ready else "not ready", "checks": checks,
                              "routes": len(gateway.table().routes)}, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    text = request.app[GATEWAY].metrics.render() + request.app[CONNECTIONS].render()
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def _openapi(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    registry = gateway.registry
    spec = build_openapi(gateway.table(), live=registry.is_live if registry else lambda service: False,
                         listed=listed_by(registry), expected_status=gateway.settings.expected_error_status)
    return web.Response(text=json.dumps(spec, indent=1), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


async def _asyncapi(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    return asyncapi_response(gateway.registry, gateway.settings.services)


async def _docs(request: web.Request) -> web.Response:
    page = resources.files(__package__).joinpath("docs.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers={
        "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                   "style-src 'unsafe-inline'; connect-src 'self'",
        "X-Content-Type-Options": "nosniff",
    })


async def _realtime_page(request: web.Request) -> web.Response:
    """The live events page (http_bridge/realtime/index.html): opens /ws, shows what arrives."""
    page = resources.files(__package__).joinpath("realtime", "index.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers={
        "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                   "style-src 'unsafe-inline'; connect-src 'self'",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    })
