"""The demo's /realtime/ page in headless Chromium: a reading over the threshold shows as an alert.

Real bridge, real telemetry worker, the machine's broker. The reading is published on
``amq.topic`` with the routing key the MQTT plugin would give it (the MQTT leg itself is
tested in tests/integration/test_mqtt.py). The page is driven over the DevTools protocol
(aiohttp's WebSocket client), so the test sees the alert the moment the page shows it.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer

from amqprpc import Config
from amqprpc.transport import Outgoing, create_transport
from http_bridge import BridgeSettings, create_app
from http_bridge.app import GATEWAY
from services.telemetry import TelemetryService

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECRET = "realtime-page-test-secret-0123456789abcdef"


class DevTools:
    """Just enough of the DevTools protocol: evaluate an expression in the page."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.ids = 0

    async def evaluate(self, expression: str) -> Any:
        self.ids += 1
        await self.socket.send_json({"id": self.ids, "method": "Runtime.evaluate",
                                     "params": {"expression": expression, "returnByValue": True}})
        while True:
            answer = await self.socket.receive_json(timeout=10)
            if answer.get("id") == self.ids:
                return answer["result"]["result"].get("value")

    async def wait_for(self, expression: str, timeout: float) -> float:
        started = time.monotonic()
        while not await self.evaluate(expression):
            assert time.monotonic() - started < timeout, f"the page never showed: {expression}"
            await asyncio.sleep(0.01)
        return time.monotonic() - started


async def open_page(url: str, profile: Path, session: aiohttp.ClientSession) -> tuple[Any, DevTools]:
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--remote-debugging-port=0", f"--user-data-dir={profile}", url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not (active.exists() and active.read_text().count("\n") >= 1):
        assert time.monotonic() < deadline, "chromium did not open its DevTools port"
        await asyncio.sleep(0.05)
    port = int(active.read_text().split()[0])
    while True:
        targets = await (await session.get(f"http://127.0.0.1:{port}/json/list")).json()
        pages = [t for t in targets if t.get("type") == "page" and "/realtime/" in t.get("url", "")]
        if pages:
            break
        assert time.monotonic() < deadline, f"no page target: {targets}"
        await asyncio.sleep(0.05)
    socket = await session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
    return process, DevTools(socket)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_an_alert_shows_within_a_second_of_a_hot_reading(container_factory, unique_name, amqp_uri,
                                                         tmp_path):
    name = unique_name("telemetry")
    service = type("Telemetry", (TelemetryService,), {"name": name})
    container_factory(service, discovery_interval=0.2)
    config = Config(broker_url=amqp_uri, discovery_interval=0.2)
    token = jwt.encode({"sub": "ops-screen", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    sensor_probe = create_transport(amqp_uri, name="sensor")
    sensor_probe.start()

    def reading(celsius: float) -> None:
        done = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        sensor_probe.publish(Outgoing("amq.topic", "sensors.hall-2.temperature", str(celsius).encode(),
                                      {"delivery_mode": 2}),
                             on_confirm=lambda error: loop.call_soon_threadsafe(done.set_result, error))

    async def main() -> None:
        app = create_app(config, settings=BridgeSettings(jwt_hs256_secret=SECRET))
        async with TestServer(app) as server, aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 10
            while not (app[GATEWAY].registry and app[GATEWAY].registry.is_live(name)):
                assert time.monotonic() < deadline, "the bridge never saw the telemetry service"
                await asyncio.sleep(0.05)
            url = str(server.make_url("/realtime/")) + f"#token={token}&events={name}.alert"
            process, page = await open_page(url, tmp_path / "profile", session)
            try:
                await page.wait_for("document.getElementById('status').textContent"
                                    ".startsWith('connected as ops-screen')", timeout=20)
                await page.wait_for(f"document.getElementById('feed').textContent"
                                    f".includes('subscribed to {name}.alert')", timeout=20)
                reading(21.0)  # under the threshold: no alert
                reading(35.5)
                shown = await page.wait_for("document.querySelectorAll('#feed li.alert').length > 0",
                                            timeout=10)
                text = await page.evaluate("document.querySelector('#feed li.alert').textContent")
                print(f"alert shown {shown * 1000:.0f} ms after the reading was published")
                assert f"{name}.alert" in text and "35.5" in text and "hall-2" in text
                assert await page.evaluate("document.querySelectorAll('#feed li.alert').length") == 1
                # The bound: within a second (typically tens of ms; CI load is the margin).
                assert shown < 1.0
            finally:
                process.kill()
                await process.wait()

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        sensor_probe.stop()
