"""The Kubernetes security component (deploy/k8s/components/security) rendered on the cpu overlay.

Checked without a cluster: the gateway serves TLS from the mounted cert-manager Secret and authorizes with
the mounted token file; both programs accept every rendered flag; the sample stream goes over the pod's
loopback to the monitor's separate ingest address with the shared token; Secrets are mounted read-only as
directories (so rotation reaches the files); the probes speak TLS through infergate-health with a name the
certificate carries; the NetworkPolicy admits gRPC only from labelled client namespaces and never the
ingest port.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.__main__ import parse_args
from monitor.__main__ import build_parser
from tests.kube import K8S, Manifest, container, flag, kubectl, kustomize, mounts, one


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    kubectl()
    here = tmp_path_factory.mktemp("compose")
    (here / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(K8S / 'overlays' / 'cpu', here)}\n"
        f"components:\n  - {os.path.relpath(K8S / 'components' / 'security', here)}\n"
    )
    return kustomize(here)


def _mounted(spec: Manifest, path: str, volumes: dict[str, Manifest]) -> Manifest:
    """The Secret volume a container sees ``path`` through (a directory mount, read-only)."""
    for name, mount in mounts(spec).items():
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            assert mount.get("readOnly") is True, name
            assert "subPath" not in mount, f"{name}: a subPath mount never sees a rotated Secret"
            return volumes[name]["secret"]
    raise AssertionError(f"{path} is not under any mount of {spec['name']}")


def test_gateway_serves_tls_and_authorizes_from_mounted_secrets(rendered: list[Manifest]) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    gateway = container(pod, "gateway")
    args = gateway["args"]
    parsed = parse_args(args)
    assert parsed.tls_cert is not None
    assert parsed.auth_tokens is not None
    tls = _mounted(gateway, str(parsed.tls_cert), volumes)
    assert _mounted(gateway, str(parsed.tls_key), volumes) == tls
    certificate = one(rendered, "Certificate")["spec"]
    assert tls["secretName"] == certificate["secretName"]
    auth = _mounted(gateway, str(parsed.auth_tokens), volumes)
    assert _mounted(gateway, str(parsed.monitor_token_file), volumes) == auth
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = gateway[probe]
        assert "grpc" not in spec, f"{probe}: the kubelet's gRPC probe cannot speak TLS"
        command = spec["exec"]["command"]
        assert command[0] == "infergate-health"
        assert flag(command, "--target") == "127.0.0.1:8001"
        assert flag(command, "--tls-server-name") in certificate["dnsNames"]
        ca = flag(command, "--tls-ca")
        assert ca is not None
        assert _mounted(gateway, ca, volumes) == tls


def test_samples_reach_the_monitor_on_loopback_with_the_shared_token(rendered: list[Manifest]) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    gateway, monitor = container(pod, "gateway"), container(pod, "monitor")
    g = parse_args(gateway["args"])
    m = build_parser().parse_args(monitor["args"])
    url = urlsplit(g.monitor_url)
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", m.ingest_port, "/v1/samples/stream")
    assert m.ingest_host == "127.0.0.1"
    assert m.ingest_port != m.port
    gateway_secret = _mounted(gateway, str(g.monitor_token_file), volumes)
    monitor_secret = _mounted(monitor, str(m.monitor_token_file), volumes)
    assert gateway_secret["secretName"] == monitor_secret["secretName"]
    key = Path(m.monitor_token_file).name
    assert [item["key"] for item in monitor_secret["items"]] == [key]  # the monitor sees no other token
    assert Path(str(g.monitor_token_file)).name == key


def test_network_policy_admits_only_named_namespaces(rendered: list[Manifest]) -> None:
    policy = one(rendered, "NetworkPolicy")["spec"]
    pod_labels = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    allowed: dict[int, list[Manifest]] = {}
    for rule in policy["ingress"]:
        assert rule.get("from"), "a rule without `from` admits everyone"
        for port in rule["ports"]:
            allowed.setdefault(port["port"], []).extend(rule["from"])
    assert set(allowed) == {8001, 8002, 8090}  # never the ingest port 8091
    for peer in allowed[8001]:
        assert peer["namespaceSelector"]["matchLabels"] == {"infergate.io/inference-client": "true"}
