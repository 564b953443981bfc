"""Results -> docs/benchmarks.md: aggregates per cell, tables, targets, the machine.

Standard library only: benchmarks/charts.py imports the aggregation from here in the
benchmark venv. Aggregation, per (workload, variant, system) over its rounds: calls/s
min / median / max; the median of the rounds' p50/p99, CPU% and CPU-ms per call.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SYSTEM_LABELS = {"amqprpc": "amqprpc", "nameko": "Nameko 2.14.1", "raw": "raw py-amqp",
                 "raw-wire": "raw py-amqp, Nameko's wire", "faststream": "FastStream 0.7.8",
                 "aio-pika": "aio-pika 10.2.1 JsonRPC", "celery": "Celery 5.7.0 (rpc://)",
                 "grpc": "gRPC 1.85.1 sync (no broker)", "grpc-aio": "gRPC 1.85.1 grpc.aio (no broker)"}
GROUPS = ("client", "server", "broker")
DASH = "\N{EN DASH}"  # an empty cell

# The targets of issue #7 (shared/notes/performance.md).
TARGETS = {
    "nameko_ratio": 5.0,  # window 8 B: amqprpc >= 5x Nameko
    "raw_ratio": 0.70,  # window 8 B: amqprpc >= 70% of raw py-amqp
    "seq_p50_ratio": 1.3,  # sequential p50: amqprpc <= 1.3x raw
    "http_ratio": 3.5,  # bridge >= 3.5x Nameko's gateway
    "idle_rss_mib": 30.0,  # one idle worker
    # issue #18: against what users would pick instead
    "wire_p50_ratio": 1.15,  # sequential p50: amqprpc <= 1.15x raw py-amqp on Nameko's wire
    "server_cpu_ms": 0.22,  # window 8 B: worker CPU per call (grpc.aio's published unary cost)
    "faststream_ratio": 5.0,  # window 8 B: amqprpc >= 5x FastStream
    "aiopika_ratio": 3.0,  # window 8 B: amqprpc >= 3x aio-pika JsonRPC
    "faststream_http_ratio": 1.5,  # HTTP: bridge >= 1.5x FastStream's FastAPI path
}


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def aggregate(cell: dict[str, Any]) -> dict[str, Any]:
    """One cell's rounds, summarized."""
    rounds = cell["rounds"]
    rates = [r["calls_per_s"] for r in rounds if r.get("calls_per_s") is not None]
    out: dict[str, Any] = {
        "system": cell["system"], "variant": cell["variant"], "error": cell.get("error"),
        "n": len(rounds),
        "rate_min": min(rates) if rates else None,
        "rate_median": median(rates),
        "rate_max": max(rates) if rates else None,
        "errors": sum(r.get("errors") or 0 for r in rounds),
        "load1": median(r.get("load1") for r in rounds),
    }
    for key in ("p50_ms", "p99_ms", "idle_rss_mib", "loaded_rss_mib", "hwm_mib", "dispatched_per_s",
                "baseline_rss_mib"):
        out[key] = median(r.get(key) for r in rounds)
    out["cpu_pct"] = {g: median(r.get("cpu_pct", {}).get(g) for r in rounds) for g in GROUPS}
    out["cpu_ms"] = {g: median(r.get("cpu_ms_per_call", {}).get(g) for r in rounds)
                     for g in (*GROUPS, "total")}
    if rounds and "waves" in rounds[-1]:
        out["waves"] = rounds[-1]["waves"]
        out["in_flight"] = rounds[-1].get("in_flight")
    return out


def cells_of(results: dict[str, Any], workload: str) -> list[dict[str, Any]]:
    data = results.get("workloads", {}).get(workload)
    return [aggregate(cell) for cell in data["cells"]] if data and data.get("cells") else []


def find(cells: list[dict[str, Any]], system: str, variant: str | None = None) -> dict[str, Any] | None:
    for cell in cells:
        if cell["system"] == system and (variant is None or cell["variant"] == variant):
            return cell
    return None


