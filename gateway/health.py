"""``infergate-health --target HOST:PORT``: exits 0 when the gRPC health service says SERVING.

For container HEALTHCHECKs and scripts. Exit codes: 0 SERVING, 1 any other status (NOT_SERVING while a
gateway drains, UNKNOWN, SERVICE_UNKNOWN), 2 when the target cannot be reached in ``--timeout`` seconds.
With ``--tls-ca`` it speaks TLS, verifying the gateway against that CA (``--tls-server-name`` when the
certificate does not name the target's host); ``--tls-cert``/``--tls-key`` present a client certificate
(mTLS). The health service needs no token.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def channel(
    target: str,
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    server_name: str | None = None,
) -> grpc.Channel:
    """A plaintext channel, or a TLS one when ``ca`` is given (with a client certificate for mTLS)."""
    if ca is None:
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        ca.read_bytes(),
        key.read_bytes() if key is not None else None,
        cert.read_bytes() if cert is not None else None,
    )
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def check(target: str, service: str = "", timeout: float = 3.0, **tls: Any) -> str:
    """The health status name of ``service`` ('' = the whole server) at ``target``; raises grpc.RpcError.
    ``tls`` holds :func:`channel`'s keyword arguments."""
    with channel(target, **tls) as channel_:
        stub = health_pb2_grpc.HealthStub(channel_)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infergate-health", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target", default="127.0.0.1:8001", help="host:port of the gateway (default 127.0.0.1:8001)"
    )
    parser.add_argument("--service", default="", help="service name to check ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    parser.add_argument("--tls-ca", type=Path, default=None, help="PEM CA: speak TLS, verify the server")
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM client certificate (mTLS)")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM key of --tls-cert")
    parser.add_argument("--tls-server-name", default=None, help="name the server certificate must carry")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_cert and args.tls_ca is None):
        parser.error("--tls-cert and --tls-key go together, and need --tls-ca")
    tls = {"ca": args.tls_ca, "cert": args.tls_cert, "key": args.tls_key, "server_name": args.tls_server_name}
    try:
        status = check(args.target, args.service, args.timeout, **tls)
    except OSError as exc:
        print(f"infergate-health: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(f"{args.target}: unreachable ({exc.code().name})", file=sys.stderr)
        return 2
    print(f"{args.target}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
