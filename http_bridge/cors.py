"""CORS: which other origins' pages may call the bridge from a browser, and with what.

Off unless ``cors_allowed_origins`` lists origins; then an aiohttp middleware wraps every
route (gateway, SOAP, ``/healthz`` and friends):

* A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is
  answered here, before credentials are looked at (a browser sends none with it) and
  without any RPC: 204 with ``Access-Control-Allow-Origin/-Methods/-Headers/-Max-Age``
  when the origin is allowed, the path is a route, the route has the method and every
  requested header is allowed; otherwise 403 (404 for no route) in the bridge's usual
  JSON error shape, naming what was refused.
* Every other answer (errors included: 401, 404, 429, 5xx...) to an allowed origin
  carries ``Access-Control-Allow-Origin`` and ``Access-Control-Expose-Headers`` (so a
  page can read ``Retry-After``, ``X-Request-Id``...). A request from an origin not
  listed is served as before, without CORS headers: the browser then hides the answer
  from the page. With CORS on, every answer has ``Vary: Origin`` (it depends on it).

Why not aiohttp-cors: it configures CORS per aiohttp route, and the bridge has one
catch-all route whose real table (``RouteTable``) follows the registry at run time; it
answers preflights with its own plain-text errors; and it cannot put the headers on
answers the gateway builds for errors in the shape above. The rules fit in this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict

from .errors import ApiError, error_body
from .gateway import Gateway
from .settings import BridgeSettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Request headers the bridge itself reads: allowed whatever the settings say.
BRIDGE_REQUEST_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "SOAPAction", "X-API-Key")
# Headers a page may send without being listed (Fetch: CORS-safelisted request headers).
_SAFELISTED = frozenset({"accept", "accept-language", "content-language", "content-type", "range"})
# Answer headers a page may read besides the safelisted ones (Content-Type, ...).
EXPOSED_HEADERS = ("Allow", "Idempotent-Replayed", "Retry-After", "WWW-Authenticate", "X-Request-Id")


@dataclass(frozen=True)
class CorsPolicy:
    """What the settings allow; the decisions are pure functions of a request's headers."""

    origins: frozenset[str]  # normalised by BridgeSettings; {"*"}: any origin
    allowed_headers: tuple[str, ...]
    max_age: int
    allow_credentials: bool

    @classmethod
    def from_settings(cls, settings: BridgeSettings) -> CorsPolicy | None:
        """None when no origin is configured: CORS off, answers exactly as without it."""
        if not settings.cors_allowed_origins:
            return None
        headers: list[str] = []
        for name in (*BRIDGE_REQUEST_HEADERS, *settings.cors_allowed_headers):
            if name.lower() not in {h.lower() for h in headers}:
                headers.append(name)
        return cls(frozenset(settings.cors_allowed_origins), tuple(headers), settings.cors_max_age,
                   settings.cors_allow_credentials)

    def allows(self, origin: str) -> bool:
        return "*" in self.origins or origin.lower() in self.origins

    def answer_headers(self, origin: str | None) -> dict[str, str]:
        """The CORS headers of an ordinary answer (not a preflight) to ``origin``."""
        if origin is None or not self.allows(origin):
            return {}
        headers = {"Access-Control-Allow-Origin": "*" if "*" in self.origins else origin,
                   "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS)}
        if self.allow_credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers

    def preflight(self, origin: str, method: str, requested: str, route_methods: tuple[str, ...],
                  path: str) -> dict[str, str]:
        """The headers of a 204 preflight answer; ApiError 403 naming what is not allowed."""
        if not self.allows(origin):
            raise ApiError(403, "cors_origin_not_allowed",
                           f"origin {origin[:200]!r} may not call this API from a browser")
        if method not in route_methods:
            raise ApiError(403, "cors_method_not_allowed",
                           f"{method[:20]} is not allowed on {path[:200]}; "
                           f"allowed: {', '.join(route_methods)}")
        allowed = {name.lower() for name in self.allowed_headers} | _SAFELISTED
        refused = [name for name in (part.strip().lower() for part in requested.split(","))
                   if name and name not in allowed]
        if refused:
            raise ApiError(403, "cors_header_not_allowed",
                           f"request headers not allowed: {', '.join(refused)[:300]}; "
                           f"allowed: {', '.join(self.allowed_headers)}")
        headers = self.answer_headers(origin)
        del headers["Access-Control-Expose-Headers"]  # meaningless on a preflight
        headers["Access-Control-Allow-Methods"] = ", ".join(route_methods)
        headers["Access-Control-Allow-Headers"] = ", ".join(self.allowed_headers)
        headers["Access-Control-Max-Age"] = str(self.max_age)
        return headers


def is_preflight(request: web.Request) -> bool:
    return (request.method == "OPTIONS" and "Origin" in request.headers
            and "Access-Control-Request-Method" in request.headers)


def cors_middleware(policy: CorsPolicy, gateway: Gateway,
                    methods_for: Callable[[str], tuple[str, ...] | None]) -> Middleware:
    """The middleware; ``methods_for(raw_path)`` names the methods a path has (None: no route)."""

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if is_preflight(request):
            response: web.StreamResponse = _preflight(request, policy, gateway, methods_for)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # aiohttp's own answers get the headers too
                _decorate(exc.headers, policy.answer_headers(origin))
                raise
            _decorate(response.headers, policy.answer_headers(origin))
        return response

    return cors


def _preflight(request: web.Request, policy: CorsPolicy, gateway: Gateway,
               methods_for: Callable[[str], tuple[str, ...] | None]) -> web.Response:
    started = time.perf_counter()
    request_id = gateway.new_request_id()
    origin = request.headers["Origin"]
    path = request.rel_url.raw_path
    try:
        gateway.check_headers(request)
        methods = methods_for(path)
        if methods is None:
            raise ApiError(404, "not_found", f"no route for {path[:200]}")
        headers = policy.preflight(origin, request.headers["Access-Control-Request-Method"],
                                   request.headers.get("Access-Control-Request-Headers", ""), methods, path)
        response = web.Response(status=204)
    except ApiError as error:
        headers = policy.answer_headers(origin)
        headers.update({name: value for name, value in error.headers.items() if name != "Connection"})
        response = web.Response(status=error.status, content_type="application/json",
                                body=json.dumps(error_body(error, request_id)).encode())
        if "Connection" in error.headers:
            response.force_close()
    _decorate(response.headers, headers)
    return gateway.finish(request, response, request_id, "preflight", started)


def _decorate(target: CIMultiDict[str], headers: dict[str, str]) -> None:
    """Add ``headers`` and ``Vary: Origin`` (kept with any Vary already there)."""
    target.update(headers)
    vary = [part.strip() for part in target.get("Vary", "").split(",") if part.strip()]
    if "origin" not in {part.lower() for part in vary} and "*" not in vary:
        target["Vary"] = ", ".join([*vary, "Origin"])