def paired_ratios(results: dict[str, Any], workload: str, variant: str, num: str, den: str,
                  key: str = "calls_per_s") -> list[float]:
    """num/den per round (measured minutes apart at most, in the same rotation)."""
    data = results.get("workloads", {}).get(workload) or {}
    by_system = {c["system"]: c for c in data.get("cells", []) if c["variant"] == variant}
    if num not in by_system or den not in by_system:
        return []
    den_rounds = {r["round"]: r for r in by_system[den]["rounds"]}
    ratios = []
    for r in by_system[num]["rounds"]:
        other = den_rounds.get(r["round"])
        if other and other.get(key) and r.get(key) is not None:
            ratios.append(r[key] / other[key])
    return ratios


# ---------------------------------------------------------------------- formatting


def fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return DASH
    return f"{value:,.{digits}f}{unit}"


def rate3(cell: dict[str, Any]) -> str:
    if cell["rate_median"] is None:
        return DASH
    return f"{fmt(cell['rate_min'])} / **{fmt(cell['rate_median'])}** / {fmt(cell['rate_max'])}"


def cpu_pct(cell: dict[str, Any]) -> str:
    return " / ".join(fmt(cell["cpu_pct"][g]) for g in GROUPS)


def cpu_ms(cell: dict[str, Any]) -> str:
    c = cell["cpu_ms"]
    return " / ".join(fmt(c[g], 2) for g in GROUPS) + f" / **{fmt(c['total'], 2)}**"


def label(system: str) -> str:
    return SYSTEM_LABELS.get(system, system)


def failed_row(cell: dict[str, Any], columns: int) -> str:
    return f"| {cell['variant']} | {label(cell['system'])} | failed: {cell['error']} |" + " |" * (columns - 3)


def table(header: list[str], rows: list[str]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows])


# ---------------------------------------------------------------------- sections


def rpc_section(results: dict[str, Any], workload: str) -> str:
    cells = cells_of(results, workload)
    if not cells:
        return ""
    header = ["variant", "system", "calls/s min / **median** / max", "p50 / p99 ms",
              "CPU % client / server / broker", "CPU-ms per call client / server / broker / **total**",
              "rounds", "load 1 min"]
    rows = []
    for cell in cells:
        if cell["error"] and not cell["n"]:
            rows.append(failed_row(cell, len(header)))
            continue
        errors = f" ({cell['errors']} wrong replies)" if cell["errors"] else ""
        rows.append(f"| {cell['variant']} | {label(cell['system'])} | {rate3(cell)}{errors} | "
                    f"{fmt(cell['p50_ms'], 2)} / {fmt(cell['p99_ms'], 2)} | {cpu_pct(cell)} | "
                    f"{cpu_ms(cell)} | {cell['n']} | {fmt(cell['load1'], 1)} |")
    return table(header, rows)


def events_section(results: dict[str, Any]) -> str:
    cells = cells_of(results, "events")
    if not cells:
        return ""
    header = ["handlers", "system", "handled/s min / **median** / max", "dispatched/s (median)",
              "CPU % dispatcher / handlers / broker",
              "CPU-ms per event dispatcher / handlers / broker / **total**", "rounds"]
    rows = []
    for cell in cells:
        if cell["error"] and not cell["n"]:
            rows.append(failed_row(cell, len(header)))
            continue
        rows.append(f"| {cell['variant']} | {label(cell['system'])} | {rate3(cell)} | "
                    f"{fmt(cell['dispatched_per_s'])} | {cpu_pct(cell)} | {cpu_ms(cell)} | {cell['n']} |")
    return table(header, rows)


def memory_section(results: dict[str, Any]) -> str:
    cells = cells_of(results, "memory")
    if not cells:
        return ""
    header = ["system", "idle RSS MiB", "RSS after load MiB", "high-water mark MiB",
              "calls/s during the load (median)", "rounds"]
    rows = []
    for cell in cells:
        if cell["error"] and not cell["n"]:
            rows.append(f"| {label(cell['system'])} | failed: {cell['error']} | | | | |")
            continue
        rows.append(f"| {label(cell['system'])} | **{fmt(cell['idle_rss_mib'], 1)}** | "
                    f"{fmt(cell['loaded_rss_mib'], 1)} | {fmt(cell['hwm_mib'], 1)} | "
                    f"{fmt(cell['rate_median'])} | {cell['n']} |")
    return table(header, rows)


