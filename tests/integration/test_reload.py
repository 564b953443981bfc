"""``amqprpc run --reload`` (issue #17 item 1): edits under load, and an edit that breaks.

One reloader process serves a service module written into the test's own folder. The test

1. sends 200 calls and, while they are in flight, edits the module: every call is answered
   (by the old code or the new), each ran exactly once, and calls after the reload get the
   new code's answer;
2. saves a module that no longer imports: the reloader prints one block naming the error,
   and the previous workers keep answering;
3. saves a fix: the fixed code answers.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from amqprpc import ClusterRpcClient, Config
from amqprpc.testing.pytest import broker_admin

from ..waiting import wait_until

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]

SOURCE = '''
import os, time
from amqprpc import rpc


class Reloaded:
    name = {name!r}

    @rpc
    def version(self):
        return {version!r}

    @rpc
    def work(self, ident):
        time.sleep(0.05)
        fd = os.open(os.environ["RELOAD_RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (ident + "\\n").encode())
        os.close(fd)
        return [{version!r}, ident]
'''


class Served:
    def __init__(self, folder: Path, module: str, name: str) -> None:
        self.path = folder / f"{module}.py"
        self.name = name

    def write(self, version: str, broken: str = "") -> None:
        text = SOURCE.format(name=self.name, version=version) + broken
        self.path.write_text(text)


@pytest.fixture
def served(tmp_path: Path, unique_name) -> Served:
    name = unique_name("reload")
    served = Served(tmp_path, name.replace("-", "_"), name)
    served.write("v1")
    return served


@pytest.fixture
def reloader(served: Served, amqp_uri: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RELOAD_RUNS": str(tmp_path / "runs")}
    process = subprocess.Popen(
        [sys.executable, "-m", "amqprpc", "run", served.path.stem, "--reload", "--broker", amqp_uri,
         "--concurrency", "10", "--log-level", "WARNING"],
        cwd=served.path.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    if process.stdout is not None:
        process.stdout.close()
    with broker_admin(amqp_uri) as channel:
        channel.queue_delete(f"rpc-{served.name}")


def answers(client: ClusterRpcClient, served: Served, version: str) -> bool:
    try:
        return bool(client.call(served.name, "version", _timeout=5) == version)
    except Exception:
        return False


def test_reload_under_load_and_a_broken_edit(served: Served, reloader: subprocess.Popen[str],
                                              amqp_uri: str, tmp_path: Path) -> None:
    with ClusterRpcClient(config=Config(broker_url=amqp_uri), timeout=60) as client:
        wait_until(lambda: answers(client, served, "v1"), "the first workers to answer", timeout=40)

        futures = {f"c{i}": client.call_async(served.name, "work", f"c{i}") for i in range(200)}
        served.write("v2")  # 200 calls x 50 ms on 10 handlers: about a second of work in flight
        results = {ident: future.result(60) for ident, future in futures.items()}
        assert {ident: result[1] for ident, result in results.items()} == {i: i for i in futures}
        runs = collections.Counter((tmp_path / "runs").read_text().split())
        assert set(runs) == set(futures) and set(runs.values()) == {1}, "a call ran twice or never"
        wait_until(lambda: answers(client, served, "v2"), "the new code to answer", timeout=40)

        served.write("v3", broken="\ndef broken(:\n")
        output: list[str] = []
        wait_until(lambda: _read_until(reloader, "reload FAILED", output), "the failure block", timeout=40)
        block = _read_until(reloader, "save a fix to try again", output)
        assert block and "SyntaxError" in "".join(output), "".join(output)
        assert "previous workers keep serving" in "".join(output)
        assert answers(client, served, "v2"), "the old workers stopped serving"

        served.write("v4")
        wait_until(lambda: answers(client, served, "v4"), "the fixed code to answer", timeout=40)


def _read_until(process: subprocess.Popen[str], text: str, seen: list[str]) -> bool:
    """Read the reloader's output line by line until ``text`` appears (blocking per line)."""
    assert process.stdout is not None
    while not any(text in line for line in seen):
        line = process.stdout.readline()
        if not line:
            return False
        seen.append(line)
    return True
