"""One monitor for the fleet (deploy/k8s/components/fleet-monitor and fleet-monitor-security), rendered with
``kubectl kustomize`` as a user's kustomization composes them (tests/kube.py; no cluster).

Checked on the base with fleet-monitor (plaintext) and on every overlay with fleet-monitor-security: the
gateway pods have no sidecar and no volume nothing mounts; every gateway ships to the fleet monitor's
Service on the port that reaches the monitor's ``--ingest-port``, with exactly one ``--monitor-url``; the
monitor is one replica, recreated on update, with its history (``--db``) on a ReadWriteOnce claim, the
registry read-only, probes on its ``/healthz``, every flag accepted by its own parser; the Services and
PodMonitors reach the right pods under the job names the alerts use. With security: TLS on ingest from
the Certificate's Secret, whose ``ca.crt`` alone the gateways mount and verify the Service name with; the
ingest token of the same Secret key on both sides; a NetworkPolicy that admits ingest only from gateway
pods. The same behaviour runs for real in tests/integration/test_fleet_monitor.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.__main__ import parse_args
from monitor.__main__ import build_parser
from tests.kube import K8S, OVERLAYS, Manifest, container, find, kubectl, kustomize, mounts, ports

CASES = [("base", "fleet-monitor")] + [(o, "fleet-monitor-security") for o in OVERLAYS]
MONITOR, GATEWAY = "infergate-monitor", "infergate"


def _compose(tmp_path: Path, target: str, component: str) -> list[Manifest]:
    """``target`` (the base or an overlay) with ``component``, and the overlay's image for the monitor too
    (a component added on top is outside the overlay's ``images:``: docs/monitor.md says to repeat it)."""
    kubectl()
    here = tmp_path / "compose"
    here.mkdir()
    source = K8S / target if target == "base" else K8S / "overlays" / target
    lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization", "resources:"]
    lines += [f"  - {os.path.relpath(source, here)}", "components:"]
    lines.append(f"  - {os.path.relpath(K8S / 'components' / component, here)}")
    if target != "base":
        text = (source / "kustomization.yaml").read_text()
        lines.append(text[text.index("images:") : text.index("components:")].rstrip())
    (here / "kustomization.yaml").write_text("\n".join(lines) + "\n")
    return kustomize(here)


def _named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def _pod(manifests: list[Manifest], name: str) -> Manifest:
    pod: Manifest = _named(manifests, "Deployment", name)["spec"]["template"]
    return pod


@pytest.fixture(params=CASES, ids=[f"{t}+{c}" for t, c in CASES])
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, list[Manifest]]:
    target, component = request.param
    return target, _compose(tmp_path, target, component)