def inflight_section(results: dict[str, Any]) -> str:
    cells = cells_of(results, "inflight")
    if not cells:
        return ""
    cell = cells[0]
    if cell["error"] and not cell["n"]:
        return f"failed: {cell['error']}"
    rows = [f"| {i} | {fmt(w['issued_rss_mib'], 1)} | {fmt(w['after_rss_mib'], 1)} | "
            f"{fmt(w['seconds'], 2)} | {w['errors']} | {w['pending_after']} | {fmt(w.get('timers_after'))} |"
            for i, w in enumerate(cell.get("waves") or [], start=1)]
    intro = (f"One amqprpc client issues {fmt(cell.get('in_flight'))} `call_async` calls at once, then "
             f"takes every reply; repeated in waves (last round shown). RSS after connecting and "
             f"warming up: **{fmt(cell['baseline_rss_mib'], 1)} MiB**; high-water mark over all waves: "
             f"**{fmt(cell['hwm_mib'], 1)} MiB**; {fmt(cell['rate_median'])} calls/s overall.\n\n")
    return intro + table(["wave", "RSS with all calls in flight MiB", "RSS after the replies MiB",
                          "seconds", "wrong replies", "calls still pending",
                          "deadline timers still queued"], rows)


def targets_section(results: dict[str, Any]) -> str:
    window = cells_of(results, "window")
    seq = cells_of(results, "seq")
    http = cells_of(results, "http")
    memory = cells_of(results, "memory")
    rows = []

    def ratio_row(what: str, goal: str, passes: Callable[[float], bool], medians: float | None,
                  paired: list[float], shown: str) -> None:
        """The verdict uses the median of the same-round ratios (each measured within minutes,
        in the same rotation) when there are any: drift between rounds cancels out there."""
        decisive = statistics.median(paired) if paired else medians
        verdict = DASH if decisive is None else ("met" if passes(decisive) else "**not met**")
        spread = (f"{min(paired):.2f} / **{statistics.median(paired):.2f}** / {max(paired):.2f}"
                  if paired else DASH)
        rows.append(f"| {what} | {goal} | {shown} | {spread} | {verdict} |")

    ours, nameko, raw = (find(window, s, "8 B") for s in ("amqprpc", "nameko", "raw"))
    if ours and nameko and ours["rate_median"] and nameko["rate_median"]:
        r = ours["rate_median"] / nameko["rate_median"]
        ratio_row("throughput, 100 in flight, 8 B: amqprpc / Nameko", f">= {TARGETS['nameko_ratio']:.1f}x",
                  lambda x: x >= TARGETS["nameko_ratio"], r,
                  paired_ratios(results, "window", "8 B", "amqprpc", "nameko"), f"{r:.2f}x")
    if ours and raw and ours["rate_median"] and raw["rate_median"]:
        r = ours["rate_median"] / raw["rate_median"]
        ratio_row("throughput, 100 in flight, 8 B: amqprpc / raw py-amqp", f">= {TARGETS['raw_ratio']:.2f}x",
                  lambda x: x >= TARGETS["raw_ratio"], r,
                  paired_ratios(results, "window", "8 B", "amqprpc", "raw"), f"{r:.2f}x")
    ours_seq, raw_seq = find(seq, "amqprpc"), find(seq, "raw")
    if ours_seq and raw_seq and ours_seq["p50_ms"] and raw_seq["p50_ms"]:
        r = ours_seq["p50_ms"] / raw_seq["p50_ms"]
        ratio_row("sequential p50: amqprpc / raw py-amqp", f"<= {TARGETS['seq_p50_ratio']:.1f}x",
                  lambda x: x <= TARGETS["seq_p50_ratio"], r,
                  paired_ratios(results, "seq", "8 B", "amqprpc", "raw", key="p50_ms"),
                  f"{r:.2f}x ({ours_seq['p50_ms']:.2f} vs {raw_seq['p50_ms']:.2f} ms)")
    wire_seq = find(seq, "raw-wire")
    if ours_seq and wire_seq and ours_seq["p50_ms"] and wire_seq["p50_ms"]:
        r = ours_seq["p50_ms"] / wire_seq["p50_ms"]
        ratio_row("sequential p50: amqprpc / raw py-amqp on Nameko's wire (same messages)",
                  f"<= {TARGETS['wire_p50_ratio']:.2f}x", lambda x: x <= TARGETS["wire_p50_ratio"], r,
                  paired_ratios(results, "seq", "8 B", "amqprpc", "raw-wire", key="p50_ms"),
                  f"{r:.2f}x ({ours_seq['p50_ms']:.2f} vs {wire_seq['p50_ms']:.2f} ms)")
    if ours and ours["cpu_ms"]["server"] is not None:
        goal = TARGETS["server_cpu_ms"]
        ratio_row("worker CPU per call, 100 in flight, 8 B (amqprpc)", f"<= {goal:.2f} ms",
                  lambda x: x <= goal, ours["cpu_ms"]["server"], [], f"{ours['cpu_ms']['server']:.3f} ms")
    for peer, key in (("faststream", "faststream_ratio"), ("aio-pika", "aiopika_ratio")):
        theirs = find(window, peer, "8 B")
        if ours and theirs and ours["rate_median"] and theirs["rate_median"]:
            r = ours["rate_median"] / theirs["rate_median"]
            goal = TARGETS[key]
            # the ceiling: what the single-threaded raw py-amqp pair does against that peer
            ceiling = (f" (raw py-amqp: {raw['rate_median'] / theirs['rate_median']:.2f}x)"
                       if raw and raw["rate_median"] else "")
            ratio_row(f"throughput, 100 in flight, 8 B: amqprpc / {label(peer)}", f">= {goal:.1f}x",
                      lambda x, goal=goal: x >= goal, r,
                      paired_ratios(results, "window", "8 B", "amqprpc", peer), f"{r:.2f}x{ceiling}")
    bridge, faststream_http = find(http, "amqprpc"), find(http, "faststream")
    if bridge and faststream_http and bridge["rate_median"] and faststream_http["rate_median"]:
        r = bridge["rate_median"] / faststream_http["rate_median"]
        goal = TARGETS["faststream_http_ratio"]
        ratio_row("HTTP: amqprpc bridge / FastStream behind FastAPI", f">= {goal:.1f}x",
                  lambda x: x >= goal, r,
                  paired_ratios(results, "http", "50 connections", "amqprpc", "faststream"), f"{r:.2f}x")
    bridge, gateway = find(http, "amqprpc"), find(http, "nameko")
    if bridge and gateway and bridge["rate_median"] and gateway["rate_median"]:
        r = bridge["rate_median"] / gateway["rate_median"]
        ratio_row("HTTP: amqprpc bridge / Nameko @http gateway", f">= {TARGETS['http_ratio']:.1f}x",
                  lambda x: x >= TARGETS["http_ratio"], r,
                  paired_ratios(results, "http", "50 connections", "amqprpc", "nameko"), f"{r:.2f}x")
    idle, nameko_idle = find(memory, "amqprpc"), find(memory, "nameko")
    if idle and idle["idle_rss_mib"]:
        theirs = f" (Nameko: {fmt(nameko_idle['idle_rss_mib'], 1)} MiB)" if nameko_idle else ""
        ratio_row("idle RSS of one amqprpc worker", f"<= {TARGETS['idle_rss_mib']:.0f} MiB",
                  lambda x: x <= TARGETS["idle_rss_mib"], idle["idle_rss_mib"], [],
                  f"{idle['idle_rss_mib']:.1f} MiB{theirs}")
    if not rows:
        return ""
    return table(["target", "goal", "measured (ratio of the medians)",
                  "same-round ratios min / **median** / max", "verdict (on the same-round median)"], rows)


