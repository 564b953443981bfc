"""``python -m benchmarks``: amqprpc vs Nameko 2.14.1, raw py-amqp and the peers (FastStream,
aio-pika, Celery, gRPC), one command.

Runs every workload (or ``--only`` some), writes ``benchmarks/results/<date>.json``, and
(on a full run) ``docs/benchmarks.md`` with charts in ``docs/benchmarks/``. ``--quick``
is a smoke run (one round of ~1 s per cell) that writes only the JSON unless ``--docs``
is given. ``--report RESULTS.json`` re-renders the page and charts from a results file.
``--compare [RESULTS.json]`` sets every figure against an earlier run (default: the newest
other file in benchmarks/results/), on the page and on stderr (benchmarks/compare.py).

Exit status: 0; 1 when a workload or the charts failed; 3 when ``--compare`` found a regression.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from amqprpc.config import mask_password

from . import compare, procstat, report, venvs
from .runner import REPO, Bench, BenchError, broker_info
from .systems import BY_NAME as SYSTEMS
from .workloads import BY_NAME as WORKLOADS
from .workloads import WORKLOADS as ORDER
from .workloads import log, tool_available

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 round of ~1 s per cell; writes only the JSON unless --docs")
    parser.add_argument("--only", action="append", metavar="WORKLOAD",
                        help=f"run only these workloads (repeatable or comma-separated): "
                             f"{', '.join(WORKLOADS)}")
    parser.add_argument("--systems", metavar="NAMES",
                        help=f"comma-separated subset of: {', '.join(SYSTEMS)} (default: all)")
    parser.add_argument("--rounds", type=int, help="rounds per cell (default 3; --quick: 1)")
    parser.add_argument("--duration", type=float, help="seconds per timed window (default 5; --quick: 1)")
    parser.add_argument("--broker", default=DEFAULT_URL, help=f"broker URL (default {DEFAULT_URL})")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results",
                        help="directory for the results JSON (default benchmarks/results)")
    parser.add_argument("--docs", type=Path,
                        help="write the report here (default docs/benchmarks.md on a full run)")
    parser.add_argument("--no-docs", action="store_true", help="write only the results JSON")
    parser.add_argument("--report", type=Path, metavar="RESULTS.json",
                        help="do not measure: render the report and charts from this results file")
    parser.add_argument("--baseline", type=Path, metavar="RESULTS.json",
                        help="an earlier results file: the report shows amqprpc's key figures next to it")
    parser.add_argument("--compare", nargs="?", const="latest", metavar="RESULTS.json",
                        help="set every figure against an earlier results file (default: the newest "
                             "other one in --out); exit 3 when one regressed beyond its noise band")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only or [] for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    args.only = names
    systems = [s.strip() for s in (args.systems or "").split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    args.systems = systems or list(SYSTEMS)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be >= 1 and --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report:
        results = report.load(args.report)
        results["results_file"] = args.report.name
        previous = previous_run(args, args.report)
        drawn = publish(results, args.report, args.docs or REPO / "docs" / "benchmarks.md",
                        args.baseline, previous)
        return compared(results, previous, 0 if drawn else 1)
    previous = previous_run(args, None)  # before measuring: a wrong path fails now, not in 15 minutes
    workloads = [w for w in ORDER if not args.only or w.name in args.only]
    notes: list[str] = []
    wanted = {s for w in workloads for s in w.systems if s.name in args.systems}
    bench_python = None
    if any(s.needs_bench_venv for s in wanted):
        try:
            bench_python = venvs.ensure_python()
        except venvs.BenchEnvError as exc:
            notes.append(f"Nameko and raw py-amqp were skipped: their venv could not be built ({exc}).")
            log(notes[-1])
    peers_python = None
    if any(s.is_peer for s in wanted):
        try:
            peers_python = venvs.ensure_peers_python()
        except venvs.BenchEnvError as exc:
            notes.append(f"FastStream, aio-pika, Celery and gRPC were skipped: their venv could not "
                         f"be built ({exc}).")
            log(notes[-1])
    allowed = [n for n in args.systems
               if (bench_python is not None or not SYSTEMS[n].needs_bench_venv)
               and (peers_python is not None or not SYSTEMS[n].is_peer)]

    started = _now()
    results: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)]),
        "started": started.strftime("%Y-%m-%d %H:%M:%S"),
        "options": {"rounds": args.rounds, "duration": args.duration, "quick": args.quick,
                    "only": args.only, "systems": allowed},
        "broker_url": mask_password(args.broker),
        "machine": procstat.machine(),
        "uptime_before": _uptime(),
        "workloads": {},
        "notes": notes,
    }
    results["broker"] = broker_info(args.broker)
    results["versions"] = versions(bench_python, peers_python)
    bench = Bench(url=args.broker, rounds=args.rounds, duration=args.duration,
                  quick=args.quick, bench_python=bench_python, keep_logs=args.keep_logs,
                  peers_python=peers_python)
    if bench.broker_pid is None:
        notes.append("The broker's process was not found (not local?): broker CPU reads 0.")
    try:
        for workload in workloads:
            missing = [tool for tool in workload.needs if not tool_available(tool)]
            if missing:
                notes.append(f"Workload {workload.name} skipped: {', '.join(missing)} is not installed "
                             "(Debian: `apt-get install -y wrk`).")
                log(notes[-1])
                continue
            systems = [s for s in workload.systems if s.name in allowed]
            if not systems:
                continue
            log(f"workload {workload.name}: {workload.title} ({', '.join(s.name for s in systems)})")
            entry: dict[str, Any] = {"title": workload.title, "cells": []}
            try:
                entry["cells"] = [cell.as_dict() for cell in workload.run(bench, systems)]
            except BenchError as exc:
                entry["error"] = str(exc)
                notes.append(f"Workload {workload.name} failed: {str(exc).splitlines()[0]}")
                log(f"workload {workload.name} FAILED: {exc}")
            finally:
                bench.delete_names()
            results["workloads"][workload.name] = entry
    finally:
        bench.close()
    results["finished"] = _now().strftime("%Y-%m-%d %H:%M:%S")
    results["uptime_after"] = _uptime()
    results["git_after"] = git_revision()
    results["load_samples"] = bench.load_samples
    path = write_results(results, args.out, started)
    log(f"results: {path}")
    docs = None if args.no_docs else (args.docs or (None if args.quick or args.only else
                                                     REPO / "docs" / "benchmarks.md"))
    drawn = publish(results, path, docs, args.baseline, previous) if docs is not None else True
    failed = not drawn or any("error" in w or any(c.get("error") for c in w["cells"])
                              for w in results["workloads"].values())
    return compared(results, previous, 1 if failed else 0)


def previous_run(args: argparse.Namespace, this_run: Path | None) -> dict[str, Any] | None:
    """The results ``--compare`` names (or the newest one before ``this_run``), loaded; None
    without the flag."""
    if args.compare is None:
        return None
    path = (compare.previous_results(args.out, this_run) if args.compare == "latest"
            else Path(args.compare))
    if path is None:
        raise SystemExit(f"--compare: no earlier results file in {args.out}")
    if not path.exists():
        raise SystemExit(f"--compare: {path} does not exist")
    previous = report.load(path)
    previous["results_file"] = path.name
    return previous


def compared(results: dict[str, Any], previous: dict[str, Any] | None, status: int) -> int:
    """Print ``--compare``'s regressions; 3 if any (a failed workload's 1 wins)."""
    if previous is None:
        return status
    rows = compare.compare(previous, results)
    warning = compare.machine_warning(previous, results)
    if warning:
        log(warning)
    found = compare.regressions(rows)
    for row in found:
        log("REGRESSED " + compare.line(row))
    log(f"compared {len(rows)} figures with {previous['results_file']}: {len(found)} regressed")
    return status or (3 if found else 0)


def publish(results: dict[str, Any], results_path: Path, docs: Path, baseline_path: Path | None,
            previous: dict[str, Any] | None = None) -> bool:
    """Charts (in the bench venv) and the markdown page; False if the charts failed (the page
    says so, and the run exits 1: a page with stale charts must not pass for a fresh one)."""
    charts_dir = docs.parent / docs.stem
    python = venvs.existing_python()
    charts: list[str] = []
    if python is None:
        results["charts_note"] = ("No charts: matplotlib lives in the benchmark venv, which this run "
                                  "did not build (run without --systems amqprpc to build it).")
    else:
        done = subprocess.run([str(python), "-m", "benchmarks.charts", str(results_path), str(charts_dir)],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        if done.returncode:
            results["charts_note"] = f"Charts failed: {done.stderr.strip()[-500:]}"
            log(results["charts_note"])
        charts = [line for line in done.stdout.splitlines() if line.strip()]
    results.setdefault("results_file", results_path.name)
    baseline = None
    if baseline_path is not None:
        baseline = report.load(baseline_path)
        baseline.setdefault("results_file", baseline_path.name)
    report.write(results, docs, charts, REPO / "benchmarks" / "analysis.md", baseline, previous)
    log(f"report: {docs}" + (f", charts: {', '.join(charts)}" if charts else ""))
    return "charts_note" not in results or python is None


def write_results(results: dict[str, Any], out: Path, started: datetime.datetime) -> Path:
    """``<date>.json``, or ``<date>-2.json``... : a run never overwrites another."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y-%m-%d")
    path = out / f"{stem}.json"
    n = 2
    while path.exists():
        path = out / f"{stem}-{n}.json"
        n += 1
    results["results_file"] = path.name
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


