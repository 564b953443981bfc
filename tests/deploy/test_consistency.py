"""The manifests agree with each other, with the Dockerfile and with amqprpc itself.

Each test reads two things that must match (a flag and a probe, a grace and a termination
period, a query and the metrics code) and fails when one is changed without the other."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import click
import pytest
from prometheus_client.parser import text_string_to_metric_families

from amqprpc import Config
from amqprpc.cli import main
from amqprpc.metrics.registry import MetricsRegistry
from amqprpc.topology import rpc_queue_topology
from http_bridge.settings import BridgeSettings

from .manifests import (
    DOCKERFILE,
    ROOT,
    container,
    container_port,
    exec_form,
    find,
    manifests,
    options,
    read_dockerfile,
)

WORKER = find("Deployment", "orders")
BRIDGE = find("Deployment", "bridge")
DEPLOYMENTS = [WORKER, BRIDGE]
# What a worker's stop takes besides --grace (docs/production.md, N4): the consumer cancel
# and the connection's close each wait at most 5 s.
STOP_OVERHEAD = 10


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def worker_options() -> dict[str, str]:
    return options(container(WORKER)["args"])


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The ConfigMap's amqprpc.toml, where a pod would read it."""
    path = tmp_path / "amqprpc.toml"
    path.write_text(find("ConfigMap", "amqprpc-config")["data"]["amqprpc.toml"])
    return path


# --- stopping -------------------------------------------------------------------------------

def test_termination_grace_covers_the_workers_grace() -> None:
    grace = float(worker_options()["grace"])
    period = pod(WORKER)["terminationGracePeriodSeconds"]
    assert period >= grace + STOP_OVERHEAD, (
        f"terminationGracePeriodSeconds {period} < --grace {grace} + {STOP_OVERHEAD}: the kubelet "
        "would SIGKILL workers whose calls finished before they were acked")
    assert period <= grace + 60, "a far longer period only delays rollouts and drains"


def test_bridge_termination_covers_its_prestop_and_longest_call(config_file: Path) -> None:
    settings = BridgeSettings.from_config(Config.load(config_file, env={}))
    sleep = container(BRIDGE)["lifecycle"]["preStop"]["sleep"]["seconds"]
    longest = max([settings.default_deadline, *settings.deadlines.values()])
    assert pod(BRIDGE)["terminationGracePeriodSeconds"] >= sleep + longest + 5


def test_workers_drain_on_sigterm_without_a_prestop_hook() -> None:
    assert "lifecycle" not in container(WORKER), "SIGTERM drains a worker; a preStop only delays it"
    final = read_dockerfile().final
    assert final.all("STOPSIGNAL") == ["SIGTERM"]


# --- probes and ports ------------------------------------------------------------------------