def baseline_section(results: dict[str, Any], baseline: dict[str, Any]) -> str:
    """Key amqprpc figures of this run next to an earlier run's (``--baseline``)."""
    def figures(data: dict[str, Any]) -> dict[str, str]:
        window = find(cells_of(data, "window"), "amqprpc", "8 B")
        seq = find(cells_of(data, "seq"), "amqprpc")
        http = find(cells_of(data, "http"), "amqprpc")
        out = {}
        if window:
            out["100 in flight, 8 B: calls/s (median)"] = fmt(window["rate_median"])
            out["100 in flight, 8 B: CPU-ms per call client / server / broker / total"] = cpu_ms(window)
            for other in ("raw", "nameko"):
                paired = paired_ratios(data, "window", "8 B", "amqprpc", other)
                if paired:
                    out[f"100 in flight, 8 B: same-round ratio to {label(other)} (median)"] = (
                        f"{statistics.median(paired):.2f}x")
        if seq:
            out["sequential: p50 / p99 ms"] = f"{fmt(seq['p50_ms'], 2)} / {fmt(seq['p99_ms'], 2)}"
            out["sequential: CPU-ms per call client / server / broker / total"] = cpu_ms(seq)
        if http:
            out["HTTP through the bridge: requests/s (median)"] = fmt(http["rate_median"])
        return out

    before, after = figures(baseline), figures(results)
    rows = [f"| {key} | {before.get(key, DASH)} | {after[key]} |" for key in after]
    if not rows:
        return ""
    return table(["figure (amqprpc)", f"before: {baseline.get('results_file', '?')}, {revision(baseline)}",
                  f"this run: {results.get('results_file', '?')}, {revision(results)}"], rows)


