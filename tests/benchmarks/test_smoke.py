"""The benchmark runner still works: a tiny run of one amqprpc-only workload, no timing asserted.

``python -m benchmarks --quick --only inflight`` needs only the broker and this repository
(no Nameko venv, no matplotlib): it starts an echo worker, drives one client through its
protocol, accounts CPU, cleans up, and writes the results JSON where it is told to.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import render
from benchmarks.workloads import parse_wrk

REPO = Path(__file__).resolve().parents[2]


def quick_run(amqp_uri: str, out: Path, *args: str, timeout: float,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """``python -m benchmarks --quick ARGS`` against the test broker; its one results file."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", *args, "--broker", amqp_uri, "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = out.glob("*.json")
    return dict(json.loads(path.read_text()))


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_quick_run_writes_results(amqp_uri: str, tmp_path: Path) -> None:
    out, cache = tmp_path / "results", tmp_path / "venvs"
    cache.mkdir()
    results = quick_run(amqp_uri, out, "--only", "inflight", timeout=80,
                        env={**os.environ, "AMQPRPC_BENCH_CACHE": str(cache)})

    assert not any(cache.iterdir()), "an amqprpc-only workload must not build the benchmark venv"
    assert set(results["workloads"]) == {"inflight"}
    [cell] = results["workloads"]["inflight"]["cells"]
    assert cell["system"] == "amqprpc" and cell["error"] is None
    [record] = cell["rounds"]
    assert record["errors"] == 0 and record["calls_per_s"] > 0
    assert [wave["pending_after"] for wave in record["waves"]] == [0, 0]  # every call answered
    assert set(record["cpu_ms_per_call"]) == {"client", "server", "broker", "total"}
    assert record["cpu_ms_per_call"]["client"] > 0
    assert results["machine"]["nproc"] >= 1 and results["broker"]["version"]

    page = render(results, charts=[], analysis=None)  # the report renders from what was written
    assert "## 6. Memory" in page and "calls still pending" in page


def test_wrk_output_is_parsed() -> None:
    text = """Running 5s test @ http://127.0.0.1:8000/echo
  2 threads and 50 connections
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    2.50ms
     99%    1.02s
  10021 requests in 5.00s, 1.53MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:   2004.20
"""
    parsed = parse_wrk(text)
    assert parsed["calls_per_s"] == pytest.approx(2004.2)
    assert parsed["p50_ms"] == pytest.approx(0.812)
    assert parsed["p99_ms"] == pytest.approx(1020.0)
    assert parsed["requests"] == 10021
    assert parsed["errors"] == 6


PEERS = ("faststream", "aio-pika", "celery", "grpc", "grpc-aio")


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_every_peer_starts_answers_and_is_torn_down(amqp_uri: str, tmp_path: Path) -> None:
    """Each contender of issue #18 in its own venv: started, called, stopped, and reported;
    FastStream also behind FastAPI, called over HTTP by wrk (when wrk is installed)."""
    results = quick_run(amqp_uri, tmp_path / "results", "--only", "seq,http", "--duration", "0.5",
                        "--systems", ",".join(PEERS), timeout=280)
    cells = {cell["system"]: cell for cell in results["workloads"]["seq"]["cells"]}
    assert set(cells) == set(PEERS)
    for system, cell in cells.items():
        assert cell["error"] is None, (system, cell["error"])
        [record] = cell["rounds"]
        assert record["errors"] == 0 and record["calls_per_s"] > 0, system
    assert {"faststream", "aio-pika", "celery", "grpcio"} <= set(results["versions"])
    if shutil.which("wrk"):
        [http] = results["workloads"]["http"]["cells"]  # the only peer with an HTTP front of its own
        assert http["system"] == "faststream" and http["error"] is None, http
        assert http["rounds"][0]["calls_per_s"] > 0 and http["rounds"][0]["errors"] == 0
    else:
        assert any("Workload http skipped" in note for note in results["notes"])
    page = render(results, charts=[], analysis=None)
    for label in ("FastStream 0.7.8", "aio-pika 10.2.1", "Celery 5.7.0", "gRPC 1.85.1 sync", "grpc.aio"):
        assert label in page


EVENT_PEERS = ("faststream", "aio-pika", "celery")  # gRPC has no broker, so no events


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_every_peer_event_sink_handles_dispatched_events(amqp_uri: str, tmp_path: Path) -> None:
    """Workload 5 for each peer with events: its handler processes (one, then two) start on the
    shared handler queue, handle what its dispatcher publishes, and are torn down."""
    results = quick_run(amqp_uri, tmp_path / "results", "--only", "events", "--duration", "0.5",
                        "--systems", ",".join(EVENT_PEERS), timeout=220)
    cells = results["workloads"]["events"]["cells"]
    assert {(cell["system"], cell["variant"]) for cell in cells} == {
        (system, variant) for system in EVENT_PEERS for variant in ("1 handler", "2 handlers")}
    for cell in cells:
        assert cell["error"] is None, (cell["system"], cell["error"])
        [record] = cell["rounds"]
        assert record["handled"] > 0 and record["calls_per_s"] > 0, cell["system"]
        assert record["dispatched_per_s"] > 0 and record["errors"] == 0, cell["system"]


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_charts_draw_a_run_with_every_contender(tmp_path: Path) -> None:
    """The charts of a committed run with every peer in it (they once raised KeyError on a
    system they did not know, and the page kept November's charts)."""
    from benchmarks import venvs

    python = venvs.ensure_python()  # matplotlib lives in the benchmark venv (built once, ~20 s)
    run = REPO / "benchmarks" / "results" / "2026-12-04.json"
    done = subprocess.run([str(python), "-m", "benchmarks.charts", str(run), str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    drawn = {Path(line).name for line in done.stdout.split()}
    assert drawn == {"throughput.png", "latency.png", "cpu.png", "memory.png"}
    assert all((tmp_path / name).stat().st_size > 10_000 for name in drawn)
