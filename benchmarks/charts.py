"""PNG charts of a results file, drawn with matplotlib in the benchmark venv.

``python -m benchmarks.charts RESULTS.json OUTDIR`` (run by the runner with the venv's
interpreter; matplotlib is not a dependency of the project) writes ``throughput.png``,
``latency.png``, ``cpu.png`` and ``memory.png`` and prints their paths, one a line.
Bars are medians over the rounds; whiskers span min..max.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.report import GROUPS, SYSTEM_LABELS, cells_of, find, label, load

COLORS = {"amqprpc": "#1f77b4", "nameko": "#ff7f0e", "raw": "#7f7f7f", "raw-wire": "#bcbcbc",
          "faststream": "#2ca02c", "aio-pika": "#d62728", "celery": "#9467bd", "grpc": "#8c564b",
          "grpc-aio": "#e377c2"}
SYSTEMS = tuple(SYSTEM_LABELS)  # every contender, in the page's order


def color(system: str) -> str:
    """A system's colour; one the chart does not know yet is drawn black, not dropped."""
    return COLORS.get(system, "#000000")


def ordered(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells in the page's system order (unknown systems last), whatever order they ran in."""
    rank = {system: i for i, system in enumerate(SYSTEMS)}
    return sorted(cells, key=lambda c: rank.get(c["system"], len(rank)))


def panel_width(results: dict[str, Any], workloads: list[str]) -> float:
    """Wide enough for the most systems any of ``workloads`` has, side by side."""
    systems = max(len({c["system"] for c in cells_of(results, w)}) for w in workloads)
    return max(4.2, 0.75 * systems + 1.2)


def tick_label(system: str) -> str:
    """A system's name under its bars: long names wrap so neighbours do not overlap."""
    return label(system).replace(", ", ",\n")


def grouped_bars(ax: Any, cells: list[dict[str, Any]], variants: list[str], title: str, unit: str) -> None:
    systems = list(dict.fromkeys(c["system"] for c in ordered(cells)))
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        xs, heights, low, high = [], [], [], []
        for j, variant in enumerate(variants):
            cell = find(cells, system, variant)
            if cell is None or cell["rate_median"] is None:
                continue
            xs.append(j + (i - (len(systems) - 1) / 2) * width)
            heights.append(cell["rate_median"])
            low.append(cell["rate_median"] - cell["rate_min"])
            high.append(cell["rate_max"] - cell["rate_median"])
        bars = ax.bar(xs, heights, width, yerr=[low, high], capsize=3, label=label(system),
                      color=color(system))
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    ax.set_xticks(range(len(variants)), variants)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)
    rows = -(-len(systems) // 3)  # the legend's rows, above the bars
    ax.set_ylim(top=ax.get_ylim()[1] * (1.15 + 0.1 * rows))
    ax.legend(fontsize=6, loc="upper right", ncols=min(3, len(systems)))


def throughput(results: dict[str, Any], out: Path) -> Path | None:
    panels = [(w, t, u) for w, t, u in (
        ("window", "one client, 100 in flight", "calls/s"),
        ("scaling", "4 clients x 25, N worker processes", "calls/s"),
        ("http", "HTTP, wrk 50 connections", "requests/s"),
        ("events", "events dispatch -> handled", "events/s"),
    ) if cells_of(results, w)]
    if not panels:
        return None
    width = panel_width(results, [w for w, _, _ in panels])
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 4.4), squeeze=False)
    for ax, (workload, title, unit) in zip(axes[0], panels, strict=True):
        cells = cells_of(results, workload)
        variants = list(dict.fromkeys(c["variant"] for c in cells))
        grouped_bars(ax, cells, variants, title, unit)
    fig.suptitle("Throughput (median of rounds; whiskers: min..max)", fontsize=11)
    fig.tight_layout()
    path = out / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency(results: dict[str, Any], out: Path) -> Path | None:
    panels = [(w, v, t) for w, v, t in (
        ("seq", "8 B", "sequential, 8 B"),
        ("window", "8 B", "100 in flight, 8 B"),
        ("http", "50 connections", "HTTP, 50 connections"),
    ) if cells_of(results, w)]
    if not panels:
        return None
    width = panel_width(results, [w for w, _, _ in panels])
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 4.4), squeeze=False)
    for ax, (workload, variant, title) in zip(axes[0], panels, strict=True):
        cells = ordered([c for c in cells_of(results, workload) if c["variant"] == variant and c["p50_ms"]])
        names = [tick_label(c["system"]) for c in cells]
        xs = range(len(cells))
        ax.bar([x - 0.2 for x in xs], [c["p50_ms"] for c in cells], 0.4, label="p50",
               color=[color(c["system"]) for c in cells])
        ax.bar([x + 0.2 for x in xs], [c["p99_ms"] or 0 for c in cells], 0.4, label="p99",
               color=[color(c["system"]) for c in cells], alpha=0.45)
        for x, c in zip(xs, cells, strict=True):
            ax.text(x - 0.2, c["p50_ms"], f"{c['p50_ms']:.1f}", ha="center", va="bottom", fontsize=7)
            if c["p99_ms"]:
                ax.text(x + 0.2, c["p99_ms"], f"{c['p99_ms']:.1f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(list(xs), names, fontsize=7, rotation=30, ha="right")
        ax.set_ylabel("ms")
        ax.set_title(f"{title}: p50 (solid), p99 (light)", fontsize=10)
    fig.suptitle("Latency percentiles (median of rounds)", fontsize=11)
    fig.tight_layout()
    path = out / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cpu(results: dict[str, Any], out: Path) -> Path | None:
    cells = [c for c in cells_of(results, "window") if c["cpu_ms"]["total"]]
    if not cells:
        return None
    variants = list(dict.fromkeys(c["variant"] for c in cells))
    width = panel_width(results, ["window"])
    fig, axes = plt.subplots(1, len(variants), figsize=(width * len(variants), 4.4), squeeze=False)
    shades = {"client": 1.0, "server": 0.65, "broker": 0.35}
    for ax, variant in zip(axes[0], variants, strict=True):
        row = ordered([c for c in cells if c["variant"] == variant])
        bottoms = [0.0] * len(row)
        for group in GROUPS:
            values = [c["cpu_ms"][group] or 0 for c in row]
            ax.bar(range(len(row)), values, 0.6, bottom=bottoms, label=group,
                   color=[color(c["system"]) for c in row], alpha=shades[group], edgecolor="black",
                   linewidth=0.4)
            bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
        for x, total in enumerate(bottoms):
            ax.text(x, total, f"{total:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(row)), [tick_label(c["system"]) for c in row], fontsize=7, rotation=30,
                      ha="right")
        ax.set_ylabel("CPU-ms per call")
        ax.set_title(f"100 in flight, {variant}: client / server / broker", fontsize=10)
    fig.suptitle("CPU per call (bottom to top: client, server, broker)", fontsize=11)
    fig.tight_layout()
    path = out / "cpu.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def memory(results: dict[str, Any], out: Path) -> Path | None:
    rss = [c for c in cells_of(results, "memory") if c["idle_rss_mib"]]
    flight = [c for c in cells_of(results, "inflight") if c.get("waves")]
    if not rss and not flight:
        return None
    panels = (1 if rss else 0) + (1 if flight else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    ax_iter = iter(axes[0])
    if rss:
        ax = next(ax_iter)
        xs = range(len(rss))
        ax.bar([x - 0.2 for x in xs], [c["idle_rss_mib"] for c in rss], 0.4, label="idle",
               color=[color(c["system"]) for c in rss])
        ax.bar([x + 0.2 for x in xs], [c["hwm_mib"] or 0 for c in rss], 0.4, label="high-water mark",
               color=[color(c["system"]) for c in rss], alpha=0.45)
        for x, c in zip(xs, rss, strict=True):
            ax.text(x - 0.2, c["idle_rss_mib"], f"{c['idle_rss_mib']:.0f}", ha="center", va="bottom",
                    fontsize=8)
        ax.axhline(30, linestyle="--", color="green", linewidth=1)
        ax.text(len(rss) - 0.5, 30.5, "target: 30 MiB idle", ha="right", fontsize=7, color="green")
        ax.set_xticks(list(xs), [label(c["system"]) for c in rss], fontsize=8)
        ax.set_ylabel("MiB")
        ax.set_title("one worker: idle RSS (solid), high-water mark (light)", fontsize=10)
    if flight:
        ax = next(ax_iter)
        cell = flight[0]
        waves = cell["waves"]
        xs = range(1, len(waves) + 1)
        ax.plot(list(xs), [w["issued_rss_mib"] for w in waves], marker="o", label="all calls in flight")
        ax.plot(list(xs), [w["after_rss_mib"] for w in waves], marker="s", label="after the replies")
        ax.axhline(cell["baseline_rss_mib"], linestyle=":", color="grey", label="before the first wave")
        ax.set_ylim(bottom=0)
        ax.set_xticks(list(xs))
        ax.set_xlabel("wave")
        ax.set_ylabel("client RSS MiB")
        ax.set_title(f"amqprpc client, {cell.get('in_flight', 0):,} calls in flight per wave", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("Memory", fontsize=11)
    fig.tight_layout()
    path = out / "memory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m benchmarks.charts RESULTS.json OUTDIR\n")
        return 2
    results = load(Path(argv[0]))
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for chart in (throughput, latency, cpu, memory):
        path = chart(results, out)
        if path is not None:
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
