"""deploy/Dockerfile's build, done without a container engine (CI has none).

The build stage's COPY steps are replayed into a folder under tmp_path (so a source the
Dockerfile forgets to copy, or that .dockerignore keeps out, breaks the install), its
`pip install` steps run with a throwaway virtualenv's pip in place of the image's, and the
result must run `amqprpc --help`, import the default CMD's service, and hold no dev tools.
About 15 s from a local package index; `-m "not image"` skips it, and it skips itself when
no package index answers (an offline laptop). What it cannot check: the base image, the
user, file permissions in the image: the consistency tests read those from the Dockerfile.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .manifests import ROOT, Dockerfile, Stage, exec_form, read_dockerfile

pytestmark = [pytest.mark.image, pytest.mark.timeout(240)]

DEV_ONLY = ("pytest", "ruff", "mypy", "hypothesis", "kubernetes-validate", "secantusdb", "watchfiles")


def expand(text: str, scope: dict[str, str]) -> str:
    for name, value in scope.items():
        text = text.replace("${" + name + "}", value).replace("$" + name, value)
    return text


def build_stage(dockerfile: Dockerfile) -> Stage:
    """The stage whose output the final stage copies (COPY --from=NAME)."""
    sources = {arguments.split()[0].split("=", 1)[1] for arguments in dockerfile.final.all("COPY")
               if arguments.startswith("--from=")}
    [stage] = [s for s in dockerfile.stages if s.name in sources]
    return stage


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last match wins)."""
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.removeprefix("**/")):
            ignored = not negate
    return ignored


def replay_copies(stage: Stage, workdir: Path) -> None:
    for arguments in stage.all("COPY"):
        *sources, destination = shlex.split(arguments)
        target = workdir / destination
        for source in sources:
            assert not dockerignored(source), f".dockerignore keeps {source} out of the build context"
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name if destination.endswith("/") else target)


def pip_steps(stage: Stage, scope: dict[str, str]) -> list[list[str]]:
    """Each RUN that is a `<venv>/bin/pip install ...`, as the words after `pip`."""
    steps = []
    for arguments in stage.all("RUN"):
        words = shlex.split(expand(arguments, scope))
        if len(words) > 2 and words[0].endswith("/pip") and words[1] == "install":
            steps.append(words[1:])
    return steps


@pytest.fixture(scope="module")
def index_answers(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip unless pip can fetch what the build needs (its build backend, here)."""
    if os.environ.get("AMQPRPC_SKIP_IMAGE_CHECK"):
        pytest.skip("AMQPRPC_SKIP_IMAGE_CHECK is set")
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
         "-d", str(tmp_path_factory.mktemp("probe")), "setuptools>=77"],
        capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        pytest.skip(f"no package index answers pip: {probe.stderr.strip()[-300:]}")


def test_dockerfile_pip_steps_install_a_working_amqprpc(tmp_path: Path, index_answers: None) -> None:
    dockerfile = read_dockerfile()
    stage = build_stage(dockerfile)
    scope = dockerfile.args(stage)
    [workdir] = stage.all("WORKDIR")
    src = tmp_path / workdir.lstrip("/")
    src.mkdir(parents=True)
    replay_copies(stage, src)
    steps = pip_steps(stage, scope)
    assert steps, "the build stage has no `pip install` step"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
    env.pop("PYTHONPATH", None)  # the checkout must not leak into the venv's imports
    for step in steps:
        done = subprocess.run([str(python), "-m", "pip", *step, "--quiet"], cwd=src, env=env,
                              capture_output=True, text=True, timeout=200, check=False)
        assert done.returncode == 0, f"pip {' '.join(step)} failed:\n{done.stderr[-3000:]}"

    outside = tmp_path / "elsewhere"  # not the checkout: import what the venv installed
    outside.mkdir()
    shutil.rmtree(src)  # as in the runtime stage, which copies only the virtualenv
    amqprpc = venv / "bin" / "amqprpc"
    for args in (["--help"], ["run", "--help"], ["bridge", "--help"]):
        done = subprocess.run([str(amqprpc), *args], cwd=outside, env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, f"amqprpc {' '.join(args)}: {done.stderr[-2000:]}"
    cmd = exec_form(dockerfile.final.all("CMD")[-1])
    assert cmd is not None and cmd[0] == "run"
    imports = "; ".join(f"import {module}" for module in [cmd[1], "prometheus_client", "opentelemetry.sdk"])
    done = subprocess.run([str(python), "-c", imports + "; import amqprpc; print(amqprpc.__file__)"],
                          cwd=outside, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert str(venv) in done.stdout, f"amqprpc imported from {done.stdout.strip()}, not the venv"
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], env=env,
                               capture_output=True, text=True, timeout=60, check=True).stdout.lower()
    present = [name for name in DEV_ONLY if f"\n{name}==" in "\n" + installed]
    assert not present, f"dev-only packages in the image: {present}"


def test_dockerignore_matcher() -> None:
    """The matcher the build check relies on."""
    assert dockerignored(".git") and dockerignored("tests") and dockerignored(".venv")
    assert not dockerignored("amqprpc") and not dockerignored("pyproject.toml")
    assert dockerignored("amqprpc/__pycache__")