def test_worker_probes_use_the_health_port() -> None:
    spec = container(WORKER)
    port = int(worker_options()["health-port"])
    assert worker_options()["workers"] == "1", (
        "with --workers N, worker i serves health on PORT+i and the probes would see worker 0 only")
    probes = {kind: spec[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    for kind, probe in probes.items():
        assert container_port(spec, probe["port"]) == port, f"{kind} is not on --health-port {port}"


def test_worker_metrics_port_is_the_one_prometheus_scrapes() -> None:
    spec = container(WORKER)
    port = int(worker_options()["metrics-port"])
    assert container_port(spec, "metrics") == port
    annotations = WORKER["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_bridge_probes_and_service_use_the_bridge_port() -> None:
    spec = container(BRIDGE)
    port = int(options(spec["args"])["port"])
    assert options(spec["args"])["host"] == "0.0.0.0", "the bridge listens on 127.0.0.1 by default"
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container_port(spec, spec[kind]["httpGet"]["port"]) == port, kind
    service = find("Service", "bridge")
    assert container_port(spec, service["spec"]["ports"][0]["targetPort"]) == port
    assert service["spec"]["selector"].items() <= BRIDGE["spec"]["template"]["metadata"]["labels"].items()


def test_rollouts_never_lose_a_ready_pod() -> None:
    for deployment in DEPLOYMENTS:
        rolling = deployment["spec"]["strategy"]["rollingUpdate"]
        assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1, deployment["metadata"]["name"]


def test_each_deployment_has_a_budget_that_selects_its_pods() -> None:
    for deployment in DEPLOYMENTS:
        name = deployment["metadata"]["name"]
        budget = find("PodDisruptionBudget", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items(), name


# --- the commands the pods run ----------------------------------------------------------------

def _parse(args: list[str], config_file: Path) -> click.Context:
    """Parse ``amqprpc ARGS`` as the CLI would (unknown options, bad values fail), no run."""
    args = [f"--config={config_file}" if a.startswith("--config=") else a for a in args]
    group_ctx = click.Context(main, info_name="amqprpc")
    command = main.get_command(group_ctx, args[0])
    assert command is not None, f"`amqprpc {args[0]}` is not a command"
    return command.make_context(args[0], args[1:], parent=group_ctx)


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["metadata"]["name"])
def test_deployment_args_are_a_valid_amqprpc_command(deployment: dict[str, Any], config_file: Path) -> None:
    spec = container(deployment)
    assert "command" not in spec, "the image's ENTRYPOINT (amqprpc) runs; the pod sets args only"
    _parse(spec["args"], config_file)


def test_image_entrypoint_and_cmd_are_the_amqprpc_command(config_file: Path) -> None:
    final = read_dockerfile().final
    [entrypoint] = final.all("ENTRYPOINT")
    [cmd] = final.all("CMD")
    assert exec_form(entrypoint) == ["amqprpc"], "exec form, so amqprpc is PID 1 and gets SIGTERM"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["amqprpc"] == "amqprpc.cli:main"
    args = exec_form(cmd)
    assert args is not None
    _parse(args, config_file)


def test_a_wrong_flag_is_caught() -> None:
    """The parse above can fail."""
    with pytest.raises(click.UsageError):
        _parse(["run", "services.orders", "--health-prot=9000"], Path("x.toml"))
    with pytest.raises(AssertionError, match="is not a command"):
        _parse(["serve", "services.orders"], Path("x.toml"))


# --- the user the image and the pods run as --------------------------------------------------

def test_image_runs_as_a_non_root_user_the_pods_agree_with() -> None:
    dockerfile = read_dockerfile()
    users = dockerfile.final.all("USER")
    assert users, "the final stage sets no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), f"USER {user}: non-root, numeric for runAsNonRoot"
    text = DOCKERFILE.read_text()
    assert re.search(rf"useradd\b[^\n]*--uid {user}\b", text), f"no user with uid {user} is created"
    for deployment in DEPLOYMENTS:
        security = pod(deployment)["securityContext"]
        assert security["runAsNonRoot"] is True
        assert str(security["runAsUser"]) == user, deployment["metadata"]["name"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["metadata"]["name"])
def test_containers_are_locked_down(deployment: dict[str, Any]) -> None:
    security = container(deployment)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    resources = container(deployment)["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() and "memory" in resources["limits"]
    mounts = {m["mountPath"] for m in container(deployment)["volumeMounts"]}
    assert "/tmp" in mounts, "a read-only root needs a writable /tmp"


# --- the config file --------------------------------------------------------------------------

def test_config_file_loads_with_quorum_queues(config_file: Path) -> None:
    config = Config.load(config_file, env={})
    assert config.queue_type == "quorum"
    assert config.rpc_max_attempts < config.delivery_limit  # docs/configuration.md
    known_bridge = {f.name for f in fields(BridgeSettings)}
    assert set(config.extra) <= {"bridge"}, f"not settings (typos?): {sorted(set(config.extra) - {'bridge'})}"
    unknown = set(config.extra.get("bridge", {})) - known_bridge
    assert not unknown, f"not bridge settings (typos?): {sorted(unknown)}"


def test_no_credentials_in_the_config_file(config_file: Path) -> None:
    config = Config.load(config_file, env={})
    assert config.broker_url == Config().broker_url, "the broker URL belongs in a Secret"
    for deployment in DEPLOYMENTS:
        env = {e["name"]: e for e in container(deployment)["env"]}
        assert "secretKeyRef" in env["AMQPRPC_BROKER_URL"]["valueFrom"]


def test_each_service_has_its_own_broker_secret() -> None:
    secrets = {deployment["metadata"]["name"]: {e["valueFrom"]["secretKeyRef"]["name"]
                                                 for e in container(deployment)["env"]
                                                 if e["name"] == "AMQPRPC_BROKER_URL"}
               for deployment in DEPLOYMENTS}
    assert secrets["orders"].isdisjoint(secrets["bridge"])


def test_every_secret_the_pods_read_is_made_in_the_deployment_guide() -> None:
    guide = (ROOT / "docs" / "deployment.md").read_text()
    for deployment in DEPLOYMENTS:
        for env in container(deployment)["env"]:
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                command = rf"kubectl create secret generic {ref['name']}\b[^\n]*(\n +--[^\n]*)*"
                made = re.search(command, guide)
                assert made, f"docs/deployment.md does not create Secret {ref['name']}"
                assert f"--from-literal={ref['key']}=" in made.group(0), f"{ref['name']} lacks {ref['key']}"


# --- autoscaling ------------------------------------------------------------------------------

def exported_metrics() -> set[str]:
    return {family.name for family in text_string_to_metric_families(MetricsRegistry().render().decode())}


def service_name() -> str:
    """The `name` of the service class the worker Deployment runs."""
    import importlib

    module = importlib.import_module(container(WORKER)["args"][1])
    names = {cls.name for cls in vars(module).values() if isinstance(cls, type) and isinstance(
        getattr(cls, "name", None), str) and cls.__module__ == module.__name__}
    assert len(names) == 1, names
    return names.pop()


def test_scaledobject_scales_the_workers_on_their_backlog() -> None:
    scaled = find("ScaledObject", "orders")
    assert scaled["spec"]["scaleTargetRef"]["name"] == WORKER["metadata"]["name"]
    assert "replicas" not in WORKER["spec"], "KEDA owns the worker count; `replicas` would fight it"
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    metrics = set(re.findall(r"\bamqprpc_[a-z_]+\b", query))
    assert metrics == {"amqprpc_service_backlog"}
    assert metrics <= exported_metrics(), "the query names a metric amqprpc does not export"
    assert re.findall(r'service="([^"]+)"', query) == [service_name()]
    # threshold = one worker's capacity: its prefetch, which is its concurrency unless set.
    config = Config.load(None, env={}, concurrency=int(worker_options()["concurrency"]))
    assert int(trigger["metadata"]["threshold"]) == config.effective_prefetch
    assert scaled["spec"]["minReplicaCount"] >= 2, "one worker left alone cannot be drained safely"


def test_queue_length_alternative_names_the_services_queue() -> None:
    scaled = find("ScaledObject", "orders", optional=True)
    [trigger] = scaled["spec"]["triggers"]
    queue = next(e.name for e in rpc_queue_topology(Config(), service_name()) if type(e).__name__ == "Queue")
    assert trigger["type"] == "rabbitmq" and trigger["metadata"]["queueName"] == queue
    auth = find("TriggerAuthentication", trigger["authenticationRef"]["name"], optional=True)
    assert auth["spec"]["secretTargetRef"]


# --- the broker -------------------------------------------------------------------------------

def rabbitmq_conf(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#")]
    pairs = (line.split("=", 1) for line in lines)
    return {key.strip(): value.strip() for key, value in pairs}


# rabbitmq.conf keys the cluster sets otherwise, and why.
CLUSTER_DIFFERS = {
    "disk_free_limit.absolute": "a cluster node's disk is a 20 Gi volume of its own, not a laptop's",
}
# rabbitmq.conf keys the operator owns, or that do not apply in a pod.
OPERATOR_OWNS = {"log.console", "log.console.level", "log.file.level"}


def test_cluster_config_mirrors_the_repositorys_rabbitmq_conf() -> None:
    repo = rabbitmq_conf((ROOT / "rabbitmq.conf").read_text())
    cluster = rabbitmq_conf(find("RabbitmqCluster", "rabbitmq")["spec"]["rabbitmq"]["additionalConfig"])
    missing = set(repo) - set(cluster) - OPERATOR_OWNS
    assert not missing, f"rabbitmq.conf settings the cluster lacks: {sorted(missing)}"
    differ = {key for key in set(repo) & set(cluster) if repo[key] != cluster[key]}
    assert differ == set(CLUSTER_DIFFERS), f"differ from rabbitmq.conf: {sorted(differ)}"


def test_cluster_has_three_nodes_spread_over_machines() -> None:
    spec = find("RabbitmqCluster", "rabbitmq")["spec"]
    assert spec["replicas"] == 3
    [term] = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"


def test_every_manifest_has_a_name() -> None:
    for manifest in manifests():
        assert manifest.doc["metadata"]["name"], manifest.id
