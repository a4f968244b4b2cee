"""Every manifest in deploy/ validates against the Kubernetes 1.33 schemas (offline, strict)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((REPO / "deploy").glob("*.yaml"))


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in MANIFESTS:
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                out.append((f"{path.name}#{index}", doc))
    return out


def test_there_are_manifests() -> None:
    kinds = {doc["kind"] for _, doc in documents()}
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "CronJob"} <= kinds


@pytest.mark.parametrize(("name", "doc"), documents(), ids=[n for n, _ in documents()])
def test_manifest_validates_against_1_33(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, "1.33.0", strict=True)


def test_validation_would_catch_a_mistake() -> None:
    _, cronjob = next((n, d) for n, d in documents() if d["kind"] == "CronJob")
    broken = json.loads(json.dumps(cronjob))
    broken["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
        "imagePullPolicy"
    ] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33.0", strict=True)
    broken = json.loads(json.dumps(cronjob))
    broken["spec"]["schedul"] = broken["spec"].pop("schedule")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33.0", strict=True)


def test_rbac_grants_what_the_backend_calls() -> None:
    """The ServiceAccount gameday's CronJob uses, and the verbs the backend needs."""
    docs = dict((d["kind"], d) for _, d in documents())
    assert docs["ServiceAccount"]["metadata"] == {
        "name": "chaosmem",
        "namespace": "chaosmem",
        "labels": {"app.kubernetes.io/name": "chaosmem"},
    }
    rules = {
        (group, resource): set(rule["verbs"])
        for rule in docs["ClusterRole"]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert rules[("", "pods/resize")] == {"patch"}
    assert "create" in rules[("", "pods/exec")]
    assert {"get", "list", "watch"} <= rules[("", "pods")]
    assert "patch" in rules[("apps", "deployments")]
    assert "get" in rules[("", "namespaces")]
    assert "get" in rules[("autoscaling", "horizontalpodautoscalers")]
    # a replay Job (scale=): the Job, its status, its pods' logs, and its credentials' Secret,
    # which chaosmem writes and deletes but never reads back
    assert rules[("batch", "jobs")] == {"create", "get", "delete"}
    assert rules[("batch", "jobs/status")] == {"get"}
    assert rules[("", "pods/log")] == {"get"}
    assert rules[("", "secrets")] == {"create", "delete"}
    # nothing broader than needed: delete only what chaosmem itself creates
    assert all("*" not in verbs for verbs in rules.values())
    deletable = {key for key, verbs in rules.items() if "delete" in verbs}
    assert deletable == {("batch", "jobs"), ("", "secrets")}
    cron = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert cron["serviceAccountName"] == "chaosmem"
