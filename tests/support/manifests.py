"""Load deploy/'s Kubernetes manifests for the tests (deploy tests, Prometheus tests)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))


def load(name: str) -> dict:
    """The one document of deploy/kubernetes/<name>."""
    (doc,) = [d for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d]
    return doc


def container(name: str) -> dict:
    """The first container of a Deployment or a ClusterServingRuntime."""
    doc = load(name)
    spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
    return spec["containers"][0]


def adapter_rule() -> dict:
    """The one rule of the Prometheus adapter's config (prometheus-adapter-rules.yaml)."""
    (rule,) = yaml.safe_load(load("prometheus-adapter-rules.yaml")["data"]["config.yaml"])["rules"]
    return rule
