"""The demo end to end: ``amqprpc dev`` runs users, orders and payments (two worker processes
each) and the bridge, on its embedded defaults (SQLite files, a SecantusDB it starts); a
client creates a user over HTTP, places an order and watches it become paid; Ctrl-C stops
everything cleanly. The broker is the test broker, in a vhost of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amqprpc.devservers import free_port, port_open

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def probe_http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """``http`` for polling a front that may still be starting: a refused or dropped
    connection, or a body that is not JSON yet, reads as "not ready" (status 0)."""
    try:
        return http(method, url, body)
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return 0, None


def until(deadline: float, what: str, probe: Any) -> Any:
    """Call ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def demo(amqp_vhost_uri: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port = free_port()
    log = tmp_path / "dev.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMQPRPC_")}
    command = [sys.executable, "-m", "amqprpc", "dev", "services.users", "services.orders",
               "services.payments", "--bridge", "--bridge-port", str(port), "--workers", "2",
               "--state-dir", str(tmp_path / "state"), "--broker", amqp_vhost_uri]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", process, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # let dev stop its children in order
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()  # its children follow (parent-death signal)
                process.wait(10)
        print(log.read_text(errors="replace")[-8000:])  # shown when the test failed


def test_create_user_place_order_it_becomes_paid(demo: Any) -> None:
    base, process, log = demo
    deadline = time.monotonic() + 120  # seven processes start on 2 CPUs: slow under load

    attempts = iter(range(1_000_000))

    def create_user() -> Any:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        # A new address per attempt: one that timed out here may have created its user.
        email = f"ada+{next(attempts)}@example.com"
        status, body = probe_http("POST", f"{base}/users", {"name": "Ada", "email": email}) \
            if port_open(int(base.rsplit(":", 1)[1])) else (0, None)
        return body if status == 200 else None  # 404 until users announced its routes

    user = until(deadline, "the bridge to route POST /users", create_user)

    def place_order() -> Any:
        status, body = probe_http("POST", f"{base}/orders", {"user_id": user["id"], "amount": 42.5})
        return body if status == 200 else None  # 404 until orders announced its routes

    order = until(deadline, "POST /orders", place_order)
    assert order["status"] == "pending" and order["amount"] == 42.5

    def paid() -> Any:
        status, body = http("GET", f"{base}/orders/{order['id']}")
        return body if status == 200 and body["status"] != "pending" else None

    assert until(time.monotonic() + 60, "the order to be paid", paid)["status"] == "paid"

    def payment() -> Any:  # 404 until the bridge has heard payments announce its routes
        status, body = probe_http("GET", f"{base}/orders/{order['id']}/payment")
        return body if status == 200 else None

    assert until(time.monotonic() + 60, "GET /orders/{id}/payment", payment)["status"] == "succeeded"
    assert http("POST", f"{base}/orders", {"user_id": "nobody", "amount": 1})[0] == 422

    run_readme_demo(base)

    process.send_signal(signal.SIGINT)  # Ctrl-C
    assert process.wait(60) == 0, log.read_text(errors="replace")[-3000:]
    text = log.read_text(errors="replace")
    assert "dev | stopped" in text and "Traceback" not in text
    ignore = (log.parent / "state" / ".gitignore").read_text()  # its data never gets committed
    assert "*" in ignore.splitlines()
    for name in ("users", "orders", "payments"):
        assert f"{name} |" in text
        assert text.count(f"{name} |") >= 2  # every line of every process is prefixed


def readme_demo_commands() -> str:
    """The curl block of README.md's "Try the demo", exactly as a reader copies it."""
    section = (ROOT / "README.md").read_text().split("## Try the demo", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```bash\n")[1:]
    commands = [block.split("```", 1)[0] for block in blocks if "curl" in block]
    assert len(commands) == 1, "README's demo should have one block of curl commands"
    return commands[0]


def run_readme_demo(base: str) -> None:
    """Run the README's commands against this demo; the order they place gets paid."""
    script = readme_demo_commands().replace("localhost:8000", base.removeprefix("http://"))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script + 'echo "order=$order"'],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    *printed, last = done.stdout.strip().splitlines()
    assert printed and printed[-1] in ("pending", "paid"), done.stdout
    order = last.removeprefix("order=")
    assert order.isdigit(), done.stdout

    def paid() -> Any:
        status, body = http("GET", f"{base}/orders/{order}")
        return body if status == 200 and body["status"] == "paid" else None

    until(time.monotonic() + 60, "the README's order to be paid", paid)

