"""One request through the gateway, in order::

    headers checked (431/400) -> route matched (404/405) -> credentials (401) -> roles (403)
    -> rate limit (429) -> service live? broker up? (503, at once) -> body read (413/408/415)
    -> in-flight cap (503) -> body parsed within the decode limits (400/413)
    -> arguments bound and validated (422) -> Idempotency-Key (replay/409/422)
    -> RPC call with the route's deadline (504) -> JSON answer

The in-flight cap admits a request before its body is parsed: what parsed bodies hold in
memory is bounded by ``max_inflight`` x the decode limits, not by how many clients send.

Identity reaches the service only as the context the bridge sets itself (``user_id``,
``roles``, ``idempotency_key`` -- a digest of the scoped key, not the client's --,
``call_id_stack``); no client header is passed on but those ``context_headers`` lists, each
as the context key it names (never one the bridge sets or a worker trusts: settings.py
refuses them). A call is never retried by the bridge.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from amqprpc import AsyncRpcClient, DecodeLimits, ServiceRegistry
from amqprpc.discovery import MethodDescriptor

from .adaptive_concurrency import adaptive_limit
from .adaptive_concurrency import admitted as adaptive_admitted
from .auth import Authenticator, Identity
from .client_address import ClientAddresses
from .errors import ApiError, ErrorContext, error_body, map_error
from .idempotency import IdempotencyCache, StoredResponse, scope_of, service_key
from .limits import InflightGate, RateLimiter, read_json_bytes
from .metrics import BridgeMetrics
from .params import bind_arguments, parse_json_body
from .routing import Route, RouteTable
from .settings import BridgeSettings

MAX_CONTEXT_HEADER = 256  # characters of a forwarded header: a key to hash, not a payload
_log = logging.getLogger("http_bridge")

JSON_TYPE = "application/json"
_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


class Gateway:
    """The request pipeline; owns the limiters, caches and metrics of one process."""

    def __init__(self, settings: BridgeSettings, authenticator: Authenticator,
                 decode_limits: DecodeLimits | None = None) -> None:
        self.settings = settings
        self.decode_limits = (decode_limits or DecodeLimits()).replace(max_size=settings.max_body_size)
        self.auth = authenticator
        self.rpc: AsyncRpcClient | None = None
        self.registry: ServiceRegistry | None = None
        self.rate = RateLimiter(settings.rate_limit, settings.rate_burst, settings.rate_limit_max_keys)
        self.inflight = InflightGate(settings.max_inflight)
        self.idempotency = IdempotencyCache(settings.idempotency_ttl, settings.idempotency_max_entries)
        self.metrics = BridgeMetrics(lambda: self.inflight.count)
        self.adaptive = adaptive_limit(settings)  # None: off
        if self.adaptive is not None:
            self.metrics.watch_adaptive(self.adaptive)
        self._addresses = ClientAddresses(settings.trusted_proxies)
        self._table = RouteTable()
        # Request ids: unique per process and cheap (uuid4 costs a urandom syscall each).
        self._id_prefix = secrets.token_hex(6)
        self._ids = itertools.count(1)

    # ------------------------------------------------------------ routes

    def table(self) -> RouteTable:
        """The route table for the registry's current generation (rebuilt when it changed)."""
        registry = self.registry
        if registry is None:
            return self._table
        generation = registry.generation
        if generation != self._table.generation:
            self._table = RouteTable.build(registry.services(), generation=generation,
                                           allowed=self.settings.services,
                                           deadline_for=self.settings.deadline_for)
            _log.info("route table: %d routes (registry generation %d)", len(self._table.routes), generation)
        return self._table

    # ------------------------------------------------------------ the pipeline

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = self.new_request_id()
        label = "unmatched"
        try:
            self.check_headers(request)
            route, path_params = self.table().match(request.method, request.rel_url.raw_path)
            label = route.label
            response = await self._call(request, request_id, route, path_params)
        except ApiError as error:
            response = self._error_response(error, request_id)
        except Exception as exc:  # a bug in the bridge: the client gets an id, the log gets the rest
            _log.exception("request %s failed inside the bridge", request_id)
            response = self._error_response(map_error(exc), request_id)
        return self.finish(request, response, request_id, label, started)

    def new_request_id(self) -> str:
        """Unique per process and cheap (uuid4 costs a urandom syscall each)."""
        return f"{self._id_prefix}{next(self._ids):08x}"

    def finish(self, request: web.Request, response: web.Response, request_id: str, label: str,
               started: float) -> web.Response:
        """What every answer gets, whatever front end made it (REST or SOAP): id, headers, metrics."""
        response.headers["X-Request-Id"] = request_id
        response.headers.update(_SECURITY_HEADERS)
        if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
            response.force_close()  # the header-deadline guard cannot follow a chunked body
        if "Upgrade" in request.headers:
            response.force_close()  # nor a connection that asked to leave HTTP (only /ws may)
        self.metrics.observe(label, response.status, time.perf_counter() - started)
        return response

    async def _call(self, request: web.Request, request_id: str, route: Route,
                    path_params: dict[str, str]) -> web.Response:
        client = self.client_address(request)
        identity = self.auth.authorize(await self.auth.identify(request.headers, client=client),
                                       public=route.public, roles=route.roles)
        self.rate.check(identity.principal or f"ip:{client}")
        self.check_available(route.service)
        data = await read_json_bytes(request, self.settings.max_body_size, self.settings.body_timeout)
        with self.admitted():
            body = None if data is None else parse_json_body(data, self.decode_limits)
            kwargs = bind_arguments(route.method, path_params, list(request.rel_url.query.items()), body)
            return await self._answer(request, request_id, route, kwargs, body, identity, client)

    async def _answer(self, request: web.Request, request_id: str, route: Route, kwargs: dict[str, Any],
                      body: dict[str, Any] | None, identity: Identity, client: str) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return await self._invoke(route, kwargs, identity, request_id, None, request.headers)
        fingerprint = IdempotencyCache.fingerprint(
            request.method, str(request.rel_url), json.dumps(body, sort_keys=True).encode())
        scope = scope_of(identity, client)
        stored = self.idempotency.begin(scope, key, fingerprint)
        if stored is not None:
            response = web.Response(status=stored.status, body=stored.body, content_type=stored.content_type)
            response.headers["Idempotent-Replayed"] = "true"
            return response
        try:
            try:
                response = await self._invoke(route, kwargs, identity, request_id, service_key(scope, key),
                                              request.headers)
            except ApiError as error:
                response = self._error_response(error, request_id)
        except BaseException:
            self.idempotency.abandon(scope, key)
            raise
        assert isinstance(response.body, bytes)
        self.idempotency.finish(scope, key,
                                StoredResponse(response.status, response.body, JSON_TYPE))
        return response

    async def _invoke(self, route: Route, kwargs: dict[str, Any], identity: Identity, request_id: str,
                      idempotency_key: str | None, headers: Mapping[str, str]) -> web.Response:
        result = await self.call(route.service, route.method, kwargs, identity, request_id,
                                 deadline=route.deadline, service_errors=route.errors,
                                 idempotency_key=idempotency_key, headers=headers)
        return web.Response(body=_dumps(result), content_type=JSON_TYPE)

    async def call(self, service: str, method: MethodDescriptor, kwargs: dict[str, Any], identity: Identity,
                   request_id: str, *, deadline: float, service_errors: Mapping[str, int],
                   idempotency_key: str | None = None, headers: Mapping[str, str] | None = None) -> Any:
        """One RPC call with ``deadline``; failures as a mapped ApiError.

        The caller holds the in-flight cap (``admitted``) since before it parsed the body.
        The context carries the identity and a ``call_id_stack`` naming the request; of what
        the client sent, only the ``context_headers`` of ``headers`` (``check_headers``
        checked them). Shared by every front end (REST routes, SOAP operations, WebSocket).
        """
        assert self.rpc is not None
        context: dict[str, Any] = {}
        if headers is not None and self.settings.context_headers:
            context = self.forwarded_context(headers)
        context.update(identity.context())
        context["call_id_stack"] = [f"http_bridge.request.{request_id}"]
        if idempotency_key is not None:
            context["idempotency_key"] = idempotency_key
        try:
            return await self.rpc.call(service, method.name, _timeout=deadline, _context=context, **kwargs)
        except Exception as exc:
            error = map_error(exc, ErrorContext(service_errors, self.settings.error_statuses,
                                                method.expected, self.settings.expected_error_status,
                                                *_field_sources(method)))
            if error.status >= 500 and error.code not in ("service_overloaded", "circuit_open"):
                # shedding is by design; an open breaker was logged when it opened
                _log.warning("request %s: %s.%s failed: %s: %s", request_id, service,
                             method.name, type(exc).__name__, exc)
            raise error from None

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold a place under the in-flight cap (503 at once past it) for one request."""
        self.inflight.enter()
        try:
            if self.adaptive is None:
                yield
            else:
                with adaptive_admitted(self.adaptive):  # 503 at once past the adaptive limit
                    yield
        finally:
            self.inflight.leave()

    # ------------------------------------------------------------ checks

    def check_headers(self, request: web.Request) -> None:
        """400 for a header name with ``_``, 431 when all headers together are too large."""
        total = 0
        for name, value in request.raw_headers:
            total += len(name) + len(value) + 4
            if b"_" in name:
                raise ApiError(400, "invalid_header",
                               f"header names with underscores are refused: {name.decode('latin-1')!r}")
        if total > self.settings.max_headers_total:
            raise ApiError(431, "headers_too_large",
                           f"the headers are {total} bytes; the limit is {self.settings.max_headers_total}",
                           headers={"Connection": "close"})
        if self.settings.context_headers:
            self.forwarded_context(request.headers)

    def forwarded_context(self, headers: Mapping[str, str]) -> dict[str, Any]:
        """The ``context_headers`` a request carries, as context; 400 for a value that is too
        long (past 256 characters) or not printable, naming the header."""
        context: dict[str, Any] = {}
        for header, key in self.settings.context_headers.items():
            value = headers.get(header)
            if value is None:
                continue
            if len(value) > MAX_CONTEXT_HEADER or not value.isprintable():
                raise ApiError(400, "invalid_header",
                               f"header {header} must be printable and at most {MAX_CONTEXT_HEADER} "
                               f"characters (it travels on as context {key!r})")
            context[key] = value
        return context

    def check_available(self, service: str) -> None:
        """503 at once when the call cannot succeed: no live instance, no broker, alarm."""
        assert self.rpc is not None and self.registry is not None
        if not self.registry.is_live(service):
            raise ApiError(503, "service_unavailable", f"no running instance of {service}",
                           headers={"Retry-After": "1"})
        if not self.rpc.is_connected:
            raise ApiError(503, "broker_unavailable", "the message broker is not reachable",
                           headers={"Retry-After": "1"})
        if self.rpc.blocked_reason:
            raise ApiError(503, "broker_blocked", "the message broker refuses messages for now",
                           headers={"Retry-After": "5"})

    def client_address(self, request: web.Request) -> str:
        """The client's address; X-Forwarded-For counts only when a trusted proxy sent it."""
        return self._addresses.of(request)

    # ------------------------------------------------------------ answers

    def _error_response(self, error: ApiError, request_id: str) -> web.Response:
        response = web.Response(status=error.status, body=_dumps(error_body(error, request_id)),
                                content_type=JSON_TYPE)
        for name, value in error.headers.items():
            if name == "Connection":
                response.force_close()
            else:
                response.headers[name] = value
        return response


def _field_sources(method: MethodDescriptor) -> tuple[dict[str, str], str]:
    """Where each argument came from, to name a field the service refused (``body.order.qty``)."""
    if method.http is None:
        return {}, "body"
    return ({name: "path" for name in method.http.path_params},
            "body" if method.http.method in ("POST", "PUT", "PATCH") else "query")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str,
                      allow_nan=False).encode("utf-8")
