"""The report's verdicts and ``--compare`` on results made up here (no broker, no venv)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import __main__ as bench_main
from benchmarks import compare
from benchmarks.report import SYSTEM_LABELS, render, targets_section

SYSTEMS = tuple(SYSTEM_LABELS)


def _round(number: int, rate: float, p50: float, server: float = 0.15) -> dict[str, Any]:
    return {"round": number, "calls_per_s": rate, "p50_ms": p50, "p99_ms": p50 * 2, "errors": 0,
            "cpu_pct": {"client": 50, "server": 50, "broker": 50},
            "cpu_ms_per_call": {"client": 0.1, "server": server, "broker": 0.2, "total": 0.3 + server}}


def _cell(system: str, variant: str, rates: list[float], p50s: list[float], server: float = 0.15) -> dict:
    return {"system": system, "variant": variant, "error": None,
            "rounds": [_round(i + 1, r, p, server) for i, (r, p) in enumerate(zip(rates, p50s, strict=True))]}


def results(window: dict[str, float] | None = None, seq: dict[str, float] | None = None,
            http: dict[str, float] | None = None, server: float = 0.15, spread: float = 0.0,
            name: str = "2026-12-04.json") -> dict[str, Any]:
    """Three rounds per cell; ``spread`` scatters the rounds by that share around the value."""
    def rounds(value: float) -> list[float]:
        return [value * (1 - spread), value, value * (1 + spread)]

    workloads: dict[str, Any] = {}
    if window:
        workloads["window"] = {"cells": [_cell(s, "8 B", rounds(rate), [20.0] * 3, server)
                                         for s, rate in window.items()]}
    if seq:
        workloads["seq"] = {"cells": [_cell(s, "8 B", [1000.0] * 3, rounds(p50)) for s, p50 in seq.items()]}
    if http:
        workloads["http"] = {"cells": [_cell(s, "50 connections", rounds(rate), [5.0] * 3)
                                       for s, rate in http.items()]}
    return {"command": "python -m benchmarks", "workloads": workloads, "results_file": name,
            "machine": {"nproc": 2, "cpu_model": "Test CPU", "ram_gib": 8, "os": "Debian", "kernel": "6",
                        "python": "3.11"},
            "versions": {"amqprpc": "0 (git abc)"}, "notes": [], "broker": {},
            "started": "2026-12-04 10:00:00", "finished": "2026-12-04 10:20:00",
            "options": {"rounds": 3, "duration": 5.0}}


def _row(section: str, what: str) -> str:
    [row] = [line for line in section.splitlines() if what in line]
    return row


def test_peer_targets_have_verdicts_met_and_not_met():
    met = targets_section(results(window={"amqprpc": 6000, "faststream": 1000, "aio-pika": 1500}))
    assert _row(met, "amqprpc / FastStream").endswith("| met |")
    assert _row(met, "amqprpc / aio-pika").endswith("| met |")
    short = targets_section(results(window={"amqprpc": 4000, "faststream": 1000, "aio-pika": 1500}))
    assert _row(short, "amqprpc / FastStream").endswith("**not met** |")  # 4x < 5x
    assert _row(short, "amqprpc / aio-pika").endswith("**not met** |")  # 2.67x < 3x
    assert "2.67x" in _row(short, "amqprpc / aio-pika")


def test_aio_pika_below_three_times_is_not_met():
    section = targets_section(results(window={"amqprpc": 2900, "aio-pika": 1000}))
    assert _row(section, "amqprpc / aio-pika").endswith("**not met** |")


def test_a_target_is_absent_when_its_peer_did_not_run():
    section = targets_section(results(window={"amqprpc": 6000, "raw": 6000}))
    assert "FastStream" not in section and "aio-pika" not in section


def test_worker_cpu_target():
    under = targets_section(results(window={"amqprpc": 1}, server=0.16))
    assert _row(under, "worker CPU").endswith("| met |")
    over = targets_section(results(window={"amqprpc": 1}, server=0.30))
    assert _row(over, "worker CPU").endswith("**not met** |") and "0.300 ms" in over


def test_the_wire_target_is_1_15():
    section = targets_section(results(seq={"amqprpc": 0.60, "raw": 0.50, "raw-wire": 0.50}))
    assert _row(section, "on Nameko's wire").endswith("**not met** |")  # 1.2x: under 1.3, over 1.15
    assert _row(section, "amqprpc / raw py-amqp |").endswith("| met |")
    assert "<= 1.15x" in _row(section, "on Nameko's wire")


def test_http_target_against_faststream():
    section = targets_section(results(http={"amqprpc": 3000, "faststream": 1500}))
    assert _row(section, "FastStream behind FastAPI").endswith("| met |")
    section = targets_section(results(http={"amqprpc": 2000, "faststream": 1500}))
    assert _row(section, "FastStream behind FastAPI").endswith("**not met** |")


def test_the_page_renders_with_every_contender():
    everyone = {system: 1000.0 + i for i, system in enumerate(SYSTEMS)}
    page = render(results(window=everyone, seq={s: 0.5 for s in SYSTEMS}), charts=[], analysis=None)
    for section in ("## 1. Sequential", "## 2. One client process"):
        text = page.split(section, 1)[1].split("\n## ", 1)[0]
        for system in SYSTEMS:
            assert f"| {SYSTEM_LABELS[system]} |" in text, (section, system)


def test_compare_flags_a_real_drop_and_not_noise():
    before = results(window={"amqprpc": 5000, "raw": 5000})
    rows = compare.compare(before, results(window={"amqprpc": 4000, "raw": 5000}))
    rate = next(r for r in rows if r.system == "amqprpc" and r.figure == "calls/s")
    assert rate.verdict == "regressed" and rate.change == pytest.approx(-0.2)
    ratio = next(r for r in rows if r.figure == "same-round ratio to raw py-amqp")
    assert ratio.verdict == "regressed" and ratio.before == pytest.approx(1.0)

    rows = compare.compare(before, results(window={"amqprpc": 4900, "raw": 5000}))
    assert not compare.regressions(rows)
    assert next(r for r in rows if r.figure == "calls/s" and r.system == "amqprpc").verdict == "within noise"


def test_the_band_widens_with_the_rounds_spread():
    before = results(window={"amqprpc": 5000}, spread=0.15)  # rounds 4250 / 5000 / 5750: 30 %
    rows = compare.compare(before, results(window={"amqprpc": 4000}))
    rate = next(r for r in rows if r.figure == "calls/s")
    assert rate.band == pytest.approx(0.30) and rate.verdict == "within noise"


def test_latency_and_cpu_are_lower_is_better():
    rows = compare.compare(results(seq={"amqprpc": 0.5}, window={"amqprpc": 1}, server=0.15),
                           results(seq={"amqprpc": 0.4}, window={"amqprpc": 1}, server=0.30))
    p50 = next(r for r in rows if r.workload == "seq" and r.figure == "p50 ms")
    assert p50.verdict == "improved"
    cpu = next(r for r in rows if r.workload == "window" and r.figure == "CPU-ms per call, server")
    assert cpu.verdict == "regressed"


def test_machine_mismatch_is_named():
    other = results()
    other["machine"] = {**other["machine"], "nproc": 4}
    assert "nproc" in (compare.machine_warning(results(), other) or "")
    assert compare.machine_warning(results(), results()) is None


def test_a_moved_raw_floor_says_the_machine_changed():
    """Same CPU model, but raw py-amqp (code untouched) lost a third: a different host."""
    before, after = results(window={"raw": 6000}), results(window={"raw": 4000})
    assert "the machine changed" in (compare.machine_warning(before, after) or "")
    assert compare.machine_warning(before, results(window={"raw": 5500})) is None  # -8 %: load


def test_the_previous_run_is_the_newest_other_file(tmp_path: Path):
    for name in ("2026-11-28.json", "2026-11-28-2.json", "2026-12-04.json", "notes.json"):
        (tmp_path / name).write_text("{}")
    assert compare.previous_results(tmp_path, tmp_path / "2026-12-04.json").name == "2026-11-28-2.json"
    assert compare.previous_results(tmp_path, None).name == "2026-12-04.json"
    assert compare.previous_results(tmp_path, tmp_path / "2026-11-28.json") is None


def test_compare_exits_3_on_a_regression(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(bench_main.venvs, "existing_python", lambda: None)  # no charts, no venv
    old, new = tmp_path / "2026-11-28.json", tmp_path / "2026-12-04.json"
    old.write_text(json.dumps(results(window={"amqprpc": 5000}, name=old.name)))
    new.write_text(json.dumps(results(window={"amqprpc": 3000}, name=new.name)))
    page = tmp_path / "page.md"
    status = bench_main.main(["--report", str(new), "--compare", "--out", str(tmp_path), "--docs", str(page)])
    assert status == 3
    text = page.read_text()
    assert "## Against the previous run (--compare)" in text and "**regressed**" in text
    assert not (tmp_path / "page").exists() or not any((tmp_path / "page").iterdir())

    new.write_text(json.dumps(results(window={"amqprpc": 5100}, name=new.name)))
    assert bench_main.main(["--report", str(new), "--compare", str(old), "--docs", str(page)]) == 0