def compare_section(results: dict[str, Any], previous: dict[str, Any]) -> str:
    """``--compare``: every figure both runs measured, against its noise band."""
    from . import compare  # here: compare builds on this module's paired_ratios

    rows = compare.compare(previous, results)
    if not rows:
        return ""
    lines = []
    warning = compare.machine_warning(previous, results)
    if warning:
        lines += [f"**{warning}**", ""]
    regressed = compare.regressions(rows)
    lines += [f"{len(regressed)} of {len(rows)} figures regressed beyond their noise band." if regressed
              else f"None of {len(rows)} figures regressed beyond its noise band.", ""]
    body = [f"| {r.workload} | {r.variant} | {label(r.system)} | {r.figure} | {r.before:,.4g} "
            f"| {r.after:,.4g} | {r.change:+.1%} | {r.band:.0%} "
            f"| {'**regressed**' if r.verdict == 'regressed' else r.verdict} |" for r in rows]
    lines.append(table(["workload", "variant", "system", "figure",
                        f"before ({previous.get('results_file', '?')}, {revision(previous)})",
                        f"this run ({results.get('results_file', '?')})", "change", "band", "verdict"], body))
    return "\n".join(lines)


def revision(results: dict[str, Any]) -> str:
    """The amqprpc revision a run measured (and the one at its end, if it changed)."""
    version = str(results.get("versions", {}).get("amqprpc", "?"))
    start = version.split("git ", 1)[1].rstrip(")") if "git " in version else version
    after = results.get("git_after")
    return f"git {start}" + (f" (git {after} at the end)" if after and after != start else "")


def environment_section(results: dict[str, Any]) -> str:
    m = results["machine"]
    broker = results.get("broker", {})
    versions = results.get("versions", {})
    loads = [s[0] for s in results.get("load_samples", [])]
    lines = [
        f"* **Machine:** {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB RAM, {m['os']}, "
        f"kernel {m['kernel']}, Python {m['python']}. Broker, servers and clients all share the "
        f"{m['nproc']} CPUs; all traffic is on loopback.",
        f"* **Broker:** {broker.get('product', 'RabbitMQ')} {broker.get('version', '?')} "
        f"({broker.get('platform', '?')}) at {results.get('broker_url', '?')}, shared with whatever else "
        "runs on this machine.",
        "* **Versions:** " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
        + (f"; amqprpc at the end of the run: git {results['git_after']}" if results.get("git_after") else "")
        + ".",
        f"* **Run:** {results['started']} to {results['finished']} (UTC), {results['options']['rounds']} "
        f"round(s) of {results['options']['duration']} s per cell after a warm-up, systems interleaved.",
    ]
    if loads:
        lines.append(f"* **Load average (1 min) at the start of each timed window:** min {min(loads):.2f}, "
                     f"median {statistics.median(loads):.2f}, max {max(loads):.2f} "
                     f"(`uptime` before the run: {results.get('uptime_before', '?')}; after: "
                     f"{results.get('uptime_after', '?')}). Above {m['nproc']}, other jobs were "
                     "competing for the CPUs: absolute figures are low and noisy; compare systems within "
                     "a round, and CPU-ms per call.")
    for note in results.get("notes", []):
        lines.append(f"* {note}")
    return "\n".join(lines)


