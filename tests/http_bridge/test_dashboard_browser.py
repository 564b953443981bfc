"""The dashboard in Debian's headless chromium, against a real bridge and the demo's real workers.

Chromium is driven over its DevTools protocol (a websocket, with aiohttp): no Playwright or
Selenium needed. The page must list users, orders and payments with their instances, its
numbers must move while calls flow, and a killed worker must disappear. The screenshot is
saved in the test's tmp dir (the path is printed).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from amqprpc import ClusterRpcClient, Config
from http_bridge import BridgeSettings, create_app
from http_bridge.auth import hash_key
from services.orders import OrdersService
from services.payments import PaymentsService
from services.users import UsersService

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEY = "ak_dashboard-browser"
INTERVAL = 0.5  # discovery heartbeat: a killed worker is forgotten after ~1.75 s


class DevTools:
    """Just enough of the Chrome DevTools protocol: send a command, wait for its answer."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self.ws.receive_json(), timeout=30)
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


async def wait_for_page(devtools: DevTools, expression: str, what: str, timeout: float = 30) -> Any:
    """Poll ``expression`` in the page until it is truthy (CI is loaded: generous timeouts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await devtools.evaluate(expression)
        if value:
            return value
        assert loop.time() < deadline, f"timed out waiting for the page to show {what}"
        await asyncio.sleep(0.2)


CALLS_OF = ("Number((document.querySelector('[data-method=\"{}\"] .calls') || {{}})"
            ".dataset?.calls || 0)")
INSTANCES_OF = "document.querySelectorAll('[data-service=\"{}\"] [data-instance]').length"


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_dashboard_in_a_browser(amqp_vhost_uri, mongo_url, container_factory, tmp_path: Path):
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[keys]]\nsha256 = "{hash_key(KEY)}"\nprincipal = "ops"\nroles = ["admin"]\n')
    config = Config(broker_url=amqp_vhost_uri, discovery_interval=INTERVAL, rpc_timeout=10,
                    concurrency=2, extra={"DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
                                          "MONGO_URL": mongo_url})
    settings = BridgeSettings(api_keys_file=str(keys), dashboard=True)
    screenshot = tmp_path / "dashboard.png"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        workers = {}
        for cls in (UsersService, OrdersService, PaymentsService):
            workers[cls.name] = await loop.run_in_executor(None, container_factory, cls, config)
        second_orders = await loop.run_in_executor(None, container_factory, OrdersService, config)
        async with TestServer(create_app(config, settings=settings)) as server:
            profile = tmp_path / "chromium-profile"
            browser = await asyncio.create_subprocess_exec(
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1280,1400",
                "about:blank", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            try:
                await drive(browser, server, workers, second_orders, config)
            finally:
                browser.kill()
                await browser.wait()

    async def drive(browser: Any, server: TestServer, workers: dict[str, Any], second_orders: Any,
                    config: Config) -> None:
        assert browser.stderr is not None
        port = None
        while port is None:
            line = (await asyncio.wait_for(browser.stderr.readline(), timeout=60)).decode()
            assert line, "chromium exited before opening its DevTools port"
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = found.group(1) if found else None
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = json.loads(await response.text())
            page = next(t for t in targets if t.get("type") == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                devtools = DevTools(ws)
                await devtools.send("Network.enable")
                await devtools.send("Network.setExtraHTTPHeaders", headers={"X-API-Key": KEY})
                await devtools.send("Page.navigate", url=str(server.make_url("/dashboard")))
                await scenario(devtools, workers, second_orders, config)

    async def scenario(devtools: DevTools, workers: dict[str, Any], second_orders: Any,
                       config: Config) -> None:
        loop = asyncio.get_running_loop()
        for name in ("users", "orders", "payments"):
            await wait_for_page(devtools, INSTANCES_OF.format(name) + " >= 1", f"{name}'s instance")
        await wait_for_page(devtools, INSTANCES_OF.format("orders") + " == 2", "both orders workers")
        host_shown = await devtools.evaluate(
            "document.querySelector('[data-service=\"users\"] [data-instance] td').textContent")
        assert host_shown  # host, pid, version, since: one row per instance
        assert await devtools.evaluate("!!document.querySelector('[data-method=\"orders.create\"]')")
        assert await devtools.evaluate("!!document.querySelector('[data-queue=\"rpc-orders\"]')")

        # Calls flow: the per-method numbers the workers send move on the page.
        before = await devtools.evaluate(CALLS_OF.format("users.list_users"))
        with ClusterRpcClient(config=config) as client:
            for _ in range(20):
                await loop.run_in_executor(None, lambda: client.users.list_users(limit=1))
                for _ in range(2):
                    try:
                        await loop.run_in_executor(None, lambda: client.orders.get(order_id=999_999))
                    except Exception:
                        pass  # OrderNotFound: counted as an error
        await wait_for_page(devtools, CALLS_OF.format("users.list_users") + f" >= {before + 20}",
                            "the calls made")
        await wait_for_page(devtools, CALLS_OF.format("orders.get") + " >= 40", "orders.get's calls")
        error_cell = await devtools.evaluate(
            "document.querySelector('[data-method=\"orders.get\"] td.errors')?.textContent")
        assert error_cell and error_cell.startswith("100.0"), error_cell
        updates = await devtools.evaluate("Number(document.body.dataset.updates)")
        await wait_for_page(devtools, f"Number(document.body.dataset.updates) > {updates}",
                            "a later poll")  # it keeps updating itself

        shot = await devtools.send("Page.captureScreenshot", format="png")
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        print(f"dashboard screenshot: {screenshot}")

        # A killed worker disappears (it stops beating; the registry expires it).
        await loop.run_in_executor(None, second_orders.kill)
        await wait_for_page(devtools, INSTANCES_OF.format("orders") + " == 1", "one orders worker left")
        await loop.run_in_executor(None, workers["payments"].kill)
        await wait_for_page(devtools, INSTANCES_OF.format("payments") + " == 0 && "
                            "document.querySelector('[data-service=\"payments\"]').classList.contains('down')",
                            "payments down")

    asyncio.run(asyncio.wait_for(main(), timeout=120))
