"""The benchmark's own virtualenvs: Nameko 2.14.1 (and its pins), py-amqp for the raw scripts,
matplotlib for the charts; and, apart (their pins would fight Nameko's), the peers a team
would pick instead: FastStream, aio-pika, Celery, gRPC. None of it enters the project's
dependencies.

It lives in ``.cache/bench-venvs/`` at the repository root (gitignored), keyed by the exact
requirements and the Python version, so it is built once (~30 s, from PyPI) and reused.
Concurrent runs serialize on a lock file, and a half-built venv is never used: it is built
under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The compat suite owns what "Nameko 2.14.1" means (its pins) and the cached-venv builder;
# the benchmark uses the same, plus matplotlib for the charts.
from tests.compat.nameko_env import NAMEKO_VERSION, ensure_venv, keyed_venv_dir
from tests.compat.nameko_env import REQUIREMENTS as NAMEKO_REQUIREMENTS

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = (*NAMEKO_REQUIREMENTS, "matplotlib==3.10.8")
# Each at the version the comparison names (docs/benchmarks.md, "Peers").
# FastAPI + uvicorn: FastStream's HTTP path (its ``faststream.rabbit.fastapi.RabbitRouter``),
# served by uvicorn on its fast loop and parser (uvloop, httptools), as it is deployed.
PEER_REQUIREMENTS = ("faststream[rabbit]==0.7.8", "aio-pika==10.2.1", "celery==5.7.0",
                     "grpcio==1.85.1", "fastapi==0.163.2", "uvicorn==0.54.0", "uvloop==0.23.0",
                     "httptools==0.9.0")
READY_MARKER = ".bench-ready"
BUILD_TIMEOUT = 900


class BenchEnvError(RuntimeError):
    """The benchmark virtualenv could not be built (no PyPI access, no venv module, ...)."""


def cache_root() -> Path:
    explicit = os.environ.get("AMQPRPC_BENCH_CACHE")
    return Path(explicit).expanduser().resolve() if explicit else REPO / ".cache" / "bench-venvs"


def venv_dir() -> Path:
    return keyed_venv_dir(cache_root(), f"bench-nameko-{NAMEKO_VERSION}", REQUIREMENTS)


def existing_python() -> Path | None:
    """The venv's python if it is built already, else None (never builds)."""
    target = venv_dir()
    return target / "bin" / "python" if (target / READY_MARKER).exists() else None


def ensure_python(log: object = None) -> Path:
    """The venv's python, building the venv first if needed."""
    if existing_python() is None:
        sys.stderr.write(f"[bench] building the benchmark venv in {venv_dir()} (once) ...\n")
    python, seconds = ensure_venv(venv_dir(), REQUIREMENTS, READY_MARKER, BUILD_TIMEOUT,
                                  BenchEnvError)
    if seconds:
        sys.stderr.write(f"[bench] built it in {seconds:.0f}s\n")
    return python


def peers_venv_dir() -> Path:
    return keyed_venv_dir(cache_root(), "bench-peers", PEER_REQUIREMENTS)


def ensure_peers_python() -> Path:
    """The peers venv's python, building it first if needed (~30 s from PyPI, once)."""
    if not (peers_venv_dir() / READY_MARKER).exists():
        sys.stderr.write(f"[bench] building the peers venv in {peers_venv_dir()} (once) ...\n")
    python, _ = ensure_venv(peers_venv_dir(), PEER_REQUIREMENTS, READY_MARKER, BUILD_TIMEOUT,
                            BenchEnvError)
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
