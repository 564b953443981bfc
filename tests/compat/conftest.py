"""Fixtures of the Nameko compatibility suite: the Nameko venv, a Nameko service process
and Nameko's standalone clients (each test module runs its own amqprpc service).

Every module gets its own service names, so runs never share queues; the queues are
deleted afterwards. See tests/compat/nameko_env.py for the cached venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from amqprpc.testing.broker import delete_queues

from .nameko_env import NamekoEnvError, ensure_nameko_python

APPS = Path(__file__).parent / "apps"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@pytest.fixture(scope="session")
def nameko_python() -> Path:
    try:
        python, built_in = ensure_nameko_python()
    except NamekoEnvError as exc:
        problem = str(exc)
    else:
        if built_in:
            sys.stderr.write(f"\n[compat] built the Nameko venv in {built_in:.1f}s: {python.parent.parent}\n")
        return python
    pytest.fail(problem, pytrace=False)


@dataclass
class Names:
    """One module's service names: the Nameko service and the amqprpc service."""

    nameko: str
    amqprpc: str


@pytest.fixture(scope="module")
def names() -> Names:
    tag = uuid.uuid4().hex[:8]
    return Names(nameko=f"nk-{tag}", amqprpc=f"ar-{tag}")


@dataclass
class NamekoProcess:
    process: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def nameko_service(nameko_python: Path, amqp_uri: str, names: Names,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamekoProcess]:
    """The Nameko service of apps/nameko_service.py, running in a subprocess."""
    log = tmp_path_factory.mktemp("nameko") / "service.log"
    env = {**os.environ, "AMQP_URI": amqp_uri, "NAMEKO_SERVICE": names.nameko,
           "AMQPRPC_SERVICE": names.amqprpc, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as sink:
        process = subprocess.Popen([str(nameko_python), str(APPS / "nameko_service.py")],
                                   stdout=sink, stderr=subprocess.STDOUT, env=env, text=True)
    service = NamekoProcess(process, log)
    try:
        _wait_ready(service)
        yield service
    finally:
        _stop(process)
        event_queues = [f"evt-{names.amqprpc}-compat_event--{names.nameko}.{method}"
                        for method in ("on_pool",)] + [f"evt-{names.amqprpc}-compat_event"]
        delete_queues(amqp_uri, [f"rpc-{names.nameko}", *event_queues])


def _wait_ready(service: NamekoProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while "READY" not in service.log.read_text(errors="replace"):
        if service.process.poll() is not None:
            raise AssertionError(f"the Nameko service exited with {service.process.returncode}:\n"
                                 f"{service.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the Nameko service was not ready within {START_TIMEOUT}s:\n"
                                 f"{service.output()}")
        time.sleep(0.05)  # polling a log file: no event to wait on across processes


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGKILL: a graceful Nameko stop takes ~3 s and proves nothing here; the broker drops
    the process's exclusive queues with its connection, and the fixture deletes the rest."""
    if process.poll() is None:
        process.kill()
    process.wait(STOP_TIMEOUT)


@pytest.fixture
def nameko_client(nameko_python: Path, amqp_uri: str):
    """Run apps/nameko_client.py with a script of calls and events; returns its outcomes."""

    def run(calls: list[dict[str, Any]] | None = None, events: list[dict[str, Any]] | None = None,
            context_data: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        spec = {"amqp_uri": amqp_uri, "calls": calls or [], "events": events or [],
                "context_data": context_data}
        done = subprocess.run([str(nameko_python), str(APPS / "nameko_client.py"), json.dumps(spec)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"the Nameko client failed:\n{done.stdout}\n{done.stderr[-4000:]}"
        last_line = done.stdout.strip().splitlines()[-1]
        outcomes: list[dict[str, Any]] = json.loads(last_line)["calls"]
        return outcomes

    return run
