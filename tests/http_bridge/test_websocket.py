"""``GET /ws`` against the real broker and real workers: calls, auth, subscriptions, limits."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from amqprpc import Config, EventPublisher, rpc
from http_bridge import BridgeSettings, create_app
from http_bridge.auth import hash_key

pytestmark = pytest.mark.integration

ADMIN_KEY = "ak_websocket-admin"
READER_KEY = "ak_websocket-reader"
INTERVAL = 0.2


def make_service(name: str) -> type:
    class Live:
        ws_events = {"tick": [], "secret": ["admin"]}

        @rpc(http=f"POST /{name}/echo")
        async def echo(self, n: int) -> dict[str, Any]:
            await asyncio.sleep(0.05)  # long enough for all the calls to be in flight together
            return {"n": n}

        @rpc(http=f"GET /{name}/items/{{item_id}}")
        def get(self, item_id: int, detail: bool = False) -> dict[str, Any]:
            return {"id": item_id, "detail": detail}

        @rpc(http=True, roles=["admin"])
        def wipe(self) -> str:
            return "wiped"

        @rpc
        def hidden(self) -> str:  # no http=: never callable from the bridge
            return "hidden"

    Live.name = name
    return Live


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(f'[[keys]]\nsha256 = "{hash_key(ADMIN_KEY)}"\nprincipal = "ops"\nroles = ["admin"]\n'
                    f'[[keys]]\nsha256 = "{hash_key(READER_KEY)}"\nprincipal = "viewer"\nroles = []\n')
    return str(path)


Scenario = Callable[[TestClient, str], Awaitable[None]]


def run(container_factory: Any, unique_name: Any, amqp_uri: str, keys_file: str, scenario: Scenario,
        **settings: Any) -> None:
    """A real bridge (own client, registry, event hub) and one real worker of the service."""
    name = unique_name("live")
    container_factory(make_service(name), discovery_interval=INTERVAL)
    config = Config(broker_url=amqp_uri, discovery_interval=INTERVAL, rpc_timeout=5)
    bridge = BridgeSettings(api_keys_file=keys_file, **settings)

    async def main() -> None:
        app = create_app(config, settings=bridge)
        async with TestClient(TestServer(app)) as client:
            deadline = time.monotonic() + 10
            while (await client.get("/readyz")).status != 200 or not app_has(app, name):
                assert time.monotonic() < deadline, "the bridge never saw the service"
                await asyncio.sleep(0.05)
            await asyncio.wait_for(scenario(client, name), timeout=40)

    asyncio.run(main())


def app_has(app: Any, name: str) -> bool:
    from http_bridge.app import GATEWAY
    registry = app[GATEWAY].registry
    return registry is not None and registry.is_live(name)


async def connect(client: TestClient, key: str | None = ADMIN_KEY) -> aiohttp.ClientWebSocketResponse:
    headers = {"X-API-Key": key} if key else {}
    ws = await client.ws_connect("/ws", headers=headers)
    hello = await ws.receive_json(timeout=5)
    assert "hello" in hello, hello
    return ws


async def frames_until(ws: aiohttp.ClientWebSocketResponse, done: Callable[[dict[str, Any]], bool],
                       timeout: float = 10) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.receive_json()
            seen.append(frame)
            if done(frame):
                return seen


def test_many_calls_in_flight_on_one_socket_each_reply_matched(container_factory, unique_name,
                                                               amqp_uri, keys_file):
    async def scenario(client: TestClient, name: str) -> None:
        ws = await connect(client)
        for n in range(100):
            await ws.send_json({"id": f"c{n}", "call": f"{name}.echo", "args": {"n": n}})
        replies = {}
        async with asyncio.timeout(20):
            while len(replies) < 100:
                frame = await ws.receive_json()
                replies[frame["id"]] = frame
        assert replies == {f"c{n}": {"id": f"c{n}", "result": {"n": n}} for n in range(100)}

        await ws.send_json({"id": 1, "route": f"GET /{name}/items/42?detail=true"})
        assert await ws.receive_json(timeout=5) == {"id": 1, "result": {"id": 42, "detail": True}}
        await ws.send_json({"id": 2, "call": f"{name}.get", "args": {"item_id": 7}})
        assert await ws.receive_json(timeout=5) == {"id": 2, "result": {"id": 7, "detail": False}}
        await ws.close()

    run(container_factory, unique_name, amqp_uri, keys_file, scenario)


def test_errors_come_back_as_frames_and_the_socket_lives_on(container_factory, unique_name,
                                                           amqp_uri, keys_file):
    async def scenario(client: TestClient, name: str) -> None:
        reader = await connect(client, READER_KEY)
        cases = [
            ({"id": 1, "call": f"{name}.hidden"}, 404, "method_not_found"),
            ({"id": 2, "call": f"{name}.wipe"}, 403, "forbidden"),
            ({"id": 3, "call": f"{name}.echo", "args": {"n": "x"}}, 422, "validation_error"),
            ({"id": 4, "call": f"{name}.echo", "args": [1]}, 400, "invalid_args"),
            ({"id": 5, "route": "GET /nowhere"}, 404, "not_found"),
            ({"call": f"{name}.echo", "args": {"n": 1}}, 400, "missing_id"),
            ({"id": 6, "hello": 1}, 400, "unknown_frame"),
            ({"id": [1], "call": f"{name}.echo"}, 400, "invalid_id"),
            ({"id": 7, "subscribe": f"{name}.secret"}, 403, "forbidden"),
            ({"id": 8, "subscribe": f"{name}.undeclared"}, 404, "event_not_offered"),
            ({"id": 9, "subscribe": "no-dot"}, 400, "invalid_event"),
        ]
        for frame, status, code in cases:
            await reader.send_json(frame)
            answer = await reader.receive_json(timeout=5)
            assert answer["error"]["status"] == status, (frame, answer)
            assert answer["error"]["code"] == code, (frame, answer)
            assert answer["id"] == (frame.get("id") if code != "invalid_id" else None)
            assert set(answer["error"]) >= {"status", "code", "message", "id"}

        await reader.send_str("{not json")
        assert (await reader.receive_json(timeout=5))["error"]["code"] == "invalid_json"
        await reader.send_str("[1, 2]")
        assert (await reader.receive_json(timeout=5))["error"]["code"] == "invalid_json"
        await reader.send_str(json.dumps({"id": 10, "call": f"{name}.echo", "pad": "x" * 70_000}))
        assert (await reader.receive_json(timeout=5))["error"]["code"] == "frame_too_large"
        await reader.send_bytes(b"\x00\x01")
        assert (await reader.receive_json(timeout=5))["error"]["code"] == "text_frames_only"
        await reader.send_str("[" * 10_000 + "]" * 10_000)  # deeper than the decode limits
        assert (await reader.receive_json(timeout=5))["error"]["status"] in (400, 413)

        await reader.send_json({"id": 11, "call": f"{name}.echo", "args": {"n": 5}})
        assert await reader.receive_json(timeout=5) == {"id": 11, "result": {"n": 5}}

        await reader.send_str("x" * 300_000)  # past 4x ws_max_frame: the socket is closed (1009)
        closing = await reader.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
        assert reader.close_code == 1009
        assert (await client.get("/healthz")).status == 200  # the bridge is fine

    run(container_factory, unique_name, amqp_uri, keys_file, scenario)


def test_per_socket_cap_on_calls_in_flight(container_factory, unique_name, amqp_uri, keys_file):
    async def scenario(client: TestClient, name: str) -> None:
        ws = await connect(client)
        for n in range(8):  # sent at once: each echo takes 50 ms, so 5 are still in flight
            await ws.send_json({"id": n, "call": f"{name}.echo", "args": {"n": n}})
        answers: dict[int, dict[str, Any]] = {}
        async with asyncio.timeout(10):
            while len(answers) < 8:
                frame = await ws.receive_json()
                assert frame["id"] not in answers
                answers[frame["id"]] = frame
        refused = [n for n, frame in answers.items() if "error" in frame]
        assert refused and all(answers[n]["error"]["code"] == "too_many_calls" for n in refused)
        assert all(answers[n] == {"id": n, "result": {"n": n}} for n in range(5))
        await ws.send_json({"id": 9, "call": f"{name}.echo", "args": {"n": 9}})  # room again
        assert await ws.receive_json(timeout=5) == {"id": 9, "result": {"n": 9}}

    run(container_factory, unique_name, amqp_uri, keys_file, scenario, ws_max_inflight=5)


def test_unauthenticated_sockets_are_refused(container_factory, unique_name, amqp_uri, keys_file):
    async def scenario(client: TestClient, name: str) -> None:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ws", headers={"X-API-Key": "ak_wrong"})
        assert refused.value.status == 401

        silent = await client.ws_connect("/ws")  # no credentials, no auth frame: refused in time
        frame = await silent.receive_json(timeout=5)
        assert frame["error"]["status"] == 401
        await silent.receive(timeout=5)
        assert silent.close_code == 4401

        calls_first = await client.ws_connect("/ws")
        await calls_first.send_json({"id": 1, "call": f"{name}.echo", "args": {"n": 1}})
        assert (await calls_first.receive_json(timeout=5))["error"]["code"] == "unauthorized"
        await calls_first.receive(timeout=5)
        assert calls_first.close_code == 4401

        bad_token = await client.ws_connect("/ws")
        await bad_token.send_json({"auth": {"token": "not-a-jwt"}})
        assert (await bad_token.receive_json(timeout=5))["error"]["status"] == 401
        await bad_token.receive(timeout=5)
        assert bad_token.close_code == 4401

        by_frame = await client.ws_connect("/ws")  # a browser: credentials in the first frame
        await by_frame.send_json({"auth": {"api_key": READER_KEY}})
        assert (await by_frame.receive_json(timeout=5))["hello"]["principal"] == "viewer"
        await by_frame.send_json({"id": 1, "call": f"{name}.echo", "args": {"n": 3}})
        assert await by_frame.receive_json(timeout=5) == {"id": 1, "result": {"n": 3}}
        await by_frame.close()

    run(container_factory, unique_name, amqp_uri, keys_file, scenario, ws_auth_timeout=0.5)


def test_subscribed_events_arrive_once_each_and_others_never(container_factory, unique_name,
                                                              amqp_uri, keys_file):
    async def scenario(client: TestClient, name: str) -> None:
        loop = asyncio.get_running_loop()
        admin, reader, idle = await connect(client), await connect(client, READER_KEY), await connect(client)
        await admin.send_json({"id": "s1", "subscribe": f"{name}.tick"})
        await admin.send_json({"id": "s2", "subscribe": f"{name}.secret"})
        await reader.send_json({"id": "s1", "subscribe": f"{name}.tick"})
        for ws, count in ((admin, 2), (reader, 1)):
            for _ in range(count):
                assert "subscribed" in await ws.receive_json(timeout=10)

        def publish() -> None:
            with EventPublisher(amqp_uri) as events:
                for n in range(20):
                    events.dispatch(name, "tick", {"n": n})
                    events.dispatch(name, "tock", {"n": n})  # nobody subscribes to it
                events.dispatch(name, "secret", {"n": 99})
                events.flush(10)

        await loop.run_in_executor(None, publish)
        got = await frames_until(admin, lambda f: f.get("event") == f"{name}.secret")
        ticks = [f["payload"]["n"] for f in got if f.get("event") == f"{name}.tick"]
        assert sorted(ticks) == list(range(20))
        reader_got = await frames_until(reader, lambda f: f.get("payload") == {"n": 19})
        assert [f["payload"]["n"] for f in reader_got] == list(range(20))

        await reader.send_json({"id": "u", "unsubscribe": f"{name}.tick"})
        assert await reader.receive_json(timeout=5) == {"id": "u", "unsubscribed": f"{name}.tick"}
        await loop.run_in_executor(None, publish)
        await frames_until(admin, lambda f: f.get("event") == f"{name}.secret")
        await reader.send_json({"id": "p", "call": f"{name}.echo", "args": {"n": 0}})
        assert await reader.receive_json(timeout=5) == {"id": "p", "result": {"n": 0}}  # no event between
        await idle.send_json({"id": "p", "call": f"{name}.echo", "args": {"n": 0}})
        assert await idle.receive_json(timeout=5) == {"id": "p", "result": {"n": 0}}  # never subscribed

    run(container_factory, unique_name, amqp_uri, keys_file, scenario)


def test_a_client_that_stops_reading_loses_events_counted_others_get_all(
        container_factory, unique_name, amqp_uri, keys_file):
    total = 600

    async def scenario(client: TestClient, name: str) -> None:
        loop = asyncio.get_running_loop()
        fast, slow = await connect(client), await connect(client)
        for ws in (fast, slow):
            await ws.send_json({"id": 1, "subscribe": f"{name}.tick"})
            assert "subscribed" in await ws.receive_json(timeout=10)
        pad = "p" * 16_000  # 10 MB in all: more than the socket buffers hold for a client not reading

        def publish() -> None:  # in small confirmed batches: a client that reads keeps up
            with EventPublisher(amqp_uri) as events:
                for n in range(total):
                    events.dispatch(name, "tick", {"n": n, "pad": pad})
                    if n % 8 == 7:
                        events.flush(20)

        publishing = loop.run_in_executor(None, publish)
        fast_got = await frames_until(fast, lambda f: f.get("payload", {}).get("n") == total - 1, timeout=30)
        await publishing
        assert [f["payload"]["n"] for f in fast_got] == list(range(total))

        received, dropped = 0, 0
        async with asyncio.timeout(30):  # now the slow one reads: what it got plus what it lost
            while received + dropped < total:
                frame = await slow.receive_json()
                if frame.get("notice") == "events_dropped":
                    dropped += frame["dropped"]
                else:
                    received += 1
        assert dropped > 0 and received + dropped == total
        assert received >= 64  # its buffer's worth at least

    # The buffer holds a burst: the broker's deliveries reach the loop faster than one write.
    run(container_factory, unique_name, amqp_uri, keys_file, scenario, ws_send_buffer=64)


def test_a_slow_client_is_disconnected_when_configured(container_factory, unique_name, amqp_uri,
                                                       keys_file):
    async def scenario(client: TestClient, name: str) -> None:
        loop = asyncio.get_running_loop()
        slow = await connect(client)
        await slow.send_json({"id": 1, "subscribe": f"{name}.tick"})
        assert "subscribed" in await slow.receive_json(timeout=10)
        pad = "p" * 16_000

        def publish() -> None:
            with EventPublisher(amqp_uri) as events:
                for n in range(400):
                    events.dispatch(name, "tick", {"n": n, "pad": pad})
                events.flush(20)

        await loop.run_in_executor(None, publish)
        async with asyncio.timeout(30):
            while (await slow.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                                      aiohttp.WSMsgType.ERROR):
                pass
        assert slow.close_code in (1008, 1006, None)
        again = await connect(client)  # the bridge serves others on
        await again.send_json({"id": 1, "call": f"{name}.echo", "args": {"n": 1}})
        assert await again.receive_json(timeout=5) == {"id": 1, "result": {"n": 1}}

    run(container_factory, unique_name, amqp_uri, keys_file, scenario, ws_send_buffer=8,
        ws_slow_client="disconnect")


def test_bridge_shutdown_closes_sockets_with_1001(container_factory, unique_name, amqp_uri, keys_file):
    name = unique_name("live")
    container_factory(make_service(name), discovery_interval=INTERVAL)
    config = Config(broker_url=amqp_uri, discovery_interval=INTERVAL, rpc_timeout=5)

    async def main() -> None:
        app = create_app(config, settings=BridgeSettings(api_keys_file=keys_file))
        server = TestServer(app)
        await server.start_server()
        async with aiohttp.ClientSession() as session:  # its own: TestClient would close the socket itself
            ws = await session.ws_connect(server.make_url("/ws"), headers={"X-API-Key": ADMIN_KEY})
            assert "hello" in await ws.receive_json(timeout=5)
            await server.close()  # the server shuts down: on_shutdown closes every socket
            message = await ws.receive(timeout=5)
            assert message.type == aiohttp.WSMsgType.CLOSE, message
            assert message.data == 1001  # the code the bridge sent (going away)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_the_slowloris_guard_leaves_an_upgraded_socket_alone():
    """The header deadline follows HTTP requests; after the upgrade the bytes are frames."""
    from http_bridge.server import start_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = BridgeSettings(port=port, header_timeout=0.3, allow_anonymous=True)

    async def main() -> None:
        app = create_app(Config(broker_url="memory://ws-slowloris"), settings=settings)
        runner, server = await start_server(app, settings)
        try:
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws")
                for _ in range(4):  # frames well past header_timeout: still one live socket
                    await asyncio.sleep(0.2)
                    await ws.send_json({"id": 1, "nothing": True})
                    frame = await ws.receive_json(timeout=5)
                    if "hello" in frame:
                        frame = await ws.receive_json(timeout=5)
                    assert frame["error"]["code"] == "unknown_frame"
                await ws.close()
        finally:
            server.close()
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(main(), 30))
