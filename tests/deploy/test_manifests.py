"""Every manifest in deploy/kubernetes is valid: core objects against Kubernetes' own schemas
(kubernetes-validate, offline, strict), custom resources against their CRDs' schemas
(tests/data/crds, with jsonschema); and every manifest is in a kustomization or optional/."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .manifests import CRDS, KUBERNETES, KUBERNETES_VERSION, Manifest, crd_schema, find, manifests

ALL = manifests()


def validate(doc: dict[str, Any]) -> None:
    """Raise if ``doc`` is not a valid object of its kind; a kind with no schema is an error."""
    key = (doc["apiVersion"], doc["kind"])
    if key in CRDS:
        schema = crd_schema(*key)
        jsonschema.Draft202012Validator(schema).validate(doc)
    else:  # SchemaNotFoundError for a kind Kubernetes does not have
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_there_are_manifests() -> None:
    kinds = sorted({m.doc["kind"] for m in ALL})
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "RabbitmqCluster",
                     "ScaledObject", "Service", "TriggerAuthentication"]


@pytest.mark.parametrize("manifest", ALL, ids=lambda m: m.id)
def test_manifest_is_valid(manifest: Manifest) -> None:
    validate(manifest.doc)


@pytest.mark.parametrize("schema_key", sorted(CRDS))
def test_crd_schema_is_a_json_schema(schema_key: tuple[str, str]) -> None:
    jsonschema.Draft202012Validator.check_schema(crd_schema(*schema_key))


def test_rabbitmq_cluster_affinity_is_a_kubernetes_affinity() -> None:
    """The CRD schema in tests/data leaves `affinity` unchecked (it is Kubernetes' own
    Affinity type): check it as a pod's affinity instead."""
    cluster = find("RabbitmqCluster", "rabbitmq")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{"name": "x", "image": "x"}], "affinity": cluster["spec"]["affinity"]}}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


# The validators must be able to fail: each broken copy of a real manifest is refused.
def _broken(kind: str, name: str, change: Any) -> dict[str, Any]:
    doc = copy.deepcopy(find(kind, name))
    change(doc)
    return doc


BROKEN = {
    "deployment: misspelled field": lambda: _broken(
        "Deployment", "orders", lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriod=45)),
    "deployment: port as text": lambda: _broken(
        "Deployment", "orders",
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(containerPort="9000")),
    "pdb: unknown field": lambda: _broken(
        "PodDisruptionBudget", "orders", lambda d: d["spec"].update(maxSurge=1)),
    "scaledobject: misspelled field": lambda: _broken(
        "ScaledObject", "orders", lambda d: d["spec"].update(minReplicas=2)),
    "scaledobject: no triggers": lambda: _broken(
        "ScaledObject", "orders", lambda d: d["spec"].pop("triggers")),
    "scaledobject: numeric threshold": lambda: _broken(
        "ScaledObject", "orders", lambda d: d["spec"]["triggers"][0]["metadata"].update(threshold=10)),
    "rabbitmqcluster: replicas as text": lambda: _broken(
        "RabbitmqCluster", "rabbitmq", lambda d: d["spec"].update(replicas="3")),
    "rabbitmqcluster: additionalConfig too long": lambda: _broken(
        "RabbitmqCluster", "rabbitmq", lambda d: d["spec"]["rabbitmq"].update(additionalConfig="#" * 2001)),
    "rabbitmqcluster: unknown service type": lambda: _broken(
        "RabbitmqCluster", "rabbitmq", lambda d: d["spec"].update(service={"type": "Headless"})),
    "unknown kind": lambda: {"apiVersion": "v1", "kind": "Deploymant", "metadata": {"name": "x"}},
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_manifest_is_refused(case: str) -> None:
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError,
                        kubernetes_validate.SchemaNotFoundError)):
        validate(BROKEN[case]())


# --- kustomizations -----------------------------------------------------------------------

def kustomizations() -> list[Any]:
    return sorted(KUBERNETES.rglob("kustomization.yaml"))


def test_every_manifest_is_in_a_kustomization_or_optional() -> None:
    listed = set()
    for kustomization in kustomizations():
        resources = yaml.safe_load(kustomization.read_text())["resources"]
        for resource in resources:
            path = (kustomization.parent / resource).resolve()
            assert path.is_file(), f"{kustomization} lists {resource}, which is not a file"
            listed.add(path)
    optional = {p.resolve() for p in (KUBERNETES / "optional").glob("*.yaml")}
    unlisted = {m.path.resolve() for m in ALL} - listed - optional
    assert not unlisted, f"manifests in no kustomization (list them, or move them to optional/): {unlisted}"
    assert not listed & optional, "optional/ is for manifests no kustomization includes"
    assert not (KUBERNETES / "optional" / "kustomization.yaml").exists()


def test_kustomization_lists_each_file_of_its_folder() -> None:
    """Each kustomization covers its own folder: a new file there must be listed (or the
    test above would let it sit in a folder nobody applies)."""
    for kustomization in kustomizations():
        resources = set(yaml.safe_load(kustomization.read_text())["resources"])
        here = {p.name for p in kustomization.parent.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert resources == here, f"{kustomization}: lists {sorted(resources)}, folder has {sorted(here)}"
