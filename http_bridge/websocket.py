"""``GET /ws``: RPC calls and event subscriptions over one WebSocket (docs/realtime.md).

One socket, in order::

    headers checked (431/400) -> credentials in the headers? bad ones: HTTP 401, no upgrade
    -> upgrade (426 without one) -> no credentials: the first frame must be {"auth": ...}
       within ws_auth_timeout, else an error frame and close 4401
    -> {"hello": ...} -> frames, each answered by its id, many at once

A call frame goes through the gateway's own steps, as a request to its route would: route
(by ``service.method`` or ``VERB /path``, only methods exposed over HTTP), roles, rate
limit, service live, in-flight caps (the process's and the socket's), arguments validated,
the RPC with the route's deadline, errors in the bridge's one error shape. A subscription
is checked against the service's ``ws_events`` (``ws_events.rule_for``) and the socket's
roles, then fed by the ``EventHub``.

Memory per socket is bounded: frames up to ``ws_max_frame`` (an error frame past it, the
socket closed 1009 past four times that), ``ws_max_inflight`` calls, ``ws_max_subscriptions``
subscriptions, and an outbox of at most ``ws_send_buffer`` events plus the replies of the
calls in flight. A client that reads too slowly loses the newest events, counted in an
``events_dropped`` notice (or is closed 1008 with ``ws_slow_client = "disconnect"``); one
that does not read its replies either is closed 1008. Heartbeats are aiohttp's pings;
the bridge closes every socket with 1001 when it shuts down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy

from .auth import ANONYMOUS, API_KEY_HEADER, Identity
from .errors import INTERNAL, ApiError, error_body, map_error
from .gateway import Gateway
from .params import bind_arguments, parse_json_body
from .routing import Route, RouteTable
from .ws_events import EventHub, rule_for, split_event_key

__all__ = ["WS_PATH", "WebSocketEndpoint"]

_log = logging.getLogger("http_bridge.ws")

WS_PATH: Final = "/ws"
_OVERSIZE_FACTOR: Final = 4  # frames up to this x ws_max_frame get an error frame; larger ones close
_MAX_ID_LENGTH: Final = 64
_CONTROL_ROOM: Final = 32  # error frames and notices the outbox may hold besides events and replies
_EVENT, _REPLY, _CONTROL = 0, 1, 2
_AUTH_HINT: Final = '{"auth": {"token": "<JWT>"}} or {"auth": {"api_key": "<key>"}}'


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)


class WebSocketEndpoint:
    """The ``/ws`` front end of one gateway; holds its open sockets to close them at shutdown."""

    def __init__(self, gateway: Gateway, hub: EventHub) -> None:
        self.gateway = gateway
        self.hub = hub
        self.sessions: set[_Session] = set()
        self._names: tuple[RouteTable, dict[str, Route]] | None = None

    def route_named(self, name: str) -> Route:
        """The route of ``service.method`` (only methods exposed over HTTP); ApiError 404."""
        table = self.gateway.table()
        if self._names is None or self._names[0] is not table:
            self._names = (table, {f"{route.service}.{route.method.name}": route for route in table.routes})
        route = self._names[1].get(name)
        if route is None:
            raise ApiError(404, "method_not_found", f"no method {name[:100]!r} is exposed")
        return route

    async def handle(self, request: web.Request) -> web.StreamResponse:
        gateway = self.gateway
        request_id = gateway.new_request_id()
        settings = gateway.settings
        try:
            gateway.check_headers(request)
            client = gateway.client_address(request)
            identity = await gateway.auth.identify(request.headers, client=client)
            ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat, autoping=True,
                                       max_msg_size=_OVERSIZE_FACTOR * settings.ws_max_frame)
            if not ws.can_prepare(request).ok:
                raise ApiError(426, "upgrade_required", "GET /ws expects a WebSocket upgrade",
                               headers={"Upgrade": "websocket"})
        except ApiError as error:
            return _refusal(error, request_id)
        await ws.prepare(request)
        session = _Session(self, request, ws, client, identity)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
        return ws

    async def close_all(self) -> None:
        """Bridge shutdown: every socket closed with 1001 (going away)."""
        await asyncio.gather(*(session.close(WSCloseCode.GOING_AWAY, "the bridge is shutting down")
                               for session in tuple(self.sessions)), return_exceptions=True)


def _refusal(error: ApiError, request_id: str) -> web.Response:
    response = web.json_response(error_body(error, request_id), status=error.status)
    for name, value in error.headers.items():
        if name != "Connection":
            response.headers[name] = value
    response.force_close()  # never kept alive: the header-deadline guard stopped following it
    return response


class _Session:
    """One open socket: its identity, calls in flight, subscriptions and bounded outbox."""

    def __init__(self, endpoint: WebSocketEndpoint, request: web.Request, ws: web.WebSocketResponse,
                 client: str, identity: Identity | None) -> None:
        self.endpoint = endpoint
        self.gateway = endpoint.gateway
        self.settings = endpoint.gateway.settings
        self.request = request
        self.ws = ws
        self.client = client
        self.identity = identity
        self.subscriptions: set[str] = set()
        self.busy = 0  # calls and subscribes accepted whose answer is not written yet
        self.dropped_total = 0
        self._dropped = 0  # dropped since the last notice
        self._tasks: dict[str | int, asyncio.Task[None]] = {}
        self._outbox: deque[tuple[int, str]] = deque()
        self._events_queued = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._outbox_limit = self.settings.ws_send_buffer + self.settings.ws_max_inflight + _CONTROL_ROOM

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        first: str | None = None
        if self.identity is None:
            authenticated, first = await self._authenticate()
            if not authenticated:
                return
        writer = asyncio.create_task(self._write_loop())
        try:
            self._push(_CONTROL, _dumps({"hello": {
                "principal": self.identity.principal if self.identity else "",
                "max_inflight": self.settings.ws_max_inflight,
                "max_subscriptions": self.settings.ws_max_subscriptions,
                "max_frame": self.settings.ws_max_frame}}))
            if first is not None:
                self._on_text(first)
            async for message in self.ws:
                if message.type == WSMsgType.TEXT:
                    self._on_text(message.data)
                elif message.type == WSMsgType.BINARY:
                    self._push_error(None, ApiError(400, "text_frames_only", "send JSON in text frames"))
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            self._closing = True
            for task in self._tasks.values():
                task.cancel()
            writer.cancel()
            self.endpoint.hub.forget(self, self.subscriptions)
            if not self.ws.closed:
                await self._close_now(WSCloseCode.GOING_AWAY, "closing")

    async def close(self, code: int, reason: str) -> None:
        """Close from the bridge's side (shutdown, a client too slow); never blocks for long."""
        self._closing = True
        await self._close_now(code, reason)

    async def _close_now(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(1.0):
                await self.ws.close(code=code, message=reason.encode())
        except (TimeoutError, ConnectionError, RuntimeError):
            transport = self.request.transport
            if transport is not None:
                transport.abort()  # a client that reads nothing cannot receive a close frame either

    def _kick(self, why: str) -> None:
        if not self._closing:
            self._closing = True
            _log.info("closing the WebSocket of %s: %s", self.client, why)
            asyncio.get_running_loop().create_task(self._close_now(WSCloseCode.POLICY_VIOLATION, why))

    async def _authenticate(self) -> tuple[bool, str | None]:
        """(authenticated, a first frame to process as a normal one) for a socket without credentials."""
        auth = self.gateway.auth
        timeout = self.settings.ws_auth_timeout
        try:
            async with asyncio.timeout(timeout):
                message = await self.ws.receive()
        except TimeoutError:
            return await self._refuse(_unauthorized(f"no credentials: send {_AUTH_HINT} as the first "
                                                    f"frame, within {timeout:g}s")), None
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return False, None
        if message.type != WSMsgType.TEXT:
            return await self._refuse(_unauthorized("the first frame must be JSON text")), None
        try:
            frame = self._parse(message.data)
        except ApiError as error:
            return await self._refuse(error), None
        credentials = frame.get("auth")
        if credentials is None:
            if auth.allow_anonymous:
                self.identity = ANONYMOUS
                return True, message.data
            return await self._refuse(_unauthorized(f"authentication required: send {_AUTH_HINT} "
                                                    "as the first frame")), None
        try:
            identity = await auth.identify(_credential_headers(credentials), client=self.client)
        except ApiError as error:
            return await self._refuse(error), None
        if identity is None:
            empty = _unauthorized(f"the auth frame holds no credentials: {_AUTH_HINT}")
            return await self._refuse(empty), None
        self.identity = identity
        return True, None

    async def _refuse(self, error: ApiError) -> bool:
        """An error frame, then close 4000 + status (4401, 4429, 4503)."""
        try:
            await self.ws.send_str(_dumps({"id": None, **error_body(error, self.gateway.new_request_id())}))
        except ConnectionError:
            pass
        await self._close_now(4000 + error.status, error.code)
        return False

    # ------------------------------------------------------------ frames in

    def _parse(self, text: str) -> dict[str, Any]:
        data = text.encode("utf-8")
        if len(data) > self.settings.ws_max_frame:
            raise ApiError(413, "frame_too_large",
                           f"the frame is {len(data)} bytes; the limit is {self.settings.ws_max_frame}")
        try:
            return parse_json_body(data, self.gateway.decode_limits)
        except ApiError as error:
            if error.code == "invalid_json":
                error.message = error.message.replace("the body", "the frame")
            raise

    def _on_text(self, text: str) -> None:
        frame_id: str | int | None = None
        try:
            frame = self._parse(text)
            frame_id = _frame_id(frame.get("id"))
            if "call" in frame or "route" in frame:
                self._start(frame_id, lambda fid: self._call(fid, frame))
            elif "subscribe" in frame:
                self._start(frame_id, lambda fid: self._subscribe(fid, frame.get("subscribe")))
            elif "unsubscribe" in frame:
                self._unsubscribe(frame_id, frame.get("unsubscribe"))
            elif "auth" in frame:
                raise ApiError(400, "already_authenticated", "auth is only accepted as the first frame")
            else:
                raise ApiError(400, "unknown_frame",
                               "a frame needs one of: call, route, subscribe, unsubscribe")
        except ApiError as error:
            self._push_error(frame_id, error)

    def _start(self, frame_id: str | int | None,
               work: Callable[[str | int], Coroutine[Any, Any, None]]) -> None:
        if frame_id is None:
            raise ApiError(400, "missing_id", 'calls and subscriptions need an "id" (a string or an integer)')
        if frame_id in self._tasks:
            raise ApiError(400, "duplicate_id", f"id {frame_id!r} is already in flight on this socket")
        if self.busy >= self.settings.ws_max_inflight:
            raise ApiError(429, "too_many_calls",
                           f"{self.busy} calls are in flight on this socket; the limit is "
                           f"{self.settings.ws_max_inflight}")
        self.busy += 1
        task = asyncio.get_running_loop().create_task(work(frame_id))
        self._tasks[frame_id] = task
        task.add_done_callback(lambda _task: self._tasks.pop(frame_id, None))

    # ------------------------------------------------------------ calls

    async def _call(self, frame_id: str | int, frame: dict[str, Any]) -> None:
        gateway = self.gateway
        started = time.perf_counter()
        request_id = gateway.new_request_id()
        label, status = "WS unmatched", 200
        try:
            route, path_params, query = self._resolve(frame)
            label = f"WS {route.label}"
            args = frame.get("args", {})
            if not isinstance(args, dict):
                raise ApiError(400, "invalid_args", "args must be a JSON object of named arguments")
            identity = gateway.auth.authorize(self._caller(), public=route.public, roles=route.roles)
            gateway.rate.check(identity.principal or f"ip:{self.client}")
            gateway.check_available(route.service)
            with gateway.admitted():
                kwargs = bind_arguments(route.method, path_params, query, args)
                result = await gateway.call(route.service, route.method, kwargs, identity, request_id,
                                            deadline=route.deadline, service_errors=route.errors,
                                            headers=self.request.headers)
            reply = _dumps({"id": frame_id, "result": result})
        except ApiError as error:
            status = error.status
            reply = _dumps({"id": frame_id, **error_body(error, request_id)})
        except Exception:  # a bug in the bridge, or a result JSON cannot carry
            _log.exception("WebSocket call %s failed inside the bridge", request_id)
            status = INTERNAL[0]
            reply = _dumps({"id": frame_id, **error_body(ApiError(*INTERNAL), request_id)})
        gateway.metrics.observe(label, status, time.perf_counter() - started)
        self._push(_REPLY, reply)

    def _resolve(self, frame: dict[str, Any]) -> tuple[Route, dict[str, str], list[tuple[str, str]]]:
        name, spec = frame.get("call"), frame.get("route")
        if name is not None:
            if not isinstance(name, str):
                raise ApiError(400, "invalid_call", "call must be \"service.method\"")
            return self.endpoint.route_named(name), {}, []
        if not isinstance(spec, str) or " " not in spec.strip():
            raise ApiError(400, "invalid_route", "route must be \"VERB /path\", e.g. \"GET /users/42\"")
        verb, _, target = spec.strip().partition(" ")
        parts = urlsplit(target.strip())
        route, params = self.gateway.table().match(verb.upper(), parts.path)
        return route, params, parse_qsl(parts.query, keep_blank_values=True)

    def _caller(self) -> Identity | None:
        return None if self.identity is ANONYMOUS else self.identity

    # ------------------------------------------------------------ subscriptions

    async def _subscribe(self, frame_id: str | int, key: Any) -> None:
        try:
            if not isinstance(key, str):
                raise ApiError(400, "invalid_event", "subscribe names an event: \"service.event_type\"")
            if key not in self.subscriptions:
                self._check_subscription(key)
                self.subscriptions.add(key)  # held while the hub binds: the cap counts it
                try:
                    await self.endpoint.hub.subscribe(key, self)
                except Exception as exc:
                    self.subscriptions.discard(key)
                    _log.warning("subscription to %s failed: %s: %s", key, type(exc).__name__, exc)
                    raise map_error(exc) from None
            reply = _dumps({"id": frame_id, "subscribed": key})
        except ApiError as error:
            reply = _dumps({"id": frame_id, **error_body(error, self.gateway.new_request_id())})
        self._push(_REPLY, reply)

    def _check_subscription(self, key: str) -> None:
        if len(self.subscriptions) >= self.settings.ws_max_subscriptions:
            raise ApiError(429, "too_many_subscriptions",
                           f"this socket has {len(self.subscriptions)} subscriptions; the limit is "
                           f"{self.settings.ws_max_subscriptions}")
        parts = split_event_key(key)
        if parts is None:
            raise ApiError(400, "invalid_event", f"{key[:100]!r} is not \"service.event_type\"")
        source, event_type = parts
        registry = self.gateway.registry
        allowed = self.settings.services
        offered = registry is not None and (not allowed or source in allowed)
        view = registry.service(source) if registry is not None and offered else None
        rule = rule_for(view, event_type)
        if rule is None:
            raise ApiError(404, "event_not_offered", f"{key[:100]!r} is not offered to WebSocket clients")
        self.gateway.auth.authorize(self._caller(), public=False, roles=rule.roles)

    def _unsubscribe(self, frame_id: str | int | None, key: Any) -> None:
        if not isinstance(key, str):
            raise ApiError(400, "invalid_event", "unsubscribe names an event: \"service.event_type\"")
        self.subscriptions.discard(key)
        self.endpoint.hub.unsubscribe(key, self)
        self._push(_CONTROL, _dumps({"id": frame_id, "unsubscribed": key}))

    # ------------------------------------------------------------ frames out

    def offer_event(self, frame: str) -> None:
        """From the hub: queue an event, or count it dropped (or close) when the buffer is full."""
        if self._closing:
            return
        if self._events_queued >= self.settings.ws_send_buffer:
            if self.settings.ws_slow_client == "disconnect":
                self._kick(f"{self._events_queued} events unread (ws_send_buffer)")
                return
            self._dropped += 1
            self.dropped_total += 1
            return
        if self._dropped:
            self._push(_CONTROL, self._notice())
        self._events_queued += 1
        self._push(_EVENT, frame)

    def _notice(self) -> str:
        count, self._dropped = self._dropped, 0
        return _dumps({"notice": "events_dropped", "dropped": count, "dropped_total": self.dropped_total})

    def _push_error(self, frame_id: str | int | None, error: ApiError) -> None:
        self._push(_CONTROL, _dumps({"id": frame_id, **error_body(error, self.gateway.new_request_id())}))

    def _push(self, kind: int, frame: str) -> None:
        if self._closing:
            return
        if len(self._outbox) >= self._outbox_limit:
            self._kick("the client does not read its frames")
            return
        self._outbox.append((kind, frame))
        self._wake.set()

    async def _write_loop(self) -> None:
        ws = self.ws
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                kind, frame = self._outbox.popleft()
                try:
                    await ws.send_str(frame)
                except ConnectionError:
                    return
                finally:
                    if kind == _EVENT:
                        self._events_queued -= 1
                    elif kind == _REPLY:
                        self.busy -= 1
                if not self._outbox and self._dropped and not self._closing:
                    self._outbox.append((_CONTROL, self._notice()))


def _frame_id(value: Any) -> str | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ApiError(400, "invalid_id", "id must be a string or an integer")
    if isinstance(value, str) and len(value) > _MAX_ID_LENGTH:
        raise ApiError(400, "invalid_id", f"id must be at most {_MAX_ID_LENGTH} characters")
    return value


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


def _credential_headers(credentials: Any) -> CIMultiDictProxy[str]:
    """The auth frame as the headers the authenticator reads: one path for every credential."""
    headers: CIMultiDict[str] = CIMultiDict()
    if isinstance(credentials, Mapping):
        token, key = credentials.get("token"), credentials.get("api_key")
        if isinstance(token, str) and token:
            headers.add("Authorization", f"Bearer {token}")
        if isinstance(key, str) and key:
            headers.add(API_KEY_HEADER, key)
    return CIMultiDictProxy(headers)