def test_gateways_ship_to_the_fleet_monitor_and_keep_no_sidecar(rendered: tuple[str, list[Manifest]]) -> None:
    target, manifests = rendered
    pod = _pod(manifests, GATEWAY)["spec"]
    assert [c["name"] for c in pod["containers"]] == ["gateway"]
    used = {name for c in pod["containers"] + pod.get("initContainers", []) for name in mounts(c)}
    assert {v["name"] for v in pod["volumes"]} == used, "a volume nothing mounts is left in the gateway pod"
    gateway = container(pod, "gateway")
    assert len([a for a in gateway["args"] if a.startswith("--monitor-url")]) == 1, gateway["args"]
    g = parse_args(gateway["args"])
    assert not g.no_sampling
    url = urlsplit(g.monitor_url)
    assert (url.scheme, url.hostname, url.path) == (
        "ws" if target == "base" else "wss",
        MONITOR,
        "/v1/samples/stream",
    )
    service = _named(manifests, "Service", MONITOR)
    (ingest,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    monitor_pod = _pod(manifests, MONITOR)
    monitor = container(monitor_pod["spec"], "monitor")
    m = build_parser().parse_args(monitor["args"])
    assert ports(monitor)[ingest["targetPort"]] == m.ingest_port
    assert m.ingest_host == "0.0.0.0"  # reachable from the gateway pods, apart from reads
    assert service["spec"]["selector"].items() <= monitor_pod["metadata"]["labels"].items()
    gateway_labels = _pod(manifests, GATEWAY)["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= gateway_labels.items()
    gateway_service = _named(manifests, "Service", GATEWAY)
    assert "monitor" not in {p["name"] for p in gateway_service["spec"]["ports"]}
    assert monitor["image"] == gateway["image"]


def test_the_monitor_is_one_replica_with_its_history_on_a_claim(rendered: tuple[str, list[Manifest]]) -> None:
    _, manifests = rendered
    deployment = _named(manifests, "Deployment", MONITOR)
    assert deployment["spec"]["replicas"] == 1  # every sample of a version reaches the same windows
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one SQLite writer on a RWO volume
    spec = deployment["spec"]["template"]["spec"]
    monitor = container(spec, "monitor")
    assert monitor["command"] == ["infergate-monitor"]
    m = build_parser().parse_args(monitor["args"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    by_path = {mount["mountPath"]: mount for mount in mounts(monitor).values()}
    history = by_path[str(Path(m.db).parent)]
    claim = volumes[history["name"]]["persistentVolumeClaim"]["claimName"]
    assert _named(manifests, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert not history.get("readOnly", False)
    registry = by_path[str(m.registry)]
    assert registry["readOnly"] is True
    assert volumes[registry["name"]]["persistentVolumeClaim"]["claimName"] == "infergate-registry"
    assert _named(manifests, "PersistentVolumeClaim", "infergate-registry")
    assert m.port == ports(monitor)["monitor"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert monitor[probe]["httpGet"] == {"path": "/healthz", "port": m.port}, probe
    assert monitor["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in by_path  # numba's cache


def test_prometheus_scrapes_the_monitor_once_under_its_job(rendered: tuple[str, list[Manifest]]) -> None:
    _, manifests = rendered
    jobs: dict[str, list[str]] = {}
    for pod_monitor in find(manifests, "PodMonitor"):
        pod = next(
            d["spec"]["template"]
            for d in find(manifests, "Deployment")
            if pod_monitor["spec"]["selector"]["matchLabels"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        )
        names = {name for c in pod["spec"]["containers"] for name in ports(c)}
        for endpoint in pod_monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in names, endpoint
            (relabel,) = endpoint["relabelings"]
            jobs.setdefault(relabel["replacement"], []).append(
                pod["metadata"]["labels"]["app.kubernetes.io/name"]
            )
    assert jobs == {"infergate-gateway": [GATEWAY], "infergate-monitor": [MONITOR]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_with_security_ingest_is_tls_with_the_shared_token(tmp_path: Path, overlay: str) -> None:
    manifests = _compose(tmp_path, overlay, "fleet-monitor-security")
    gateway_pod, monitor_pod = _pod(manifests, GATEWAY)["spec"], _pod(manifests, MONITOR)["spec"]
    gateway, monitor = container(gateway_pod, "gateway"), container(monitor_pod, "monitor")
    g, m = parse_args(gateway["args"]), build_parser().parse_args(monitor["args"])

    def secret_file(pod: Manifest, spec: Manifest, path: Path) -> tuple[str, str, Manifest]:
        """(Secret, key) a mounted file comes from, and the Secret volume (read-only, never subPath)."""
        volumes = {v["name"]: v for v in pod["volumes"]}
        for name, mount in mounts(spec).items():
            if str(path).startswith(mount["mountPath"].rstrip("/") + "/"):
                assert mount.get("readOnly") is True, name
                assert "subPath" not in mount, f"{name}: a subPath mount never sees a rotated Secret"
                secret: Manifest = volumes[name]["secret"]
                items = secret.get("items", [{"key": path.name, "path": path.name}])
                (key,) = [i["key"] for i in items if i["path"] == path.name]
                return secret["secretName"], key, secret
        raise AssertionError(f"{path} is not mounted in {spec['name']}")

    token = secret_file(gateway_pod, gateway, g.monitor_token_file)[:2]
    assert (
        token
        == secret_file(monitor_pod, monitor, m.monitor_token_file)[:2]
        == ("infergate-auth", "monitor-token")
    )
    certificate = _named(manifests, "Certificate", "infergate-monitor-tls")["spec"]
    assert secret_file(monitor_pod, monitor, m.ingest_tls_cert)[:2] == (certificate["secretName"], "tls.crt")
    assert secret_file(monitor_pod, monitor, m.ingest_tls_key)[:2] == (certificate["secretName"], "tls.key")
    name, key, secret = secret_file(gateway_pod, gateway, g.monitor_tls_ca)
    assert (name, key) == (certificate["secretName"], "ca.crt")
    assert [i["key"] for i in secret["items"]] == ["ca.crt"]  # the monitor's key never enters a gateway pod
    assert urlsplit(g.monitor_url).hostname in certificate["dnsNames"]
    assert "server auth" in certificate["usages"]
    policy = _named(manifests, "NetworkPolicy", MONITOR)["spec"]
    assert (
        policy["podSelector"]["matchLabels"].items() <= _pod(manifests, MONITOR)["metadata"]["labels"].items()
    )
    ingest_from = [
        rule["from"]
        for rule in policy["ingress"]
        if {"port": m.ingest_port, "protocol": "TCP"} in rule["ports"]
    ]
    gateway_labels = _pod(manifests, GATEWAY)["metadata"]["labels"]
    assert ingest_from == [[{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "infergate"}}}]]
    assert ingest_from[0][0]["podSelector"]["matchLabels"].items() <= gateway_labels.items()
