"""Section ``auth`` (``python -m bench.auth``, or ``python -m bench auth`` once registered in
:data:`bench.sections.REGISTRY`): issue 15, what the auth check and TLS cost on the hot path.

Contracts:

* Fresh registry under ``--work`` with ``tiny`` (1 row, the cheapest inference, so the per-call cost of
  security is the largest share it can be). A throwaway CA (``tests/certs.py``, needs the ``test``
  extra's ``cryptography``) makes the server and client certificates; a token file grants ``infer``
  and ``metadata`` (the load generator asks for ModelMetadata first).
* Four gateway subprocesses (``--no-sampling --poll-interval 0``): plaintext, plaintext with
  ``--auth-tokens``, TLS, and mTLS with ``--auth-tokens``. Each is measured with the same closed-loop load
  (``--auth-concurrency`` from ``--auth-processes`` client processes), the client sending the token and
  certificates each needs, in two rounds, the second in reverse order, so the machine's drift hits every
  side. Throughput sums both rounds; a side's cost is ``1 - side / plaintext``. Goal: auth <= 3 %.
* The interceptor alone, in process: ``intercept_service`` on a ModelInfer call with a valid token against
  a continuation that returns at once, minus the continuation alone (best of 5 rounds of
  ``--auth-calls``), in microseconds per call (``--micro`` runs only this). No server, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

from bench.kit import Gateway, Measured, fresh_registry, measure, measured, ratio, start_gateway
from bench.markdown import details, fmt, goal_table, header
from bench.sections import Goal, Results, Section
from gateway.grants import hash_token
from loadtests.secure import ClientSecurity

__all__ = ["SECTION", "main", "micro"]

TOKEN = "bench-token-5d0c7a1e"
SIDES = ("plain", "auth", "tls", "mtls+auth")
GOAL_AUTH_COST = 0.03
TITLE = "Security: auth and TLS on the hot path (issue 15)"


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--auth-concurrency", type=int, default=16, help="auth: closed-loop concurrency (16)")
    p.add_argument("--auth-processes", type=int, default=1, help="auth: client processes (default 1)")
    p.add_argument("--auth-calls", type=int, default=100_000, help="auth: interceptor calls per round")


def _files(work: Path) -> dict[str, Path]:
    from tests.certs import Pki  # the test extra: cryptography's x509 builder

    pki = Pki("infergate bench CA")
    ca = pki.write_ca(work / "certs")
    cert, key = pki.issue("gateway", server=True).write(work / "certs", "server")
    client_cert, client_key = pki.issue("bench-client").write(work / "certs", "client")
    return {
        "ca": ca,
        "cert": cert,
        "key": key,
        "client_cert": client_cert,
        "client_key": client_key,
        "tokens": _token_file(work),
    }


def _token_file(work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    tokens = work / "tokens.toml"
    tokens.write_text(
        f'[[token]]\nname = "bench"\nsha256 = "{hash_token(TOKEN)}"\nscopes = ["infer", "metadata"]\n'
    )
    return tokens


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


class _Details(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


def micro(work: Path, calls: int) -> tuple[float, float]:
    """(continuation alone, interceptor + continuation) in microseconds per call, best of 5 rounds."""
    from gateway.auth import AuthInterceptor
    from gateway.grants import GrantStore

    interceptor = AuthInterceptor(GrantStore(_token_file(work)))
    details_: Any = _Details(  # what grpc.aio hands an interceptor: the method and the metadata
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
                await continuation(details_)
            base.append(time.perf_counter() - started)
            started = time.perf_counter()
            for _ in range(calls):
                if await interceptor.intercept_service(continuation, details_) is not handler:
                    raise AssertionError("the interceptor refused a valid token")
            full.append(time.perf_counter() - started)
        return min(base) / calls * 1e6, min(full) / calls * 1e6

    return asyncio.run(rounds())


def run(args: argparse.Namespace) -> Results:
    registry = fresh_registry(
        args.work, args.results, [("tiny", "tiny", "[batching]\nmax_batch_size = 64\n")]
    )
    base_us, full_us = micro(args.work, args.auth_calls)
    files = _files(args.work)
    runs: dict[str, Measured] = {}
    commands: dict[str, str] = {}
    with ExitStack() as stack:
        gateways: dict[str, tuple[Gateway, ClientSecurity | None]] = {}
        for side in SIDES:
            flags, security = _side(side, files)
            log = args.work / f"gateway-{side.replace('+', '-')}.log"
            gateway = start_gateway(stack, registry, log, "--no-sampling", "--poll-interval", "0", *flags)
            gateways[side] = (gateway, security)
            commands[side] = gateway.command
        for round_, order in ((1, SIDES), (2, tuple(reversed(SIDES)))):
            for side in order:
                gateway, security = gateways[side]
                label = f"{side}-r{round_}"
                runs[label] = measure(
                    label,
                    args.results,
                    target=gateway.target,
                    metrics_url=gateway.metrics_url,
                    model="tiny",
                    levels=(float(args.auth_concurrency),),
                    processes=args.auth_processes,
                    duration_s=args.duration,
                    warmup_s=args.warmup,
                    security=security,
                    input_source="random",
                )
    return {
        "runs": {k: m.to_json() for k, m in runs.items()},
        "micro": {"continuation_us": base_us, "with_interceptor_us": full_us},
        "commands": commands,
    }


def _rps(results: Results, side: str) -> float:
    return sum(float(measured(results["runs"][f"{side}-r{r}"]).report["throughput_rps"]) for r in (1, 2))


def _cost(results: Results, side: str) -> float | None:
    share = ratio(_rps(results, side), _rps(results, "plain"))
    return None if share is None else 1.0 - share


def goals(results: Results) -> list[Goal]:
    m = results["micro"]
    plain = fmt(_rps(results, "plain"), 0)
    figures = [
        Goal.at_most(
            "throughput cost of --auth-tokens, 1 - auth ÷ plaintext (req/s, sum of 2 rounds)",
            f"1 - {fmt(_rps(results, 'auth'), 0)} ÷ {plain}",
            _cost(results, "auth"),
            GOAL_AUTH_COST,
        ),
    ]
    for side in ("tls", "mtls+auth"):
        figures.append(
            Goal.report(
                f"throughput cost of {side}, 1 - {side} ÷ plaintext (req/s, sum of 2 rounds)",
                f"1 - {fmt(_rps(results, side), 0)} ÷ {plain}",
                _cost(results, side),
            )
        )
    figures.append(
        Goal.report(
            "auth interceptor alone (µs per call, in process)",
            f"{fmt(m['with_interceptor_us'])} - {fmt(m['continuation_us'])}",
            m["with_interceptor_us"] - m["continuation_us"],
        )
    )
    return figures


def render(results: Results) -> str:
    lines = header(results["meta"], TITLE) if "meta" in results else [f"## {TITLE}", ""]
    lines += [
        "Gateways (same registry, model `tiny`, 1 row per request), each loaded by `infergate-load` with the "
        "credentials it needs:",
        "",
        *(f"- {side}: `{cmd}`" for side, cmd in results["commands"].items()),
        "",
    ]
    lines += goal_table(goals(results))
    lines += ["", "### Runs", "", *details(measured(r) for r in results["runs"].values())]
    return "\n".join(lines)


SECTION = Section("auth", TITLE, run, render, goals, _add_arguments)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.auth", description=TITLE)
    p.add_argument("--work", type=Path, default=Path("bench-out/auth"), help="scratch folder")
    p.add_argument("--results", type=Path, default=Path("bench-out/results/auth"), help="JSON results")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run (default 1)")
    p.add_argument("--micro", action="store_true", help="only the interceptor's cost per call")
    _add_arguments(p)
    args = p.parse_args(argv)
    if args.micro:
        base, full = micro(args.work, args.auth_calls)
        print(
            f"auth interceptor: {full - base:.2f} µs per call "
            f"({full:.2f} with the continuation, {base:.2f} without)"
        )
        return 0
    print(render(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