def versions(bench_python: Path | None, peers_python: Path | None = None) -> dict[str, str]:
    import importlib.metadata as metadata

    found: dict[str, str] = {}
    for name in ("amqprpc", "amqp", "aiohttp"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    if "amqprpc" in found:
        found["amqprpc"] += f" (git {git_revision()})"
    if bench_python is not None:
        bench = venvs.installed_versions(bench_python, ("nameko", "eventlet", "kombu", "amqp", "matplotlib"))
        for name, version in bench.items():
            key = f"{name} (bench venv)" if name == "amqp" else name
            found[key] = version
    if peers_python is not None:
        peers = venvs.installed_versions(peers_python, ("faststream", "aio-pika", "aiormq", "celery",
                                                        "kombu", "grpcio", "fastapi", "uvicorn"))
        for name, version in peers.items():
            found[f"{name} (peers venv)" if name == "kombu" else name] = version
    wrk = procstat.tool_version(["wrk", "-v"])
    if wrk:
        found["wrk"] = wrk.split()[1] if len(wrk.split()) > 1 else wrk
    return found


def git_revision() -> str:
    """HEAD, plus ``+dirty`` when amqprpc/ or http_bridge/ differ from it: workers import the
    working tree when they start, so edits made during a run would show up in later cells."""
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if rev.returncode:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "amqprpc", "http_bridge"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return rev.stdout.strip() + ("+dirty" if dirty else "")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _uptime() -> str:
    return procstat.tool_version(["uptime"]) or "?"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except BenchError as exc:
        sys.stderr.write(f"[bench] {exc}\n")
        sys.exit(1)
