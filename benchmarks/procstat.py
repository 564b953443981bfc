"""What the kernel says about processes and the machine: CPU ticks, RSS, the broker's pid.

CPU accounting follows shared/notes/performance.md: user+system ticks from
``/proc/<pid>/stat`` (all threads of a process), summed per group (the client processes,
the server process tree, ``beam.smp``), read at the start and the end of the timed
window. CPU-ms per call = group ticks over the window / calls in the window.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads); 0.0 if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = data[data.rindex(")") + 2:].split()  # the name may hold spaces and parens
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_of() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process on the machine."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            data = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(data[data.rindex(")") + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def process_tree(roots: Iterable[int]) -> list[int]:
    """``roots`` and all their descendants."""
    tree = children_of()
    seen: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack.extend(tree.get(pid, ()))
    return seen


def group_cpu(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def status_kib(pid: int, key: str) -> int | None:
    """A ``VmRSS``/``VmHWM``-style field of /proc/<pid>/status in KiB, None if unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def rss_mib(pid: int) -> float | None:
    kib = status_kib(pid, "VmRSS")
    return None if kib is None else kib / 1024


def hwm_mib(pid: int) -> float | None:
    kib = status_kib(pid, "VmHWM")
    return None if kib is None else kib / 1024


def listener_pid(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` (the broker's beam.smp), or None."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                try:
                    if os.readlink(fd.path) in inodes:
                        return int(entry.name)
                except OSError:
                    continue
        except OSError:
            continue
    return None


def machine() -> dict[str, object]:
    """nproc, CPU model, RAM, kernel, Python: what a reader needs to compare figures."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": mem_gib,
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def tool_version(argv: list[str]) -> str | None:
    """First line of a tool's version output, or None if it is not installed."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else None
