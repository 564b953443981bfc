"""`amqprpc run` and `amqprpc call` as real processes: load balancing, a killed worker, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from amqprpc import ClusterRpcClient
from tests.waiting import wait_until

from .worker_processes import ROOT, call_when_ready

pytestmark = pytest.mark.integration


def test_two_workers_share_the_calls(workers, amqp_uri):
    first, second = workers(), workers()
    with ClusterRpcClient(amqp_uri, timeout=10) as client:
        call_when_ready(client, workers.service, "pid")

        def both_serving() -> bool:
            pids = {f.result() for f in [client.call_async(workers.service, "pid") for _ in range(40)]}
            return pids == {first.pid, second.pid}

        wait_until(both_serving, "both workers to answer calls", timeout=30)


def test_killed_worker_call_is_redelivered_and_answered_once(workers, amqp_uri, tmp_path):
    first = workers("--concurrency", "1")
    with ClusterRpcClient(amqp_uri, timeout=30) as client:
        assert call_when_ready(client, workers.service, "pid") == first.pid
        future = client.call_async(workers.service, "hold", str(tmp_path))
        wait_until(lambda: (tmp_path / f"{first.pid}.started").exists(),
                   "the first worker to start the call", timeout=10)
        second = workers("--concurrency", "1")
        first.stop(signal.SIGKILL)
        wait_until(lambda: (tmp_path / f"{second.pid}.started").exists(),
                   "the call to be redelivered to the second worker", timeout=20)
        (tmp_path / "release").touch()
        assert future.result() == second.pid
        assert client.call(workers.service, "echo", "next") == "next"
        assert client._caller.pending_count() == 0


def test_sigterm_finishes_the_call_in_flight_then_exits_zero(workers, amqp_uri, tmp_path):
    worker = workers()
    with ClusterRpcClient(amqp_uri, timeout=30) as client:
        call_when_ready(client, workers.service, "pid")
        future = client.call_async(workers.service, "hold", str(tmp_path))
        wait_until(lambda: (tmp_path / f"{worker.pid}.started").exists(), "the call to start", timeout=10)
        worker.process.send_signal(signal.SIGTERM)
        (tmp_path / "release").touch()
        assert future.result() == worker.pid
        assert worker.process.wait(20) == 0, worker.output()


def test_cli_call_prints_json_and_reports_remote_errors(workers, amqp_uri):
    workers()
    env = {**os.environ, "AMQPRPC_BROKER_URL": amqp_uri}
    with ClusterRpcClient(amqp_uri, timeout=10) as client:
        call_when_ready(client, workers.service, "pid")
    cli = [sys.executable, "-m", "amqprpc.cli", "call"]
    done = subprocess.run([*cli, f"{workers.service}.echo", '{"value": {"a": [1, 2]}}'],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"a": [1, 2]}
    done = subprocess.run([*cli, f"{workers.service}.echo", '["positional"]', "--reply-queue"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert json.loads(done.stdout) == "positional"
    done = subprocess.run([*cli, f"{workers.service}.missing"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith("MethodNotFound:") and "Traceback" not in done.stderr


def test_supervisor_restarts_a_dead_worker_and_stops_all(workers, amqp_uri):
    supervisor = workers("--workers", "2")
    with ClusterRpcClient(amqp_uri, timeout=10) as client:
        call_when_ready(client, workers.service, "pid")

        def serving_pids() -> set[int]:
            return {f.result() for f in [client.call_async(workers.service, "pid") for _ in range(40)]}

        def two_serving() -> set[int] | None:
            pids = serving_pids()
            return pids if len(pids) == 2 else None

        children = wait_until(two_serving, "two worker processes to serve", timeout=30)
        victim = sorted(children)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: (pids := two_serving()) is not None and victim not in pids,
                   "a replacement worker to serve", timeout=30)
    supervisor.process.send_signal(signal.SIGTERM)
    assert supervisor.process.wait(30) == 0, supervisor.output()
    for pid in children - {victim}:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_health_endpoints(workers, amqp_uri):
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workers("--health-port", str(port))

    def status(path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
        except OSError:
            return 0, {}

    wait_until(lambda: status("/healthz")[0] == 200, "/healthz to answer 200", timeout=20)
    code, body = status("/readyz")
    assert code == 200 and body["services"][workers.service]["connected"] is True


def test_gevent_pool_serves_and_stops_cleanly(workers, amqp_uri, tmp_path):
    pytest.importorskip("gevent")
    worker = workers("--pool", "gevent", "--concurrency", "20")
    with ClusterRpcClient(amqp_uri, timeout=20) as client:
        call_when_ready(client, workers.service, "pid")
        futures = [client.call_async(workers.service, "echo", i) for i in range(200)]
        assert [f.result() for f in futures] == list(range(200))
        held = client.call_async(workers.service, "hold", str(tmp_path))
        wait_until(lambda: (tmp_path / f"{worker.pid}.started").exists(), "the call to start", timeout=10)
        assert client.call(workers.service, "echo", "concurrent") == "concurrent"  # not blocked
        worker.process.send_signal(signal.SIGTERM)
        (tmp_path / "release").touch()
        assert held.result() == worker.pid
    assert worker.process.wait(20) == 0, worker.output()


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_worker_that_cannot_start_exits_2_and_is_not_restarted(amqp_uri, processes, tmp_path):
    log_path = tmp_path / "broken.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "amqprpc.cli", "run", "tests.integration.apps.broken",
             "--broker", amqp_uri, "--workers", processes],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            assert process.wait(30) == 2
        finally:
            process.kill()
    output = log_path.read_text()
    assert "BROKEN_URL is not set" in output and "Traceback" not in output
    assert "restarting in" not in output


def test_a_container_that_fails_to_start_leaves_no_threads(amqp_uri):
    import threading

    from amqprpc import Config, ConfigError, ServiceContainer

    from .apps.broken import BrokenService

    before = threading.active_count()
    with pytest.raises(ConfigError, match="BROKEN_URL"):
        ServiceContainer(BrokenService, Config(broker_url=amqp_uri)).start()
    assert threading.active_count() == before
