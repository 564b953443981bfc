"""``/auth/token``, ``/auth/revoke``, ``/auth/me`` and ``/.well-known/jwks.json``: the bridge as issuer.

On when ``token_signing_key_file`` is set. Passwords and refresh tokens live in the
``auth`` service (``token_service``; ``services/auth.py``); the bridge signs the access
tokens with its own key (``signing_keys``), so no service ever holds it.

* ``POST /auth/token`` (RFC 6749 §4.3 and §6; form-encoded, or JSON): ``grant_type=password``
  with ``username``/``password``, or ``grant_type=refresh_token`` with ``refresh_token``.
  200 ``{"access_token", "token_type": "Bearer", "expires_in", "refresh_token"}``; errors
  are 400 ``{"error": "invalid_request" | "invalid_grant" | "unsupported_grant_type",
  "error_description"}`` (§5.2). A wrong password and an unknown user give the same
  answer, after the same work (the service hashes a dummy). Failed logins count per
  account and per client address (``token_failure_limit`` per ``token_failure_window``):
  past either, 429 ``too_many_attempts`` with ``Retry-After`` before the service is asked.
* ``POST /auth/revoke`` (RFC 7009): ``token`` = a refresh token, or an access token (its
  family is revoked: no refresh works again; the access token itself ends at its ``exp``,
  at most ``token_access_ttl`` later). Always 200, whether the token was known or not.
* ``GET /auth/me``: who the credentials sent prove (any kind the bridge accepts).
* ``GET /.well-known/jwks.json``: the public key, for other gateways and services.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from amqprpc import IdentityRefused, RpcTimeout, ServiceUnavailable, UnknownService

from .auth_failures import AuthFailureBrake
from .errors import ApiError, error_body
from .gateway import Gateway
from .limits import read_body
from .signing_keys import SigningKey

_log = logging.getLogger(__name__)

MAX_TOKEN_REQUEST = 16 * 1024
_FORM = "application/x-www-form-urlencoded"
_NO_CACHE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer."""

    def __init__(self, error: str, description: str, status: int = 400,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status
        self.headers = headers or {}


class TokenEndpoint:
    """The four routes; owns the failed-login brakes of one process."""

    def __init__(self, gateway: Gateway, key: SigningKey) -> None:
        self.gateway = gateway
        self.key = key
        settings = gateway.settings
        self.settings = settings
        window, limit = settings.token_failure_window, settings.token_failure_limit
        self.by_address = AuthFailureBrake(limit, window, settings.auth_failure_max_addresses)
        self.by_account = AuthFailureBrake(limit, window, settings.auth_failure_max_addresses)
        self.routes: dict[str, tuple[tuple[str, ...], Callable[[web.Request], Awaitable[web.Response]]]] = {
            "/auth/token": (("POST",), self._token),
            "/auth/revoke": (("POST",), self._revoke),
            "/auth/me": (("GET", "HEAD"), self._me),
            "/.well-known/jwks.json": (("GET", "HEAD"), self._jwks),
        }

    @classmethod
    def for_gateway(cls, gateway: Gateway) -> TokenEndpoint | None:
        """The endpoint when the bridge has a signing key (its verifier loaded it), else None."""
        verifier = gateway.auth.jwt
        key = verifier.local if verifier is not None else None
        return cls(gateway, key) if key is not None else None

    def methods(self, path: str) -> tuple[str, ...] | None:
        entry = self.routes.get(path)
        return entry[0] if entry else None

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        request_id = self.gateway.new_request_id()
        methods, handler = self.routes[request.path]
        try:
            if request.method not in methods:
                raise ApiError(405, "method_not_allowed", f"{request.method} is not allowed here; use "
                               f"{methods[0]}", headers={"Allow": ", ".join(methods)})
            response = await handler(request)
        except OAuthError as error:
            response = web.json_response({"error": error.error, "error_description": error.description},
                                         status=error.status, headers={**_NO_CACHE, **error.headers})
        except ApiError as error:
            response = web.json_response(error_body(error, request_id), status=error.status,
                                         headers=error.headers)
        except Exception:
            _log.exception("request %s failed inside the token endpoint", request_id)
            failure = ApiError(500, "internal_error", "the bridge failed; see its log for this request id")
            response = web.json_response(error_body(failure, request_id), status=500)
        return self.gateway.finish(request, response, request_id, f"auth {request.path}", started)

    # ------------------------------------------------------------ routes

    async def _token(self, request: web.Request) -> web.Response:
        client = self.gateway.client_address(request)
        self.gateway.rate.check(f"ip:{client}")
        params = await _parameters(request, self.settings.body_timeout)
        grant = params.get("grant_type")
        if not grant:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant == "password":
            username, password = params.get("username"), params.get("password")
            if not username or not password:
                raise OAuthError("invalid_request", "username and password are required")
            granted = await self._braked(client, f"user:{username}", "login",
                                         {"username": username, "password": password})
        elif grant == "refresh_token":
            token = params.get("refresh_token")
            if not token:
                raise OAuthError("invalid_request", "refresh_token is required")
            granted = await self._braked(client, None, "refresh", {"refresh_token": token})
        else:
            raise OAuthError("unsupported_grant_type", "grant_type must be password or refresh_token")
        ttl = self.settings.token_access_ttl
        access = self.key.issue(granted["principal"], granted["roles"], ttl=ttl, session=granted["family"],
                                roles_claim=self.settings.jwt_roles_claim)
        return web.json_response({"access_token": access, "token_type": "Bearer", "expires_in": int(ttl),
                                  "refresh_token": granted["refresh_token"]}, headers=_NO_CACHE)

    async def _revoke(self, request: web.Request) -> web.Response:
        client = self.gateway.client_address(request)
        self.gateway.rate.check(f"ip:{client}")
        params = await _parameters(request, self.settings.body_timeout)
        token = params.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        session = self._session_of(token)
        if session is not None:
            await self._call("revoke", {"family": session})
        else:
            await self._call("revoke", {"refresh_token": token})
        return web.Response(status=200, headers=_NO_CACHE)

    async def _me(self, request: web.Request) -> web.Response:
        auth = self.gateway.auth
        client = self.gateway.client_address(request)
        identity = auth.authorize(await auth.identify(request.headers, client=client), public=False, roles=())
        if identity.method == "anonymous":
            raise ApiError(401, "unauthorized", "authentication required",
                           headers={"WWW-Authenticate": 'Bearer realm="amqprpc"'})
        return web.json_response({"principal": identity.principal, "roles": sorted(identity.roles),
                                  "method": identity.method}, headers=_NO_CACHE)

    async def _jwks(self, request: web.Request) -> web.Response:
        response = web.json_response(self.key.jwks())
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    # ------------------------------------------------------------ inside

    async def _braked(self, client: str, account: str | None, method: str,
                      kwargs: dict[str, str]) -> dict[str, Any]:
        """Call the service under the failed-login brakes: charged first, refunded unless refused."""
        charged: list[tuple[AuthFailureBrake, str]] = []
        try:
            for brake, key in ((self.by_address, client), (self.by_account, account)):
                if key is not None:
                    brake.charge(key)
                    charged.append((brake, key))
        except ApiError as error:
            for brake, key in charged:
                brake.refund(key)  # refused here: this attempt cost the service nothing
            raise OAuthError("too_many_attempts", error.message, status=429, headers=error.headers) from None
        refused = False
        try:
            granted = await self._call(method, kwargs)
        except OAuthError as error:
            refused = error.error == "invalid_grant"
            raise
        finally:
            if not refused:
                for brake, key in charged:
                    brake.refund(key)
        if not _is_grant(granted):
            raise ApiError(502, "bad_gateway", f"{self.settings.token_service}.{method} answered no grant")
        return granted  # type: ignore[no-any-return]

    async def _call(self, method: str, kwargs: dict[str, Any]) -> Any:
        gateway = self.gateway
        service = self.settings.token_service
        try:
            gateway.check_available(service)
        except ApiError as error:
            raise OAuthError("temporarily_unavailable", error.message, status=503,
                             headers={"Retry-After": "1"}) from None
        assert gateway.rpc is not None
        context = {"call_id_stack": [f"http_bridge.request.{gateway.new_request_id()}"]}
        try:
            deadline = self.settings.deadline_for(service, method)
            return await gateway.rpc.call(service, method, _timeout=deadline, _context=context, **kwargs)
        except (UnknownService, ServiceUnavailable, RpcTimeout) as exc:
            raise OAuthError("temporarily_unavailable", f"the {service} service did not answer: "
                             f"{type(exc).__name__}", status=503, headers={"Retry-After": "1"}) from None
        except IdentityRefused as exc:
            _log.error("%s.%s refused the bridge's identity (is identity_key set for the bridge?): %s",
                       service, method, exc)
            raise ApiError(500, "internal_error", "the bridge is misconfigured; see its log") from None
        except Exception as exc:
            if _remote_type(exc) == "InvalidGrant":
                description = "invalid username or password" if method == "login" else _remote_message(exc)
                raise OAuthError("invalid_grant", description) from None
            raise

    def _session_of(self, token: str) -> str | None:
        """The family (``sid``) of an access token this bridge signed, even expired; else None."""
        if token.count(".") != 2:
            return None
        try:
            claims = self.key.decode(token, verify_exp=False)
        except Exception:
            return None
        session = claims.get("sid")
        return session if isinstance(session, str) else None


async def _parameters(request: web.Request, timeout: float) -> dict[str, str]:
    """The request's parameters, form-encoded or JSON; each at most once (RFC 6749 §3.2)."""
    data = await read_body(request, MAX_TOKEN_REQUEST, timeout)
    if request.content_type == _FORM:
        try:
            pairs = parse_qsl(data.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(data),
                              max_num_fields=20)
        except (UnicodeDecodeError, ValueError) as exc:
            raise OAuthError("invalid_request", f"the form does not parse: {exc}") from None
    elif request.content_type == "application/json":
        try:
            loaded = json.loads(data) if data else {}
        except (UnicodeDecodeError, ValueError):
            raise OAuthError("invalid_request", "the body is not JSON") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise OAuthError("invalid_request", "the JSON body must be an object of strings")
        pairs = list(loaded.items())
    else:
        raise OAuthError("invalid_request", f"send {_FORM} or application/json, not "
                         f"{request.content_type or 'untyped'}")
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise OAuthError("invalid_request", f"{name} is given more than once")
        params[name] = value
    return params


def _remote_type(exc: BaseException) -> str:
    """The handler's exception name, whether it came back as a RemoteError or rebuilt."""
    return str(getattr(exc, "exc_type", "") or type(exc).__name__)


def _remote_message(exc: BaseException) -> str:
    return str(getattr(exc, "value", "") or exc)


def _is_grant(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("principal"), str)
            and isinstance(value.get("roles"), list) and isinstance(value.get("refresh_token"), str)
            and isinstance(value.get("family"), str))
