"""deploy/kubernetes/ against the schemas, offline: every built-in kind with
kubernetes-validate's bundled Kubernetes schemas (strict: unknown fields are errors), the
KServe ClusterServingRuntime with the openAPIV3Schema of KServe's own CRD; and what ties the
manifests together (ports, probes, the config file, the HPA's metric and its adapter rule)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from support.manifests import MANIFESTS, adapter_rule, container, load

KSERVE_SCHEMA = Path(__file__).with_name("kserve_clusterservingruntime_v1alpha1.schema.json")
# The newest Kubernetes kubernetes-validate knows, and an older one still widely run.
VERSIONS = (kubernetes_validate.latest_version(), "1.29.0")
# What Triton's k8s-onprem chart autoscales on (issue 15).
QUEUE_RATIO = "avg(delta(nv_inference_queue_duration_us[30s])/(1+delta(nv_inference_request_success[30s])))"
TRITON_KSERVE_ARGS = ["--model-store=/mnt/models", "--grpc-port=9000", "--http-port=8080",
                      "--allow-grpc=true", "--allow-http=true"]


def test_every_manifest_is_checked() -> None:
    assert {p.name for p in MANIFESTS} == {
        "configmap.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "prometheus-adapter-rules.yaml",
        "kserve-runtime.yaml"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", [p for p in MANIFESTS if p.name != "kserve-runtime.yaml"], ids=lambda p: p.name)
def test_kubernetes_schemas(path: Path, version: str) -> None:
    kubernetes_validate.validate(load(path.name), version, strict=True)


def _strict(schema):
    """A CRD schema as `kubectl --validate=strict` applies it: unknown fields are errors."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    return schema


def _kserve_validator() -> jsonschema.Validator:
    schema = _strict(json.loads(KSERVE_SCHEMA.read_text()))
    # metadata is the apiserver's ObjectMeta, which the CRD leaves open.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def test_kserve_runtime_against_kserve_crd() -> None:
    doc = load("kserve-runtime.yaml")
    validator = _kserve_validator()
    assert [e.message for e in validator.iter_errors(doc)] == []
    # The strict schema does catch a misspelt field and a wrong type.
    bad = json.loads(json.dumps(doc))
    bad["spec"]["protocolVersion"] = ["v2"]
    bad["spec"]["containers"][0]["args"] = "--model-store=/mnt/models"
    messages = [e.message for e in validator.iter_errors(bad)]
    assert any("protocolVersion" in m for m in messages) and any("is not of type 'array'" in m for m in messages)


def test_kserve_runtime_is_tritons_for_the_triton_format() -> None:
    doc = load("kserve-runtime.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("serving.kserve.io/v1alpha1", "ClusterServingRuntime")
    spec = doc["spec"]
    assert {"name": "triton", "version": "2"}.items() <= spec["supportedModelFormats"][0].items()
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    c = container("kserve-runtime.yaml")
    assert c["name"] == "kserve-container"  # the name KServe merges the InferenceService's container into
    assert c["command"] == ["naiad", "serve"] and c["args"] == TRITON_KSERVE_ARGS
    assert spec["annotations"]["prometheus.kserve.io/port"] == "8002"


def test_deployment_probes_ports_and_config() -> None:
    c = container("deployment.yaml")
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    toml = tomllib.loads(load("configmap.yaml")["data"]["naiad.toml"])
    assert ports == {name: toml["services"][name]["port"] for name in ("http", "grpc", "metrics")}
    mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "config")
    assert c["args"] == [f"--config={mount}/naiad.toml"]
    service = load("service.yaml")
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    assert service["spec"]["selector"] == load("deployment.yaml")["spec"]["selector"]["matchLabels"]
    pod = load("deployment.yaml")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > toml["server"]["exit_timeout_secs"]  # a drain finishes


def test_configmap_toml_passes_naiad_config_check(tmp_path) -> None:
    path = tmp_path / "naiad.toml"
    path.write_text(load("configmap.yaml")["data"]["naiad.toml"])
    out = subprocess.run([sys.executable, "-m", "naiad.kernel.main", "config", "check", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok" in out.stdout


def test_hpa_scales_on_the_adapter_rule() -> None:
    rule = adapter_rule()
    (metric,) = load("hpa.yaml")["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert load("hpa.yaml")["spec"]["scaleTargetRef"]["name"] == load("deployment.yaml")["metadata"]["name"]
    # The rule is the queue-time ratio, with the adapter's label matchers and grouping.
    plain = re.sub(r"\{<<\.LabelMatchers>>\}", "", rule["metricsQuery"])
    assert plain == QUEUE_RATIO + " by (<<.GroupBy>>)"
    assert rule["seriesQuery"].startswith("nv_inference_queue_duration_us{")
