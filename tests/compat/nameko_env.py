"""A virtualenv with Nameko 2.14.1 from PyPI, built once and cached between runs.

The compat suite runs real Nameko code (services, ``ClusterRpcProxy``, event dispatchers)
as subprocesses of this venv against the real broker. Building it takes ~15 s (a pip
install of nameko and its pins), so it is cached under
``$AMQPRPC_COMPAT_CACHE`` (default ``${XDG_CACHE_HOME:-~/.cache}/amqprpc``), keyed by the
exact requirements and the Python version; later runs reuse it at no cost. Concurrent
runs serialize on a lock file, and a half-built venv is never used: it is built under a
temporary name and renamed into place when complete.
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

NAMEKO_VERSION = "2.14.1"

# The set that installed and worked on Python 3.11 (notes/performance.md); pinned so that
# a new release of a transitive dependency cannot change what "compatible" means.
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
)
READY_MARKER = ".amqprpc-ready"
BUILD_TIMEOUT = 600


class NamekoEnvError(RuntimeError):
    """The Nameko virtualenv could not be built (no PyPI access, no venv module, ...)."""


def cache_root() -> Path:
    explicit = os.environ.get("AMQPRPC_COMPAT_CACHE")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "amqprpc"


def venv_dir() -> Path:
    """Where the venv for these requirements and this Python lives."""
    return keyed_venv_dir(cache_root(), f"nameko-{NAMEKO_VERSION}", REQUIREMENTS)


def ensure_nameko_python() -> tuple[Path, float]:
    """The venv's python, and the seconds spent building it (0.0 when cached)."""
    return ensure_venv(venv_dir(), REQUIREMENTS, READY_MARKER, BUILD_TIMEOUT, NamekoEnvError,
                       hint='Without PyPI access, deselect this suite with `pytest -m "not compat"`.')


# The builder below is shared with the benchmarks' venv (benchmarks/venvs.py).


def keyed_venv_dir(root: Path, prefix: str, requirements: tuple[str, ...]) -> Path:
    """A venv path keyed by the exact requirements and the Python version."""
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:10]
    python = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return root / f"{prefix}-{python}-{key}"


def ensure_venv(target: Path, requirements: tuple[str, ...], marker: str, timeout: float,
                error: type[Exception], hint: str = "") -> tuple[Path, float]:
    """``target``'s python, building the venv first if needed; and the seconds that took."""
    python = target / "bin" / "python"
    if (target / marker).exists():
        return python, 0.0
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it right now
        if (target / marker).exists():
            return python, 0.0
        started = time.monotonic()
        building = target.with_name(f"{target.name}.building-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)  # a venv without its marker is incomplete
        try:
            for command in ([sys.executable, "-m", "venv", str(building)],
                            [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet",
                             "--disable-pip-version-check", "--no-input", *requirements]):
                _run(command, timeout, error, hint)
            (building / marker).write_text("\n".join(requirements) + "\n")
            building.rename(target)  # bin/python is a symlink to the base interpreter: movable
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        return python, time.monotonic() - started


def _run(command: list[str], timeout: float, error: type[Exception], hint: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.CalledProcessError as exc:
        raise error(
            f"building a virtualenv failed: `{' '.join(command)}` exited {exc.returncode}:\n"
            f"{(exc.stderr or exc.stdout)[-3000:]}\n{hint}".rstrip()
        ) from None
    except subprocess.TimeoutExpired:
        raise error(f"`{' '.join(command)}` took over {timeout}s") from None
