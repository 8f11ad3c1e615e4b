"""``python -m bench.auth``: issue 15, what the auth check and TLS cost on the hot path.

Contracts:

* Fresh registry under ``--work`` with ``tiny`` (1 row, the cheapest inference, so the per-call cost of
  security is the largest share it can be). A throwaway CA (``tests/certs.py``, needs the ``test``
  extra's ``cryptography``) makes the server and client certificates; a token file grants ``infer``
  and ``metadata`` (the load generator asks for ModelMetadata first).
* Four gateway subprocesses (``--no-sampling --poll-interval 0``): plaintext, plaintext with
  ``--auth-tokens``, TLS, and mTLS with ``--auth-tokens``. Each is measured with the same closed-loop load
  (``--concurrency`` from ``--processes`` client processes for ``--duration`` s), the client sending the
  token and certificates each needs, in two rounds, the second in reverse order, so the machine's drift
  hits every side. Throughput sums both rounds; the cost is ``1 - secured / plaintext``.
* Prints a Markdown table (throughput, p50 and p99, the cost next to the goal of <= 3 % for auth) and
  writes each run's JSON report under ``--results``. Nothing else is changed; run it on a quiet machine.
* ``--micro``: only the auth interceptor's own cost, in process: ``intercept_service`` on a ModelInfer
  call with a valid token against a continuation that returns at once, minus the continuation alone
  (best of 5 rounds of ``--calls``), in microseconds per call. No server, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

from bench.kit import Gateway, Measured, fresh_registry, measure, ratio, start_gateway
from gateway.grants import hash_token
from loadtests.secure import ClientSecurity

TOKEN = "bench-token-5d0c7a1e"
SIDES = ("plain", "auth", "tls", "mtls+auth")
GOAL_AUTH_COST = 0.03


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.auth", description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("bench-out/auth"), help="scratch directory")
    p.add_argument("--results", type=Path, default=Path("bench-out/auth/results"), help="JSON reports")
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop concurrency (default 16)")
    p.add_argument("--processes", type=int, default=1, help="client processes (default 1)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument("--micro", action="store_true", help="only the interceptor's cost per call, in process")
    p.add_argument("--calls", type=int, default=100_000, help="--micro: calls per round (default 100000)")
    return p


def micro(work: Path, calls: int) -> tuple[float, float]:
    """(continuation alone, interceptor + continuation) in microseconds per call, best of 5 rounds."""
    from gateway.auth import AuthInterceptor
    from gateway.grants import GrantStore

    work.mkdir(parents=True, exist_ok=True)
    tokens = work / "micro-tokens.toml"
    tokens.write_text(f'[[token]]\nname = "bench"\nsha256 = "{hash_token(TOKEN)}"\nscopes = ["infer"]\n')
    interceptor = AuthInterceptor(GrantStore(tokens))
    details: Any = _Details(  # what grpc.aio hands an interceptor: the method and the metadata
        "/inference.GRPCInferenceService/ModelInfer",
        (("user-agent", "grpc-python"), ("authorization", f"Bearer {TOKEN}")),
    )
    handler = object()

    async def continuation(_: Any) -> Any:
        return handler

    async def rounds() -> tuple[float, float]:
        base, full = [], []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(calls):
                await continuation(details)
            base.append(time.perf_counter() - started)
            started = time.perf_counter()
            for _ in range(calls):
                if await interceptor.intercept_service(continuation, details) is not handler:
                    raise AssertionError("the interceptor refused a valid token")
            full.append(time.perf_counter() - started)
        return min(base) / calls * 1e6, min(full) / calls * 1e6

    return asyncio.run(rounds())


class _Details(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


def _files(work: Path) -> dict[str, Path]:
    from tests.certs import Pki  # the test extra: cryptography

    pki = Pki("infergate bench CA")
    ca = pki.write_ca(work / "certs")
    cert, key = pki.issue("gateway", server=True).write(work / "certs", "server")
    client_cert, client_key = pki.issue("bench-client").write(work / "certs", "client")
    tokens = work / "tokens.toml"
    tokens.write_text(
        f'[[token]]\nname = "bench"\nsha256 = "{hash_token(TOKEN)}"\nscopes = ["infer", "metadata"]\n'
    )
    return {
        "ca": ca,
        "cert": cert,
        "key": key,
        "client_cert": client_cert,
        "client_key": client_key,
        "tokens": tokens,
    }


def _side(name: str, f: dict[str, Path]) -> tuple[list[str], ClientSecurity | None]:
    """Gateway flags and client security of one side."""
    auth = ["--auth-tokens", str(f["tokens"])]
    tls = ["--tls-cert", str(f["cert"]), "--tls-key", str(f["key"])]
    if name == "plain":
        return [], None
    if name == "auth":
        return auth, ClientSecurity(token=TOKEN)
    if name == "tls":
        return tls, ClientSecurity(tls_ca=f["ca"])
    mtls = [*tls, "--tls-client-ca", str(f["ca"]), *auth]
    return mtls, ClientSecurity(f["ca"], f["client_cert"], f["client_key"], token=TOKEN)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.micro:
        base, full = micro(args.work, args.calls)
        print(
            f"auth interceptor: {full - base:.2f} us per call "
            f"({full:.2f} with the continuation, {base:.2f} without)"
        )
        return 0
    registry = fresh_registry(
        args.work, args.results, [("tiny", "tiny", "[batching]\nmax_batch_size = 64\n")]
    )
    files = _files(args.work)
    runs: dict[str, list[Measured]] = {side: [] for side in SIDES}
    with ExitStack() as stack:
        gateways: dict[str, tuple[Gateway, ClientSecurity | None]] = {}
        for side in SIDES:
            flags, security = _side(side, files)
            log = args.work / f"gateway-{side.replace('+', '-')}.log"
            gateway = start_gateway(stack, registry, log, "--no-sampling", "--poll-interval", "0", *flags)
            gateways[side] = (gateway, security)
        for round_, order in ((1, SIDES), (2, tuple(reversed(SIDES)))):
            for side in order:
                gateway, security = gateways[side]
                config: dict[str, Any] = {
                    "target": gateway.target,
                    "model": "tiny",
                    "levels": (float(args.concurrency),),
                    "processes": args.processes,
                    "duration_s": args.duration,
                    "warmup_s": 1.0,
                    "security": security,
                    "input_source": "random",
                }
                label = f"auth-{side.replace('+', '-')}-r{round_}"
                runs[side].append(measure(label, args.results, **config))
    print(table(runs))
    return 0


def table(runs: dict[str, list[Measured]]) -> str:
    """The Markdown table of the measured sides."""
    base = sum(float(m.report["throughput_rps"]) for m in runs["plain"])
    lines = [
        "| gateway | req/s (2 rounds, summed) | p50 ms | p99 ms | cost vs plaintext | errors |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for side, measured_runs in runs.items():
        rps = sum(float(m.report["throughput_rps"]) for m in measured_runs)
        p50 = [m.lat("p50") for m in measured_runs]
        p99 = [m.lat("p99") for m in measured_runs]
        share = ratio(rps, base)
        cost = "-" if side == "plain" or share is None else f"{(1 - share) * 100:+.1f} %"
        errors = {k: v for m in measured_runs for k, v in m.report["errors"].items()}
        lines.append(f"| {side} | {rps:,.0f} | {_mean(p50)} | {_mean(p99)} | {cost} | {errors or 'none'} |")
    lines.append(f"\nGoal: the auth check costs at most {GOAL_AUTH_COST:.0%} of plaintext throughput.")
    return "\n".join(lines)


def _mean(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{sum(known) / len(known):.2f}" if known else "-"


if __name__ == "__main__":
    sys.exit(main())
