"""The Kubernetes and KServe manifests (deploy/k8s, deploy/kserve) render and keep their invariants.

The base (deploy/k8s/base, the unsecured pod for local trials) and every overlay under deploy/k8s/overlays
(secure by default: components/security, checked in tests/integration/test_deploy_security.py) are rendered
with ``kubectl kustomize`` and read back as JSON (tests/kube.py; no cluster, no YAML library). Checked on
each: the gateway and the monitor are two containers of one pod, the sample stream goes over the pod's
loopback to the monitor's ingest port, the probes hit the ports the programs listen on (gRPC health on 8001,
the monitor's /healthz on 8090), the grace period outlasts the preStop sleep plus the gateway's
--grace-seconds drain, the registry is mounted read-only where --registry points, the Service, PodMonitor,
PDB and HPA reach the pod, the security context matches the image's user and leaves writable exactly what
the programs write, and the PrometheusRule carries every rule of deploy/prometheus/alerts.yml (and is what
scripts/render-prometheusrule.py renders now). The base alone keeps the kubelet's native gRPC probes and
ingest on 8090, with no TLS, tokens or NetworkPolicy. The gpu overlay requests a GPU and puts the models on
CUDA. The components (queue-depth HPA, object-storage sync) are rendered on top of an overlay, and the
KServe runtime is checked against its example InferenceService (plaintext h2c, as KServe routes it).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.__main__ import parse_args
from monitor.__main__ import build_parser
from tests.kube import (
    K8S,
    KSERVE,
    OVERLAYS,
    ROOT,
    TARGETS,
    Manifest,
    container,
    find,
    flag,
    kubectl,
    kustomize,
    load,
    mounts,
    one,
    ports,
    pre_stop_seconds,
    render,
)

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
GATEWAY_GRPC, GATEWAY_METRICS, MONITOR_HTTP = 8001, 8002, 8090
WORKERS_DRAIN_MARGIN_S = 10.0


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    return render(TARGETS)


def _compose(tmp_path: Path, overlay: str, *components: str) -> list[Manifest]:
    """An overlay with components added, as a user's own kustomization would (relative paths only)."""
    here = tmp_path / "compose"
    here.mkdir()
    lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization", "resources:"]
    lines.append(f"  - {os.path.relpath(K8S / 'overlays' / overlay, here)}")
    lines.append("components:")
    lines += [f"  - {os.path.relpath(K8S / 'components' / c, here)}" for c in components]
    (here / "kustomization.yaml").write_text("\n".join(lines) + "\n")
    return kustomize(here)


def _pod(manifests: list[Manifest]) -> Manifest:
    pod: Manifest = one(manifests, "Deployment")["spec"]["template"]
    return pod


def _gateway_probe_port(probe: Manifest) -> int:
    """The port a gateway probe checks: the kubelet's native gRPC probe, or an exec of infergate-health on
    the pod's loopback (the only way to probe over TLS)."""
    if "grpc" in probe:
        return int(probe["grpc"]["port"])
    command = probe["exec"]["command"]
    assert command[0] == "infergate-health", command
    target = urlsplit(f"//{flag(command, '--target')}")
    assert target.hostname == "127.0.0.1", command
    assert target.port is not None, command
    return target.port