SECTIONS = (
    ("seq", "1. Sequential calls, 8 B payload",
     "One caller, one call at a time: the latency floor. amqprpc: `ClusterRpcClient`, "
     "Nameko: `ClusterRpcProxy`, raw: the single-threaded py-amqp client C1 through the default "
     "exchange; raw on Nameko's wire: C1 sending the messages amqprpc and Nameko send (the "
     "`nameko-rpc` topic exchange, `mandatory`, persistent to a durable queue, a deadline header, "
     "a TTL, publisher confirms on both sides, counted but never awaited; since 2026-12-04-2). "
     "The peers (FastStream, aio-pika, Celery, gRPC) are set up as the Peers section "
     "below describes."),
    ("window", "2. One client process, 100 calls in flight",
     "One client process keeps 100 `call_async` futures in flight and takes the replies in FIFO "
     "order (latency = time in flight). The raw client C1 pipelines 100 requests from its "
     "reply callback. Payload: a JSON string of 8 B, 1 KiB or 64 KiB, echoed back."),
    ("scaling", "3. Four client processes, 1 / 2 / 4 worker processes",
     "Four client processes x 25 in flight (100 in total), 8 B. amqprpc: `amqprpc run --workers N`; "
     "Nameko: N `nameko run` processes; raw: N S1 servers on one queue. On 2 CPUs more processes "
     "mostly add contention: this shows whether a system degrades, not how it scales on a big box."),
)


