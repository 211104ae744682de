"""The Kubernetes manifests render (a small kustomize equivalent, enough for our overlays) and
every rendered object validates against the Kubernetes 1.29 schemas, offline."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[1] / "k8s"
CUSTOM_RESOURCES = ("postgresql.cnpg.io/",)  # CloudNativePG: no schema in the Kubernetes set


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for our patches: maps merge, named lists merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in patch)
    ):
        by_name = {item.get("name"): item for item in base if isinstance(item, dict)}
        merged_list = [(_merge(by_name[i["name"]], i) if i["name"] in by_name else i) for i in patch]
        names = {i["name"] for i in patch}
        return [item for item in base if item.get("name") not in names] + merged_list
    return patch


def _add_labels(doc: dict[str, Any], pairs: dict[str, str], templates: bool) -> None:
    doc.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    if templates:
        spec = doc.get("spec", {})
        for template in (spec.get("template"), spec.get("jobTemplate", {}).get("spec", {}).get("template")):
            if template is not None:
                template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def render(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        docs += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for generator in kustomization.get("configMapGenerator", []):
        data = dict(literal.split("=", 1) for literal in generator.get("literals", []))
        existing = next(
            (d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == generator["name"]), None
        )
        if existing is not None and generator.get("behavior") == "merge":
            existing["data"].update(data)
        else:
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": generator["name"]},
                    "data": data,
                }
            )
    for patch in kustomization.get("patches", []):
        body = yaml.safe_load((directory / patch["path"]).read_text() if "path" in patch else patch["patch"])
        if body.pop("$patch", None) == "delete":
            docs = [
                d
                for d in docs
                if (d["kind"], d["metadata"]["name"]) != (body["kind"], body["metadata"]["name"])
            ]
            continue
        targets = [
            d for d in docs if d["kind"] == body["kind"] and d["metadata"]["name"] == body["metadata"]["name"]
        ]
        assert targets, f"patch {patch['path']} matches nothing"
        for target in targets:
            target.update(_merge(copy.deepcopy(target), body))
    for label in kustomization.get("labels", []):
        for doc in docs:
            _add_labels(doc, label["pairs"], label.get("includeTemplates", False))
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in _containers(doc):
                if container.get("image", "").split(":")[0] == image["name"]:
                    container["image"] = (
                        f"{image.get('newName', image['name'])}:{image.get('newTag', 'latest')}"
                    )
    if "namespace" in kustomization:
        for doc in docs:
            doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template") or {}
    return template.get("spec", {}).get("containers", [])


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_rendered_object_is_valid(overlay):
    docs = render(K8S / "overlays" / overlay)
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith(CUSTOM_RESOURCES):
            assert doc["kind"] in ("Cluster", "ScheduledBackup") and doc["spec"]
            continue
        kubernetes_validate.validate(doc, "1.29", strict=True)


def test_production_shape():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render(K8S / "overlays" / "prod")}
    assert docs[("HorizontalPodAutoscaler", "alliance-gateway")]["spec"]["minReplicas"] >= 2
    gateway = docs[("Deployment", "alliance-gateway")]["spec"]["template"]["spec"]
    container = gateway["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["securityContext"]["runAsNonRoot"] is True
    assert container["image"].startswith("registry.example.com/alliance:")
    jobs = {name: d for (kind, name), d in docs.items() if kind == "CronJob"}
    assert {
        "alliance-settle",
        "alliance-expire",
        "alliance-birthdays",
        "alliance-tiers-evaluate",
        "alliance-insights-refresh",
    } <= set(jobs)
    assert all(job["spec"]["concurrencyPolicy"] == "Forbid" for job in jobs.values())
    assert docs[("Cluster", "alliance-db")]["spec"]["instances"] == 3
    assert not any(kind == "Secret" for kind, _ in docs), "secrets are referenced, never in the manifests"


def test_webhook_worker_shape():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render(K8S / "overlays" / "prod")}
    worker = docs[("Deployment", "alliance-webhooks")]["spec"]
    assert worker["replicas"] == 2
    pod = worker["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][:2] == ["webhooks", "run"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert container["image"].startswith("registry.example.com/alliance:")
    policy = docs[("NetworkPolicy", "alliance-webhooks")]["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "webhooks"
    public = next(rule for rule in policy["egress"] if "ipBlock" in rule["to"][0])
    assert {"10.0.0.0/8", "169.254.0.0/16", "127.0.0.0/8"} <= set(public["to"][0]["ipBlock"]["except"])