def test_the_cpu_and_gpu_overlays_exist() -> None:
    assert {"cpu", "gpu"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", TARGETS)
def test_gateway_and_monitor_share_one_pod_and_talk_over_loopback(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    pod = _pod(rendered[overlay])["spec"]
    assert [c["name"] for c in pod["containers"]] == ["gateway", "monitor"]
    gateway, monitor = container(pod, "gateway"), container(pod, "monitor")
    assert gateway["command"] == ["infergate-gateway"]
    assert monitor["command"] == ["infergate-monitor"]
    assert gateway["image"] == monitor["image"]  # one image, two commands
    assert len([a for a in gateway["args"] if a.startswith("--monitor-url")]) == 1, gateway["args"]
    url = urlsplit(flag(gateway["args"], "--monitor-url") or "")
    assert (url.scheme, url.hostname, url.path) == ("ws", "127.0.0.1", "/v1/samples/stream")
    assert int(flag(monitor["args"], "--port") or 0) == ports(monitor)["monitor"] == MONITOR_HTTP
    # Ingest is on the monitor's own ingest address when it has one (loopback), else on its main port.
    ingest_host = flag(monitor["args"], "--ingest-host")
    assert ingest_host in (None, "127.0.0.1"), "ingest is never exposed beyond the pod"
    expected = MONITOR_HTTP if ingest_host is None else int(flag(monitor["args"], "--ingest-port") or 0)
    assert url.port == expected
    assert "--no-sampling" not in gateway["args"]


@pytest.mark.parametrize("overlay", TARGETS)
def test_probes_hit_the_ports_the_programs_listen_on(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    pod = _pod(rendered[overlay])["spec"]
    gateway, monitor = container(pod, "gateway"), container(pod, "monitor")
    assert int(flag(gateway["args"], "--port") or 0) == ports(gateway)["grpc"] == GATEWAY_GRPC
    assert int(flag(gateway["args"], "--metrics-port") or 0) == ports(gateway)["metrics"] == GATEWAY_METRICS
    assert flag(gateway["args"], "--host") == flag(monitor["args"], "--host") == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert _gateway_probe_port(gateway[probe]) == GATEWAY_GRPC, probe  # grpc.health.v1, service ""
        assert monitor[probe]["httpGet"] == {"path": "/healthz", "port": MONITOR_HTTP}, probe


@pytest.mark.parametrize("overlay", TARGETS)
def test_every_rendered_flag_is_one_the_programs_accept(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    """The args replayed through the programs' own parsers (an unknown flag exits 2, failing the test).
    infergate-health's probe commands are replayed in test_deploy_security against a real gateway."""
    pod = _pod(rendered[overlay])["spec"]
    gateway = parse_args(container(pod, "gateway")["args"])
    monitor = build_parser().parse_args(container(pod, "monitor")["args"])
    assert (gateway.port, gateway.metrics_port, monitor.port) == (GATEWAY_GRPC, GATEWAY_METRICS, MONITOR_HTTP)
    assert gateway.model_control != "explicit", "load and unload stay refused unless an operator opts in"


def test_base_is_the_plaintext_pod_for_local_trials(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["base"]
    pod = _pod(manifests)["spec"]
    gateway, monitor = container(pod, "gateway"), container(pod, "monitor")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert gateway[probe]["grpc"] == {"port": GATEWAY_GRPC}, probe  # the kubelet's own, plaintext
    assert flag(gateway["args"], "--monitor-url") == f"ws://127.0.0.1:{MONITOR_HTTP}/v1/samples/stream"
    for option in ("--tls-cert", "--tls-key", "--auth-tokens", "--monitor-token-file"):
        assert flag(gateway["args"], option) is None, option
    for option in ("--monitor-token-file", "--ingest-host"):
        assert flag(monitor["args"], option) is None, option
    assert {v["name"] for v in pod["volumes"]} == {"registry", "tmp", "monitor-data"}
    assert find(manifests, "NetworkPolicy") == find(manifests, "Certificate") == []


@pytest.mark.parametrize("overlay", TARGETS)
def test_grace_period_outlasts_the_drain(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    pod = _pod(rendered[overlay])["spec"]
    gateway, monitor = container(pod, "gateway"), container(pod, "monitor")
    grace = flag(gateway["args"], "--grace-seconds")
    assert grace is not None, "the drain time must be explicit in the manifest"
    # With --workers the parent waits for its workers up to --grace-seconds + 10 s (gateway/workers.py).
    drain = pre_stop_seconds(gateway) + float(grace) + WORKERS_DRAIN_MARGIN_S
    assert pre_stop_seconds(gateway) >= 5, "endpoints need a few seconds to drop the pod before the drain"
    assert pod["terminationGracePeriodSeconds"] > drain
    assert pod["terminationGracePeriodSeconds"] > pre_stop_seconds(monitor)


@pytest.mark.parametrize("overlay", TARGETS)
def test_registry_is_mounted_read_only_where_the_programs_look(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    pod = _pod(rendered[overlay])["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["registry"]["persistentVolumeClaim"] == {
        "claimName": "infergate-registry",
        "readOnly": True,
    }
    assert one(rendered[overlay], "PersistentVolumeClaim")["metadata"]["name"] == "infergate-registry"
    for spec in pod["containers"]:
        mount = mounts(spec)["registry"]
        assert mount.get("readOnly") is True, spec["name"]
        assert flag(spec["args"], "--registry") == mount["mountPath"], spec["name"]


@pytest.mark.parametrize("overlay", TARGETS)
def test_non_root_read_only_root_and_writable_paths_are_volumes(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    pod = _pod(rendered[overlay])["spec"]
    user = re.search(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert user, "the Dockerfile names a numeric USER"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(user.group(1))
    numba_cache = re.search(r"NUMBA_CACHE_DIR=(\S+)", (ROOT / "Dockerfile").read_text())
    assert numba_cache
    for spec in pod["containers"]:
        assert spec["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["allowPrivilegeEscalation"] is False
        writable = [m["mountPath"] for m in spec["volumeMounts"] if not m.get("readOnly")]
        assert any(numba_cache.group(1).startswith(f"{path}/") for path in writable), spec["name"]
    db = flag(container(pod, "monitor")["args"], "--db") or ""
    monitor_writable = [
        m["mountPath"] for m in container(pod, "monitor")["volumeMounts"] if not m.get("readOnly")
    ]
    assert any(db.startswith(f"{path}/") for path in monitor_writable), db
    for spec in pod["containers"]:
        resources = spec["resources"]
        assert resources["requests"]["cpu"], spec["name"]
        assert resources["limits"]["memory"], spec["name"]


@pytest.mark.parametrize("overlay", TARGETS)
def test_service_pdb_hpa_and_podmonitor_reach_the_pod(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    manifests = rendered[overlay]
    pod = _pod(manifests)
    labels = pod["metadata"]["labels"]
    named = {**ports(container(pod["spec"], "gateway")), **ports(container(pod["spec"], "monitor"))}
    services = {s["metadata"]["name"]: s for s in find(manifests, "Service")}
    service = services["infergate"]
    assert service["spec"]["selector"].items() <= labels.items()
    exposed = {p["port"]: named[p["targetPort"]] for p in service["spec"]["ports"]}
    assert exposed == {
        GATEWAY_GRPC: GATEWAY_GRPC,
        GATEWAY_METRICS: GATEWAY_METRICS,
        MONITOR_HTTP: MONITOR_HTTP,
    }
    pdb = one(manifests, "PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    hpa = one(manifests, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "infergate"}
    assert hpa["minReplicas"] > pdb["maxUnavailable"], "a voluntary disruption must leave a pod serving"
    assert "replicas" not in one(manifests, "Deployment")["spec"], "the HPA owns the replica count"
    assert {m["resource"]["name"] for m in hpa["metrics"] if m["type"] == "Resource"} == {"cpu"}
    monitor = one(manifests, "PodMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    jobs = {}
    for endpoint in monitor["podMetricsEndpoints"]:
        assert endpoint["port"] in named
        assert endpoint["path"] == "/metrics"
        (relabel,) = [r for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
        jobs[relabel["replacement"]] = named[endpoint["port"]]
    # The alert rules find the targets by these job names (InfergateGatewayDown / InfergateMonitorDown).
    assert set(re.findall(r'job="([^"]+)"', ALERTS.read_text())) <= set(jobs)
    assert jobs == {"infergate-gateway": GATEWAY_METRICS, "infergate-monitor": MONITOR_HTTP}


def test_gpu_overlay_requests_a_gpu_and_runs_the_models_on_cuda(rendered: dict[str, list[Manifest]]) -> None:
    gpu = _pod(rendered["gpu"])["spec"]
    gateway = container(gpu, "gateway")
    assert str(gateway["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert flag(gateway["args"], "--device") == "cuda:0"
    assert "--require-gpu" in gateway["args"]
    assert "nvidia.com/gpu" not in container(gpu, "monitor")["resources"].get("limits", {})
    assert gpu["tolerations"]
    assert gpu["nodeSelector"]
    assert gateway["image"].endswith("-gpu")
    # The gpu patches and the security component both edit the gateway: the longer CUDA start-up stays on
    # the TLS exec probe, and the security flags stay beside --device.
    cpu_gateway = container(_pod(rendered["cpu"])["spec"], "gateway")
    assert gateway["startupProbe"]["exec"] == cpu_gateway["startupProbe"]["exec"]
    assert gateway["startupProbe"]["failureThreshold"] > cpu_gateway["startupProbe"]["failureThreshold"]
    assert [a for a in gateway["args"] if a not in ("--device=cuda:0", "--require-gpu")] == cpu_gateway[
        "args"
    ]
    cpu = _pod(rendered["cpu"])["spec"]
    for spec in cpu["containers"]:
        assert "nvidia.com/gpu" not in json.dumps(spec["resources"])
        assert flag(spec["args"], "--device") is None


def test_queue_depth_component_scales_on_the_adapter_metric_the_gateway_exports(tmp_path: Path) -> None:
    kubectl()
    manifests = _compose(tmp_path, "gpu", "queue-depth-hpa")
    hpa = one(manifests, "HorizontalPodAutoscaler")["spec"]
    (pods_metric,) = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
    name = pods_metric["metric"]["name"]
    assert pods_metric["target"]["type"] == "AverageValue"
    assert {m["resource"]["name"] for m in hpa["metrics"] if m["type"] == "Resource"} == {"cpu"}
    (adapter,) = load(K8S / "components" / "queue-depth-hpa" / "prometheus-adapter-config.yaml")
    config: str = adapter["data"]["config.yaml"]
    assert f'as: "{name}"' in config
    series = re.search(r"seriesQuery: '(\w+)\{", config)
    assert series, config
    assert f'"{series.group(1)}"' in (ROOT / "gateway" / "metrics.py").read_text()  # a gauge the gateway has
    assert 'pod: {resource: "pod"}' in config
    assert 'namespace: {resource: "namespace"}' in config


def test_registry_sync_component_fills_a_pod_local_registry_ready_last(tmp_path: Path) -> None:
    kubectl()
    manifests = _compose(tmp_path, "cpu", "registry-sync")
    assert find(manifests, "PersistentVolumeClaim") == []
    pod = _pod(manifests)["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes["registry"]) == {"name", "emptyDir"}
    (sync,) = pod["initContainers"]
    assert mounts(sync)["registry"].get("readOnly") is not True
    for spec in pod["containers"]:
        assert mounts(spec)["registry"]["readOnly"] is True
    lines = [line.strip() for line in sync["args"][0].splitlines()]
    script = [line for line in lines if line.startswith("rclone ")]
    assert len(script) == 2, sync["args"]
    assert "--exclude READY" in script[0]
    assert "--include READY" in script[1]


def test_kserve_runtime_serves_onnx_over_v2_grpc_from_the_model_mount() -> None:
    kubectl()
    (runtime,) = load(KSERVE / "clusterservingruntime.yaml")
    (service,) = load(KSERVE / "inferenceservice.yaml")
    assert (runtime["apiVersion"], runtime["kind"]) == ("serving.kserve.io/v1alpha1", "ClusterServingRuntime")
    spec: dict[str, Any] = runtime["spec"]
    assert "onnx" in {f["name"] for f in spec["supportedModelFormats"]}
    assert spec["protocolVersions"] == ["grpc-v2"]  # no REST endpoint, so no "v2"
    (main,) = spec["containers"]
    assert main["name"] == "kserve-container"
    assert main["command"] == ["infergate-gateway"]
    assert flag(main["args"], "--registry") == "/mnt/models"  # where KServe puts the storageUri
    assert int(flag(main["args"], "--port") or 0) == GATEWAY_GRPC
    assert main["ports"] == [{"name": "h2c", "containerPort": GATEWAY_GRPC, "protocol": "TCP"}]
    assert main["readinessProbe"]["grpc"] == {"port": GATEWAY_GRPC}
    # KServe routes cleartext HTTP/2 (h2c) to the runtime and probes it natively: TLS belongs to KServe's
    # ingress or mesh, so the runtime must not serve TLS itself (the probe and the routing would both fail).
    assert flag(main["args"], "--tls-cert") is None
    parsed = parse_args(main["args"])  # every flag is one infergate-gateway accepts
    assert parsed.no_sampling
    assert parsed.model_control != "explicit", "no caller may load or unload models through KServe's route"
    assert spec["annotations"]["prometheus.kserve.io/port"] == str(flag(main["args"], "--metrics-port"))
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] == "onnx"
    assert model["protocolVersion"] in spec["protocolVersions"]
    assert model["storageUri"].startswith("pvc://infergate-registry/")
