"""The overlays are secure by default: deploy/k8s/components/security as every overlay renders it.

Checked on each overlay, without a cluster: the gateway serves TLS from the mounted cert-manager Secret and
authorizes with the token file of the mounted `infergate-auth` Secret; both programs accept every rendered
flag (replayed through their own argument parsers); the sample stream goes over the pod's loopback to the
monitor's separate ingest address with the shared token; Secrets are mounted read-only as directories (so
rotation reaches the files); the startup, readiness and liveness probes exec infergate-health over TLS with
a name the certificate carries, inside the kubelet's timeout; the NetworkPolicy selects the pod, admits gRPC
only from labelled client namespaces and never the ingest port.

Then each overlay's pod is replayed on loopback: a real gateway configured from the rendered args (the
Secrets' mount paths pointed at files made in the test, as the kubelet would mount them) serves TLS with a
certificate for the Certificate's names, and every probe command, run through infergate-health's own
``main``, reports SERVING, while a plaintext health check and an inference without a token are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from gateway import health, security
from gateway.__main__ import parse_args
from gateway.config import GatewayConfig
from monitor.__main__ import build_parser
from tests.certs import Pki
from tests.kube import (
    OVERLAYS,
    Manifest,
    container,
    find,
    flag,
    mounts,
    one,
    ports,
    render,
)
from tests.onnx_models import build_registry, dtype_model
from tests.servers import ServerThread
from tests.tokens import TOKENS, write_tokens

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
AUTH_SECRET, INGEST_PORT, MONITOR_HTTP = "infergate-auth", 8091, 8090


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    return render(OVERLAYS)


def _pod(manifests: list[Manifest]) -> Manifest:
    spec: Manifest = one(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def _mounted(spec: Manifest, path: str, volumes: dict[str, Manifest]) -> Manifest:
    """The Secret volume a container sees ``path`` through (a directory mount, read-only)."""
    for name, mount in mounts(spec).items():
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            assert mount.get("readOnly") is True, name
            assert "subPath" not in mount, f"{name}: a subPath mount never sees a rotated Secret"
            secret: Manifest = volumes[name]["secret"]
            return secret
    raise AssertionError(f"{path} is not under any mount of {spec['name']}")


def _key_of(secret: Manifest, path: str) -> str:
    """The Secret key a mounted file comes from (the whole Secret, or its listed items)."""
    name = Path(path).name
    for item in secret.get("items", [{"key": name, "path": name}]):
        if item["path"] == name:
            return str(item["key"])
    raise AssertionError(f"{path}: no item of {secret['secretName']} is mounted there")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_serves_tls_and_authorizes_from_mounted_secrets(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    pod = _pod(rendered[overlay])
    volumes = {v["name"]: v for v in pod["volumes"]}
    gateway = container(pod, "gateway")
    parsed = parse_args(gateway["args"])
    assert parsed.tls_cert is not None
    assert parsed.tls_key is not None
    assert parsed.auth_tokens is not None
    assert parsed.tls_client_ca is None  # mTLS is documented as an addition, not on by default
    tls = _mounted(gateway, str(parsed.tls_cert), volumes)
    assert _mounted(gateway, str(parsed.tls_key), volumes) == tls
    assert (_key_of(tls, str(parsed.tls_cert)), _key_of(tls, str(parsed.tls_key))) == ("tls.crt", "tls.key")
    certificate = one(rendered[overlay], "Certificate")["spec"]
    assert tls["secretName"] == certificate["secretName"]
    auth = _mounted(gateway, str(parsed.auth_tokens), volumes)
    assert auth["secretName"] == AUTH_SECRET
    assert _key_of(auth, str(parsed.auth_tokens)) == "tokens.toml"  # `--from-file=tokens.toml` in the docs
    assert _mounted(gateway, str(parsed.monitor_token_file), volumes) == auth
    # Every name a Service gives the pod (short, <ns>.svc, <ns>.svc.cluster.local) is one the certificate
    # carries, as clients verify it; the namespace part is the same placeholder or name in all of them.
    services = [s["metadata"]["name"] for s in find(rendered[overlay], "Service")]
    assert services
    namespaces = set()
    for service in services:
        forms = set()
        for name in certificate["dnsNames"]:
            qualified = re.fullmatch(rf"{re.escape(service)}\.([^.]+)(\.svc(?:\.cluster\.local)?)", name)
            if qualified:
                namespaces.add(qualified.group(1))
                forms.add(qualified.group(2))
            elif name == service:
                forms.add("")
        assert forms == {"", ".svc", ".svc.cluster.local"}, (service, certificate["dnsNames"])
    assert len(namespaces) == 1, namespaces


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_exec_infergate_health_over_tls(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    pod = _pod(rendered[overlay])
    volumes = {v["name"]: v for v in pod["volumes"]}
    gateway = container(pod, "gateway")
    certificate = one(rendered[overlay], "Certificate")["spec"]
    tls = _mounted(gateway, str(parse_args(gateway["args"]).tls_cert), volumes)
    for probe in PROBES:
        spec = gateway[probe]
        assert "grpc" not in spec, f"{probe}: the kubelet's gRPC probe cannot speak TLS"
        command = spec["exec"]["command"]
        assert command[0] == "infergate-health"
        assert flag(command, "--target") == f"127.0.0.1:{ports(gateway)['grpc']}"
        assert flag(command, "--tls-server-name") in certificate["dnsNames"]
        ca = flag(command, "--tls-ca")
        assert ca is not None
        assert _mounted(gateway, ca, volumes) == tls
        assert _key_of(tls, ca) == "ca.crt"
        # The kubelet kills an exec probe at timeoutSeconds: infergate-health must give up first and say so.
        assert float(flag(command, "--timeout") or 3.0) < spec["timeoutSeconds"], probe
        assert spec["periodSeconds"] >= 5, f"{probe}: each exec starts a Python process"
        assert spec["failureThreshold"] >= 2, probe


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_samples_reach_the_monitor_on_loopback_with_the_shared_token(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    pod = _pod(rendered[overlay])
    volumes = {v["name"]: v for v in pod["volumes"]}
    gateway, monitor = container(pod, "gateway"), container(pod, "monitor")
    g = parse_args(gateway["args"])
    m = build_parser().parse_args(monitor["args"])
    assert not g.no_sampling
    url = urlsplit(g.monitor_url)
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "ws",
        "127.0.0.1",
        m.ingest_port,
        "/v1/samples/stream",
    )
    assert (m.ingest_host, m.ingest_port, m.port) == ("127.0.0.1", INGEST_PORT, MONITOR_HTTP)
    assert INGEST_PORT not in ports(monitor).values(), "the ingest port is not a container port"
    assert g.monitor_token_file is not None
    assert m.monitor_token_file is not None
    gateway_secret = _mounted(gateway, str(g.monitor_token_file), volumes)
    monitor_secret = _mounted(monitor, str(m.monitor_token_file), volumes)
    assert gateway_secret["secretName"] == monitor_secret["secretName"] == AUTH_SECRET
    key = _key_of(gateway_secret, str(g.monitor_token_file))
    assert _key_of(monitor_secret, str(m.monitor_token_file)) == key == "monitor-token"
    assert [item["key"] for item in monitor_secret["items"]] == [key]  # the monitor sees no other token


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_selects_the_pod_and_admits_only_named_namespaces(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    manifests = rendered[overlay]
    policy = one(manifests, "NetworkPolicy")["spec"]
    template = one(manifests, "Deployment")["spec"]["template"]
    assert policy["podSelector"]["matchLabels"]
    assert policy["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    allowed: dict[int, list[Manifest]] = {}
    for rule in policy["ingress"]:
        assert rule.get("from"), "a rule without `from` admits everyone"
        for port in rule["ports"]:
            allowed.setdefault(port["port"], []).extend(rule["from"])
    pod = template["spec"]
    named = {**ports(container(pod, "gateway")), **ports(container(pod, "monitor"))}
    assert set(allowed) == set(named.values()) == {8001, 8002, MONITOR_HTTP}  # never the ingest port
    assert INGEST_PORT not in allowed
    for peer in allowed[named["grpc"]]:
        assert peer == {"namespaceSelector": {"matchLabels": {"infergate.io/inference-client": "true"}}}
    for port in (named["metrics"], named["monitor"]):
        for peer in allowed[port]:
            assert peer == {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
            }


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_registry(tmp_path_factory.mktemp("pod") / "registry", {"m": dtype_model("FP32")})


class Pod:
    """The gateway container of an overlay, replayed on loopback: each Secret mount points at a directory
    made here holding what the Secret holds (cert-manager's keys; the keys the docs create), the registry
    mount at a test registry, and the gateway is configured from the rendered args."""

    def __init__(self, manifests: list[Manifest], directory: Path, registry: Path) -> None:
        pod = _pod(manifests)
        self.gateway = container(pod, "gateway")
        volumes = {v["name"]: v for v in pod["volumes"]}
        pki = Pki()
        issued = pki.issue("infergate", server=True)  # names localhost, as the Certificate does
        contents = {
            one(manifests, "Certificate")["spec"]["secretName"]: {
                "ca.crt": pki.ca_pem,
                "tls.crt": issued.cert,
                "tls.key": issued.key,
            },
            AUTH_SECRET: {
                "tokens.toml": write_tokens(directory / "tokens.toml", TOKENS).read_bytes(),
                "monitor-token": b"ingest-token-5d1c\n",
            },
        }
        self.moved: dict[str, Path] = {}  # mountPath -> local directory
        for name, mount in mounts(self.gateway).items():
            secret = volumes[name].get("secret")
            if name == "registry":
                self.moved[mount["mountPath"].rstrip("/")] = registry
            elif secret is not None:
                local = directory / name
                local.mkdir()
                keys = contents[secret["secretName"]]
                for item in secret.get("items") or [{"key": k, "path": k} for k in keys]:
                    (local / item["path"]).write_bytes(keys[item["key"]])
                self.moved[mount["mountPath"].rstrip("/")] = local
        args = parse_args(self.replayed(self.gateway["args"]))
        options = security.config_options(args)  # reads the files as the command line does
        config = GatewayConfig(
            args.registry, port=0, metrics_port=None, sampling=False, poll_interval=0, **options
        )
        self.server = ServerThread(config)

    def _move(self, value: str) -> str:
        for mount_path, local in self.moved.items():
            if value == mount_path or value.startswith(f"{mount_path}/"):
                return f"{local}{value[len(mount_path) :]}"
        return value

    def replayed(self, args: list[str]) -> list[str]:
        """``args`` with each path under a mount moved to its local directory."""
        out = []
        for arg in args:
            if arg.startswith("--") and "=" in arg:
                name, value = arg.split("=", 1)
                out.append(f"{name}={self._move(value)}")
            else:
                out.append(self._move(arg))
        return out

    def probe(self, name: str) -> list[str]:
        """The probe's command, its paths moved and its target the replayed gateway's port."""
        command = self.replayed(self.gateway[name]["exec"]["command"])
        return [f"--target={self.server.target}" if a.startswith("--target=") else a for a in command]


@pytest.fixture(scope="module", params=OVERLAYS)
def pod(
    request: pytest.FixtureRequest,
    rendered: dict[str, list[Manifest]],
    registry: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pod]:
    replay = Pod(rendered[request.param], tmp_path_factory.mktemp(f"pod-{request.param}"), registry)
    yield replay
    replay.server.stop()


def test_replayed_pod_answers_its_tls_probes_and_refuses_strangers(pod: Pod) -> None:
    for name in PROBES:
        command = pod.probe(name)
        assert command[0] == "infergate-health"
        assert health.main(command[1:]) == 0, command  # every flag parses, TLS verifies, SERVING
    # What the kubelet's native gRPC probe would do (plaintext) fails against the TLS port.
    assert health.main(["--target", pod.server.target, "--timeout", "10"]) == 2
    ca = flag(pod.probe("readinessProbe"), "--tls-ca")
    tensor = grpcclient.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 3), np.float32))
    with grpcclient.InferenceServerClient(pod.server.target, ssl=True, root_certificates=ca) as client:
        with pytest.raises(InferenceServerException) as info:
            client.infer("m", [tensor])
        assert info.value.status() == str(grpc.StatusCode.UNAUTHENTICATED)
        result = client.infer("m", [tensor], headers={"authorization": "Bearer tok-infer-8c1f0e"})
        np.testing.assert_array_equal(result.as_numpy("y"), np.full((1, 3), 2.0, np.float32))
