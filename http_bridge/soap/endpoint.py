"""``POST /soap/<service>`` and ``GET /soap/<service>?wsdl``: SOAP 1.1 on the gateway's machinery.

One request, in order (each step is the gateway's own, shared with REST routes)::

    headers checked -> service known? -> credentials sent are valid (a bad key never gets
    its body read) -> rate limit -> body read, bounded (size, time) -> in-flight cap
    -> XML parsed safely -> Envelope/Body -> operation known? SOAPAction agrees? -> roles
    -> service live? broker up? -> arguments decoded and validated -> Idempotency-Key
    -> RPC call with the operation's deadline -> reply envelope

Every error answer is a SOAP Fault with HTTP 500 (SOAP 1.1 §6.2; WS-I Basic Profile
R1126: a Fault is always a 500), so any SOAP toolkit raises it as a fault; what the REST
route would have answered (401, 429, 503...) is in the fault's ``detail`` and its code,
and the HTTP headers that go with it still go (``WWW-Authenticate``, ``Retry-After``,
``Connection: close``). Two answers are not SOAP at all: a wrong HTTP method (405) and a
body that is not ``text/xml`` (415), per WS-I R1114/R1115.

Metrics: ``route`` is ``SOAP <service>.<operation>`` (``GET /soap/<service>?wsdl`` for
the WSDL, ``unmatched`` before the operation is known), with the HTTP status answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from amqprpc.discovery import ServiceRegistry

from ..auth import Identity
from ..errors import INTERNAL, ApiError
from ..gateway import Gateway
from ..idempotency import IdempotencyCache, StoredResponse, scope_of, service_key
from ..limits import read_body
from .codec import ResultMismatch
from .envelope import operation_element, write_fault, write_reply
from .operations import SoapOperation, SoapService, build_catalog
from .safexml import XmlRefused, parse_xml
from .wsdl import build_wsdl

__all__ = ["SOAP_PREFIX", "SoapEndpoint"]

_log = logging.getLogger("http_bridge.soap")

SOAP_PREFIX = "/soap/"
XML_TYPE = "text/xml"
_ACCEPTED_TYPES = ("text/xml", "application/xml")
_PARSE_INLINE_BYTES = 32 * 1024  # larger envelopes are parsed on a thread, off the event loop


class SoapEndpoint:
    """The SOAP front end of one gateway; its catalog follows the registry's generation."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._catalog: dict[str, SoapService] = {}
        self._generation = -1

    def catalog(self) -> dict[str, SoapService]:
        """service -> operations, for the registry's current generation (rebuilt when it changed)."""
        registry: ServiceRegistry | None = self.gateway.registry
        if registry is None:
            return self._catalog
        generation = registry.generation
        if generation != self._generation:
            settings = self.gateway.settings
            self._catalog = build_catalog(registry.services(), allowed=settings.services,
                                          deadline_for=settings.deadline_for)
            self._generation = generation
        return self._catalog

    async def handle(self, request: web.Request) -> web.StreamResponse:
        gateway = self.gateway
        started = time.perf_counter()
        request_id = gateway.new_request_id()
        label = "unmatched"
        try:
            gateway.check_headers(request)
            name = unquote(request.rel_url.raw_path[len(SOAP_PREFIX):])
            service = self.catalog().get(name)
            if request.method in ("GET", "HEAD") and "wsdl" in {key.lower() for key in request.rel_url.query}:
                if service is None:
                    response = _plain(404, f"no SOAP service {name[:100]!r} here")
                else:
                    label = f"GET /soap/{service.name}?wsdl"
                    response = self._wsdl(request, service)
            elif request.method != "POST":
                response = _plain(405, "POST a SOAP 1.1 envelope here, or GET ?wsdl for the WSDL")
                response.headers["Allow"] = "GET, HEAD, POST"
            elif service is None:
                raise ApiError(404, "not_found", f"no SOAP service {name[:100]!r} here")
            elif request.content_type not in _ACCEPTED_TYPES:
                response = _plain(415, f"send a SOAP 1.1 envelope as text/xml, not "
                                       f"{request.content_type or 'untyped'}")
            else:
                label = f"SOAP {service.name}"
                label, response = await self._call(request, request_id, service)
        except ApiError as error:
            response = _fault_response(error, request_id)
        except Exception:  # a bug in the bridge: the client gets an id, the log gets the rest
            _log.exception("SOAP request %s failed inside the bridge", request_id)
            response = _fault_response(ApiError(*INTERNAL), request_id)
        return gateway.finish(request, response, request_id, label, started)

    # ------------------------------------------------------------ the call

    async def _call(self, request: web.Request, request_id: str,
                    service: SoapService) -> tuple[str, web.Response]:
        """(metrics label, answer); errors before the operation is known are raised."""
        gateway = self.gateway
        settings = gateway.settings
        client = gateway.client_address(request)
        identity = await gateway.auth.identify(request.headers, client=client)
        if identity is None and not service.any_public:
            gateway.auth.authorize(None, public=False, roles=())  # 401 before the body is read
        gateway.rate.check(identity.principal if identity else f"ip:{client}")
        body = await read_body(request, settings.max_body_size, settings.body_timeout)
        with gateway.admitted():  # parsed only once admitted: parsed envelopes are bounded too
            return await self._admitted(request, request_id, service, identity, body)

    async def _admitted(self, request: web.Request, request_id: str, service: SoapService,
                        identity: Identity | None, body: bytes) -> tuple[str, web.Response]:
        gateway = self.gateway
        settings = gateway.settings
        root = await _parse(body, settings.soap_max_depth, settings.soap_max_elements)
        element = operation_element(root)
        operation = service.operations.get(element.local)
        if operation is None or element.namespace not in (service.namespace, ""):
            raise ApiError(400, "operation_not_found",
                           f"{service.name} has no SOAP operation {{{element.namespace[:100]}}}"
                           f"{element.local[:100]}")
        label = f"SOAP {service.name}.{operation.name}"
        try:
            _check_action(request, operation)
            identity = gateway.auth.authorize(identity, public=operation.method.public,
                                              roles=operation.method.roles)
            gateway.check_available(service.name)
            kwargs = operation.decode_arguments(element)
            key = request.headers.get("Idempotency-Key")
            if key is None:
                response = await self._invoke(service, operation, kwargs, identity, request_id, None,
                                              request.headers)
            else:
                response = await self._idempotent(request, body, key, service, operation, kwargs,
                                                  identity, request_id)
        except ApiError as error:
            response = _fault_response(error, request_id)
        return label, response

    async def _invoke(self, service: SoapService, operation: SoapOperation, kwargs: dict[str, Any],
                      identity: Identity, request_id: str, key: str | None,
                      headers: Mapping[str, str]) -> web.Response:
        result = await self.gateway.call(service.name, operation.method, kwargs, identity, request_id,
                                         deadline=operation.deadline, service_errors=service.errors,
                                         idempotency_key=key, headers=headers)
        try:
            body = write_reply(service, operation, result)
        except ResultMismatch as exc:
            _log.warning("SOAP request %s: %s.%s returned a value its type hints do not allow (%s)",
                         request_id, service.name, operation.name, exc)
            raise ApiError(500, "invalid_result",
                           f"{service.name}.{operation.name} returned a value that does not fit its "
                           f"declared type ({exc.where}: {exc.problem})") from None
        return web.Response(body=body, content_type=XML_TYPE, charset="utf-8")

    async def _idempotent(self, request: web.Request, body: bytes, key: str, service: SoapService,
                          operation: SoapOperation, kwargs: dict[str, Any], identity: Identity,
                          request_id: str) -> web.Response:
        """As for REST routes; only a reply is kept (a fault is 500: the retry runs again)."""
        cache = self.gateway.idempotency
        fingerprint = IdempotencyCache.fingerprint("POST", str(request.rel_url), body)
        scope = scope_of(identity, self.gateway.client_address(request))
        stored = cache.begin(scope, key, fingerprint)
        if stored is not None:
            response = web.Response(status=stored.status, body=stored.body, content_type=XML_TYPE,
                                    charset="utf-8")
            response.headers["Idempotent-Replayed"] = "true"
            return response
        try:
            response = await self._invoke(service, operation, kwargs, identity, request_id,
                                          service_key(scope, key), request.headers)
        except BaseException:
            cache.abandon(scope, key)
            raise
        assert isinstance(response.body, bytes)
        cache.finish(scope, key, StoredResponse(response.status, response.body, XML_TYPE))
        return response

    # ------------------------------------------------------------ the WSDL

    def _wsdl(self, request: web.Request, service: SoapService) -> web.Response:
        location = f"{request.scheme}://{request.host}{SOAP_PREFIX}{service.name}"
        return web.Response(text=build_wsdl(service, location), content_type=XML_TYPE, charset="utf-8")


async def _parse(body: bytes, max_depth: int, max_elements: int) -> Any:
    try:
        if len(body) <= _PARSE_INLINE_BYTES:
            return parse_xml(body, max_depth=max_depth, max_elements=max_elements)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, lambda: parse_xml(body, max_depth=max_depth, max_elements=max_elements))
    except XmlRefused as exc:
        raise ApiError(400, f"xml_{exc.reason}", str(exc)) from None


def _check_action(request: web.Request, operation: SoapOperation) -> None:
    """SOAPAction, when sent, must name the operation in the Body (no action spoofing)."""
    action = request.headers.get("SOAPAction", "").strip().strip('"').strip()
    if action and action not in (operation.action, operation.name):
        raise ApiError(400, "soap_action_mismatch",
                       f"SOAPAction {action[:200]!r} does not match the operation in the Body "
                       f"({operation.action!r})")


def _fault_response(error: ApiError, request_id: str) -> web.Response:
    response = web.Response(status=500, body=write_fault(error, request_id), content_type=XML_TYPE,
                            charset="utf-8")
    for name, value in error.headers.items():
        if name == "Connection":
            response.force_close()
        else:
            response.headers[name] = value
    return response


def _plain(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain", charset="utf-8")

