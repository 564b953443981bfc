"""README's "Log in to the demo": ``amqprpc dev services.auth --bridge`` out of the box (a signing
key, an identity key and an admin account made in its state folder), then the README's curl
commands log in and call an admin route with the token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amqprpc.devservers import free_port

from .test_demo_flow import ROOT, probe_http, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def readme_login_commands() -> str:
    section = (ROOT / "README.md").read_text().split("## Log in to the demo", 1)[1].split("\n## ", 1)[0]
    commands = [block.split("```", 1)[0] for block in section.split("```bash\n")[1:] if "curl" in block]
    assert len(commands) == 1, "README's login section should have one block of curl commands"
    return commands[0]


def test_dev_makes_an_admin_and_the_readme_logs_in(amqp_vhost_uri: str, tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    log = tmp_path / "dev.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMQPRPC_")}
    command = [sys.executable, "-m", "amqprpc", "dev", "services.auth", "--bridge",
               "--bridge-port", str(port), "--state-dir", str(state), "--broker", amqp_vhost_uri]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    base = f"127.0.0.1:{port}"
    try:
        def routed() -> bool:
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            return probe_http("GET", f"http://{base}/auth/users")[0] == 401  # 404 until auth announced
        until(time.monotonic() + 90, "the bridge to route /auth/users", routed)
        # dev prints its hints once it sees the bridge's port open, on its own 0.2 s poll: the
        # route may answer first.
        until(time.monotonic() + 30, "dev to print the log-in hint",
              lambda: "log in: curl" in log.read_text(errors="replace"))
        assert (state / "admin-password").stat().st_mode & 0o077 == 0

        script = readme_login_commands().replace("localhost:8000", base).replace(
            ".amqprpc-dev/", f"{state}/")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        listed, _, refused = done.stdout.partition("]")  # curl's bodies end without a newline
        assert '"principal":"admin"' in listed and '"roles":["admin"' in listed, done.stdout
        assert '"status":401' in refused, done.stdout
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        print(log.read_text(errors="replace")[-5000:])
    assert process.returncode == 0
