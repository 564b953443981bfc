"""The operators' page: ``GET /dashboard`` and its data, ``GET /dashboard/state.json``.

Off unless ``bridge.dashboard = true``. The page is three static files of this package
(``static/``: HTML, CSS, JS; no CDN, nothing fetched from elsewhere) that poll
``state.json`` every two seconds (``state.py`` builds it from discovery). ``state.json``,
which holds every number, needs credentials with one of ``bridge.dashboard_roles``
(``admin`` by default), checked by the bridge's own ``Authenticator`` like a route's roles;
``allow_anonymous`` never opens it. The static shell holds no data and is served without
credentials: a browser cannot send ``X-API-Key`` on a navigation, so the page asks for a key
or token when ``state.json`` answers 401/403.
"""

from __future__ import annotations

import json
from importlib import resources

from aiohttp import web

from ..errors import ApiError, error_body
from ..gateway import Gateway
from .state import QueueDepths, build_state

PREFIX = "/dashboard"
ASSETS = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


class Dashboard:
    """Serves ``/dashboard``, its assets and ``state.json`` for one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.depths = QueueDepths()

    def handles(self, path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            error = ApiError(405, "method_not_allowed", f"{request.method} is not allowed here; use GET")
            response = web.json_response(error_body(error, "-"), status=405)
            response.headers["Allow"] = "GET, HEAD"
            return response
        name = request.path[len(PREFIX):].lstrip("/")
        if name in ("", "index.html"):
            return _static("index.html", "text/html")
        if name in ASSETS:
            return _static(name, ASSETS[name])
        if name != "state.json":
            return web.json_response(error_body(ApiError(404, "not_found", "no such dashboard file"), "-"),
                                     status=404)
        try:
            await self._authorize(request)
        except ApiError as error:
            return web.json_response(error_body(error, "-"), status=error.status,
                                     headers={**_HEADERS, **error.headers})
        state = await build_state(self.gateway.registry, self.depths)
        return web.Response(text=json.dumps(state), content_type="application/json", headers=_HEADERS)

    async def _authorize(self, request: web.Request) -> None:
        gateway = self.gateway
        identity = await gateway.auth.identify(request.headers, client=gateway.client_address(request))
        if identity is None:  # allow_anonymous never opens the dashboard
            raise ApiError(401, "unauthorized", "the dashboard needs credentials",
                           headers={"WWW-Authenticate": 'Bearer realm="amqprpc"'})
        gateway.auth.authorize(identity, public=False, roles=gateway.settings.dashboard_roles)


def _static(name: str, content_type: str) -> web.Response:
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=_HEADERS)
