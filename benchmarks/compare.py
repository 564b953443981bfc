"""``--compare``: this run's figures against an earlier results file, each within its noise band.

A figure regressed when it moved the wrong way by more than its band. The band is the
larger of 5 % and the relative spread, (max - min) / median, of that figure's rounds in
either run: a figure whose rounds scatter by 20 % cannot show a 10 % change. Compared, for
every (workload, variant, system) cell present in both runs: calls/s (higher is better),
p50 latency, CPU-ms per call in total and in the server group (lower is better), and the
same-round ratios of amqprpc to raw py-amqp and to Nameko (the figures least moved by the
machine's load). Absolute figures compare only on the same machine; ``machine_warning``
says when the two runs' machines differ.

Standard library only, like report.py.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report import cells_of, find, paired_ratios

MIN_BAND = 0.05
_RESULTS_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:-(\d+))?\.json$")


@dataclass(frozen=True)
class Row:
    workload: str
    variant: str
    system: str
    figure: str
    before: float
    after: float
    band: float  # relative, 0.05 = 5 %
    higher_is_better: bool

    @property
    def change(self) -> float:
        return self.after / self.before - 1.0

    @property
    def verdict(self) -> str:
        worse = -self.change if self.higher_is_better else self.change
        if worse > self.band:
            return "regressed"
        if -worse > self.band:
            return "improved"
        return "within noise"


Figure = tuple[str, Callable[[dict[str, Any]], float | None], bool]

FIGURES: tuple[Figure, ...] = (
    ("calls/s", lambda r: r.get("calls_per_s"), True),
    ("p50 ms", lambda r: r.get("p50_ms"), False),
    ("CPU-ms per call, total", lambda r: (r.get("cpu_ms_per_call") or {}).get("total"), False),
    ("CPU-ms per call, server", lambda r: (r.get("cpu_ms_per_call") or {}).get("server"), False),
)
RATIOS = (("raw", "same-round ratio to raw py-amqp"), ("nameko", "same-round ratio to Nameko"))


def spread(values: list[float]) -> float:
    """(max - min) / median of the values; 0 for fewer than two."""
    if len(values) < 2:
        return 0.0
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else 0.0


def band(before: list[float], after: list[float]) -> float:
    return max(MIN_BAND, spread(before), spread(after))


def _cells(results: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for workload, entry in (results.get("workloads") or {}).items():
        for cell in entry.get("cells") or []:
            if not cell.get("error"):
                out[(workload, cell["variant"], cell["system"])] = cell
    return out


def _values(cell: dict[str, Any], pick: Callable[[dict[str, Any]], float | None]) -> list[float]:
    return [v for v in (pick(r) for r in cell.get("rounds") or []) if isinstance(v, int | float) and v > 0]


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[Row]:
    """Every figure both runs measured, with its band and verdict."""
    old, new = _cells(before), _cells(after)
    rows = []
    for key in sorted(old.keys() & new.keys()):
        workload, variant, system = key
        for name, pick, higher in FIGURES:
            was, now = _values(old[key], pick), _values(new[key], pick)
            if was and now:
                rows.append(Row(workload, variant, system, name, statistics.median(was),
                                statistics.median(now), band(was, now), higher))
        if system != "amqprpc":
            continue
        higher = workload != "seq"  # sequential: the ratio of latencies; otherwise of calls/s
        for den, name in RATIOS:
            key = "calls_per_s" if higher else "p50_ms"
            was = paired_ratios(before, workload, variant, "amqprpc", den, key)
            now = paired_ratios(after, workload, variant, "amqprpc", den, key)
            if was and now:
                rows.append(Row(workload, variant, system, name + (" (p50)" if not higher else ""),
                                statistics.median(was), statistics.median(now), band(was, now), higher))
    return rows


def regressions(rows: list[Row]) -> list[Row]:
    return [row for row in rows if row.verdict == "regressed"]


FLOOR_MOVED = 0.15  # raw py-amqp's rate moving this much says the machine changed, not amqprpc


def machine_warning(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    """A sentence when the runs' machines differ (CPU model or core count), or when the plain
    raw py-amqp pair, whose code no change of ours touches, moved by more than
    ``FLOOR_MOVED`` (a VM on another host shows the same CPU model); else None."""
    was, now = before.get("machine") or {}, after.get("machine") or {}
    differs = [key for key in ("cpu_model", "nproc") if was.get(key) != now.get(key)]
    if differs:
        return ("The two runs ran on different machines (" + ", ".join(
            f"{key}: {was.get(key)!r} then {now.get(key)!r}" for key in differs)
            + "): compare the same-round ratios, not absolute figures.")
    floor_was, floor_now = _raw_rate(before), _raw_rate(after)
    if floor_was and floor_now and abs(floor_now / floor_was - 1) > FLOOR_MOVED:
        return (f"raw py-amqp, the same code in both runs, did {floor_was:,.0f} then {floor_now:,.0f} "
                f"calls/s with 100 in flight ({floor_now / floor_was - 1:+.0%}): the machine changed "
                "under the same CPU model, so absolute figures moved with it; compare the same-round "
                "ratios.")
    return None


def _raw_rate(results: dict[str, Any]) -> float | None:
    cell = find(cells_of(results, "window"), "raw", "8 B")
    return cell["rate_median"] if cell else None


def results_key(path: Path) -> tuple[str, int] | None:
    """Sort key of a results file name (``2026-12-04.json`` < ``2026-12-04-2.json``)."""
    match = _RESULTS_NAME.match(path.name)
    if match is None:
        return None
    return match[1], int(match[2] or 1)


def previous_results(directory: Path, this_run: Path | None) -> Path | None:
    """The newest results file in ``directory`` other than ``this_run``."""
    candidates = [(key, path) for path in directory.glob("*.json")
                  if (key := results_key(path)) is not None
                  and (this_run is None or path.resolve() != this_run.resolve())]
    if this_run is not None and (mine := results_key(this_run)) is not None:
        candidates = [(key, path) for key, path in candidates if key < mine]
    return max(candidates)[1] if candidates else None


def line(row: Row) -> str:
    """One finding, for stderr."""
    return (f"{row.workload} {row.variant} {row.system}: {row.figure} {row.before:.4g} -> "
            f"{row.after:.4g} ({row.change:+.1%}, noise band {row.band:.0%}): {row.verdict}")
