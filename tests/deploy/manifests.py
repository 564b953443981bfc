"""Reading deploy/: the Kubernetes manifests, the Dockerfile, and the CRD schemas in tests/data."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
CRD_SCHEMAS = ROOT / "tests" / "data" / "crds"

# The oldest Kubernetes the manifests are written for: the preStop `sleep` action is on by
# default from 1.30, and 1.31 is the oldest release still maintained upstream.
KUBERNETES_VERSION = "1.31.0"

# Custom resources, which kubernetes-validate has no schema for: (apiVersion, kind) -> file.
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.v1alpha1.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentications.v1alpha1.yaml",
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmq.com_rabbitmqclusters.v1beta1.yaml",
}


@dataclass(frozen=True)
class Manifest:
    path: Path
    index: int  # the document's place in its file
    doc: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(KUBERNETES)}#{self.index}:{self.doc.get('kind')}"


def manifest_files() -> list[Path]:
    return sorted(p for p in KUBERNETES.rglob("*.yaml") if p.name != "kustomization.yaml")


def manifests() -> list[Manifest]:
    found = []
    for path in manifest_files():
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                found.append(Manifest(path, index, doc))
    return found


def find(kind: str, name: str, *, optional: bool = False) -> dict[str, Any]:
    """The one ``kind`` named ``name`` in the kustomizations (or, ``optional``, in optional/)."""
    folder = KUBERNETES / "optional"
    hits = [m.doc for m in manifests() if m.doc["kind"] == kind and m.doc["metadata"]["name"] == name
            and (m.path.parent == folder) == optional]
    assert len(hits) == 1, f"expected one {kind} {name!r}, found {len(hits)}"
    return hits[0]


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The trimmed openAPIV3Schema as JSON Schema, as strict as the API server.

    A structural CRD schema prunes fields it does not declare, and ``kubectl apply`` (strict
    server-side field validation, the default since Kubernetes 1.27) refuses them. So every
    object that lists ``properties`` gets ``additionalProperties: false`` here, unless it
    says ``x-kubernetes-preserve-unknown-fields``.
    """
    schema: dict[str, Any] = yaml.safe_load((CRD_SCHEMAS / CRDS[(api_version, kind)]).read_text())
    return _closed(json.loads(json.dumps(schema)))  # a deep copy without YAML anchors' sharing


def _closed(node: Any) -> Any:
    if isinstance(node, dict):
        node = {key: _closed(value) for key, value in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
    elif isinstance(node, list):
        node = [_closed(item) for item in node]
    return node


# --- containers and their command lines ---------------------------------------------------

def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per pod: amqprpc is PID 1 of its pod"
    return containers[0]  # type: ignore[no-any-return]


def options(args: list[str]) -> dict[str, str]:
    """``--name=value`` and ``--name value`` command-line options, by name."""
    found: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and "=" in arg:
            name, value = arg[2:].split("=", 1)
            found[name] = value
        elif arg.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            found[arg[2:]] = args[i + 1]
            i += 1
        elif arg.startswith("--"):
            found[arg[2:]] = ""
        i += 1
    return found


def container_port(spec: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in spec.get("ports", [])}
    assert port in named, f"no container port named {port!r} (ports: {named})"
    return named[port]  # type: ignore[no-any-return]


# --- the Dockerfile -----------------------------------------------------------------------

@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def args(self, stage: Stage) -> dict[str, str]:
        """The ARG defaults in scope in ``stage`` (global ones, then the stage's own)."""
        scope = dict(self.global_args)
        for declaration in stage.all("ARG"):
            name, _, default = declaration.partition("=")
            scope[name] = default.strip('"')
        return scope


def read_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    """Instructions by stage, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        arguments = arguments.strip()
        if instruction == "FROM":
            words = shlex.split(arguments)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages and instruction == "ARG":
            key, _, default = arguments.partition("=")
            global_args[key] = default.strip('"')
        else:
            assert stages, f"{instruction} before the first FROM"
            stages[-1].instructions.append((instruction, arguments))
    return Dockerfile(global_args, stages)


def exec_form(arguments: str) -> list[str] | None:
    """A JSON-array (exec form) ENTRYPOINT/CMD, or None for the shell form."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None
