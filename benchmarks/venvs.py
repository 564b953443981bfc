"""The benchmark's own virtualenv: Nameko 2.14.1 (and its pins), py-amqp for the raw scripts,
matplotlib for the charts. None of it enters the project's dependencies.

It lives in ``.cache/bench-venvs/`` at the repository root (gitignored), keyed by the exact
requirements and the Python version, so it is built once (~30 s, from PyPI) and reused.
Concurrent runs serialize on a lock file, and a half-built venv is never used: it is built
under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NAMEKO_VERSION = "2.14.1"

# The set that installed and worked on Python 3.11 (shared/notes/performance.md), the same
# pins as the compat suite, so "Nameko" means the same thing in both; plus matplotlib.
REQUIREMENTS = (
    f"nameko=={NAMEKO_VERSION}",
    "eventlet==0.41.3",
    "greenlet==3.5.6",
    "kombu==5.7.0",
    "amqp==5.4.2",
    "vine==5.1.0",
    "Werkzeug==3.1.9",
    "mock==5.2.0",
    "PyYAML==6.0.4",
    "matplotlib==3.10.8",
)
READY_MARKER = ".bench-ready"
BUILD_TIMEOUT = 900


class BenchEnvError(RuntimeError):
    """The benchmark virtualenv could not be built (no PyPI access, no venv module, ...)."""


def cache_root() -> Path:
    explicit = os.environ.get("AMQPRPC_BENCH_CACHE")
    return Path(explicit).expanduser().resolve() if explicit else REPO / ".cache" / "bench-venvs"


def venv_dir() -> Path:
    key = hashlib.sha256("\n".join(REQUIREMENTS).encode()).hexdigest()[:10]
    python = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return cache_root() / f"bench-nameko-{NAMEKO_VERSION}-{python}-{key}"


def existing_python() -> Path | None:
    """The venv's python if it is built already, else None (never builds)."""
    target = venv_dir()
    return target / "bin" / "python" if (target / READY_MARKER).exists() else None


def ensure_python(log: object = None) -> Path:
    """The venv's python, building the venv first if needed."""
    target = venv_dir()
    python = target / "bin" / "python"
    if (target / READY_MARKER).exists():
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it right now
        if (target / READY_MARKER).exists():
            return python
        started = time.monotonic()
        sys.stderr.write(f"[bench] building the benchmark venv in {target} (once) ...\n")
        _build(target)
        sys.stderr.write(f"[bench] built it in {time.monotonic() - started:.0f}s\n")
        return python


def installed_versions(python: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Versions of ``names`` as installed in the venv of ``python``."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True,
                            timeout=60, check=True)
    import json

    return dict(json.loads(result.stdout))


def _build(target: Path) -> None:
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)  # a venv without its marker is incomplete
    try:
        _run([sys.executable, "-m", "venv", str(building)])
        _run([str(building / "bin" / "python"), "-m", "pip", "install", "--quiet",
              "--disable-pip-version-check", "--no-input", *REQUIREMENTS])
        (building / READY_MARKER).write_text("\n".join(REQUIREMENTS) + "\n")
        building.rename(target)  # bin/python is a symlink to the base interpreter: movable
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _run(command: list[str]) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        raise BenchEnvError(
            f"building the benchmark virtualenv failed: `{' '.join(command)}` exited "
            f"{exc.returncode}:\n{(exc.stderr or exc.stdout)[-3000:]}"
        ) from None
    except subprocess.TimeoutExpired:
        raise BenchEnvError(f"`{' '.join(command)}` took over {BUILD_TIMEOUT}s") from None
