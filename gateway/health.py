"""``infergate-health --target HOST:PORT``: exits 0 when the gRPC health service says SERVING.

For container HEALTHCHECKs and scripts. Exit codes: 0 SERVING, 1 any other status (NOT_SERVING while a
gateway drains, UNKNOWN, SERVICE_UNKNOWN), 2 when the target cannot be reached in ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, service: str = "", timeout: float = 3.0) -> str:
    """The health status name of ``service`` ('' = the whole server) at ``target``; raises grpc.RpcError."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infergate-health", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target", default="127.0.0.1:8001", help="host:port of the gateway (default 127.0.0.1:8001)"
    )
    parser.add_argument("--service", default="", help="service name to check ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    args = parser.parse_args(argv)
    try:
        status = check(args.target, args.service, args.timeout)
    except grpc.RpcError as exc:
        print(f"{args.target}: unreachable ({exc.code().name})", file=sys.stderr)
        return 2
    print(f"{args.target}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