def render(results: dict[str, Any], *, charts: list[str], analysis: str | None,
           baseline: dict[str, Any] | None = None, previous: dict[str, Any] | None = None) -> str:
    """The whole of docs/benchmarks.md."""
    out = [
        "# Benchmarks: amqprpc vs Nameko vs the raw py-amqp limit",
        "",
        "<!-- Generated by `python -m benchmarks` (benchmarks/report.py) from "
        f"benchmarks/results/{results.get('results_file', '?')}; edit benchmarks/analysis.md "
        "for the analysis section, not this file. -->",
        "",
        "All figures below come from **one run** of one command, on one broker, with the systems "
        "interleaved round by round:",
        "",
        "```bash",
        results["command"].strip(),
        "```",
        "",
        "and this page was rendered from its results with `python -m benchmarks --report "
        f"benchmarks/results/{results.get('results_file', '?')}"
        + (f" --baseline benchmarks/results/{baseline.get('results_file', '?')}" if baseline else "")
        + (f" --compare benchmarks/results/{previous.get('results_file', '?')}`." if previous else "`."),
        "",
        "It builds its own virtualenv for what it compares against (`.cache/bench-venvs/`: "
        "Nameko 2.14.1 from PyPI with the pins of the compat suite, py-amqp for the raw scripts, "
        "matplotlib for the charts), runs every workload, writes the raw results to "
        "`benchmarks/results/<date>.json`, this page and its charts. `--quick` is a smoke run, "
        "`--only WORKLOAD` runs one workload, `--rounds N` / `--duration S` set the effort, "
        "`--compare [RESULTS.json]` sets every figure against an earlier run (by default the newest "
        "other file in `benchmarks/results/`) and exits 3 when one regressed beyond its noise band: "
        "the larger of 5 % and the spread of its rounds in either run.",
        "",
        "## Environment",
        "",
        environment_section(results),
        "",
        "## Method",
        "",
        "* Each cell (workload x variant x system) is measured in `rounds` rounds; in each round the "
        "systems run one after the other, in an order that rotates from round to round. Calls/s "
        "are min / **median** / max over the rounds; latencies, CPU% and CPU-ms are medians.",
        "* Every client warms up first, then waits; the runner reads the CPU ticks "
        "(`/proc/<pid>/stat`, user + system, all threads) of the client processes, the server "
        "process tree and `beam.smp`, starts all clients at once and reads the ticks again when "
        "the last timed window ends. CPU-ms per call = CPU seconds of a group / calls in the "
        "window; 200 % CPU means both cores busy. The broker's figure includes whatever else used "
        "the broker meanwhile.",
        "* The services echo their argument. amqprpc and Nameko run with their defaults (10 "
        "handlers per process, prefetch 10); the raw server (S1 of the team's hot-path study) handles "
        "each request inline in its delivery callback with prefetch 100 and `connection.blocked` "
        "not negotiated: the ceiling a framework is measured against.",
        "* Names carry the run's tag (`bench-<tag>-...`); every queue and exchange a run creates is "
        "deleted at its end. Everything stays on loopback.",
        "",
    ]
    targets = targets_section(results)
    if targets:
        out += ["## Targets (issues #7, #18)", "", targets, ""]
    compared = baseline_section(results, baseline) if baseline else ""
    if compared:
        out += ["## Against an earlier run", "",
                "The same workloads measured before a change to amqprpc (the systems it is compared "
                "with did not change). Each run has its own machine load: compare CPU-ms per call "
                "and same-round ratios rather than calls/s.", "", compared, ""]
    against = compare_section(results, previous) if previous else ""
    if against:
        out += ["## Against the previous run (--compare)", "",
                "Absolute figures compare only on the same machine under the same load; the "
                "same-round ratios are the robust ones.", "", against, ""]
    for key, title, text in SECTIONS:
        section = rpc_section(results, key)
        if section:
            out += [f"## {title}", "", text, "", section, ""]
    http = rpc_section(results, "http")
    if http:
        out += ["## 4. HTTP: wrk -> HTTP front -> RPC -> echo", "",
                "`wrk -t2 -c50 --latency` POSTs `{\"payload\": \"xxxxxxxx\"}` for the window (after "
                "a 1 s warm-up run). amqprpc: `amqprpc bridge` (aiohttp, one process) in front of "
                "an `amqprpc run` echo service whose method is `@rpc(http=\"POST /...\", "
                "public=True)`, the rate limit off (`AMQPRPC_BRIDGE_RATE_LIMIT=0`: every request "
                "comes from one IP). Nameko: a `nameko run` gateway with `@http(\"POST\", ...)` calling "
                "the echo service through `RpcProxy`, in its own process. The client group is wrk; "
                "the server group is front + echo service. p50 / p99 are wrk's.", "", http, ""]
    events = events_section(results)
    if events:
        out += ["## 5. Events: dispatch -> handled", "",
                "One dispatcher process publishes `tick` events (8 B payload) as fast as it may "
                "(amqprpc: `EventPublisher.dispatch`, up to 500 confirms outstanding; Nameko: the "
                "standalone `event_dispatcher`, which waits for each confirm), holding the handler "
                "queue's backlog under 1,000; one or two handler processes (service pool) count "
                "what they handle. Handled/s is the rate at the handlers during the window.", "",
                events, ""]
    memory = memory_section(results)
    inflight = inflight_section(results)
    if memory or inflight:
        out += ["## 6. Memory", ""]
    if memory:
        out += ["One fresh worker process per system: idle RSS read once it consumes and has "
                "settled, then RSS and high-water mark (`VmHWM`) after a pipelined load (100 in "
                "flight, 8 B, one window).", "", memory, ""]
    if inflight:
        out += [inflight, ""]
    if charts:
        out += ["## Charts", ""]
        out += [f"![{Path(c).stem}](benchmarks/{Path(c).name})" for c in charts]
        out.append("")
    else:
        out += ["## Charts", "", results.get("charts_note", "No charts were made in this run."), ""]
    if analysis:
        out += [analysis.strip(), ""]
    return "\n".join(out)


def write(results: dict[str, Any], docs: Path, charts: list[str], analysis_file: Path,
          baseline: dict[str, Any] | None = None, previous: dict[str, Any] | None = None) -> None:
    analysis = analysis_file.read_text() if analysis_file.exists() else None
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(render(results, charts=charts, analysis=analysis, baseline=baseline, previous=previous))


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))
