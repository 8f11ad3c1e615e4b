"""``infergate-gateway`` / ``python -m gateway``: the command line of the gateway process."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from gateway import security
from gateway.config import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MONITOR_URL, GatewayConfig
from gateway.logs import configure_logging
from gateway.server import check_providers, serve
from gateway.workers import run_workers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="infergate-gateway", description="KServe V2 gRPC gateway for ONNX models."
    )
    parser.add_argument("--registry", type=Path, required=True, help="registry directory to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="gRPC port (default 8001; 0 = any free)")
    parser.add_argument(
        "--metrics-port", type=int, default=8002, help="Prometheus /metrics port (default 8002)"
    )
    parser.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=DEFAULT_MAX_MESSAGE_BYTES,
        help="largest gRPC message accepted or sent; larger requests get RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--grace-seconds", type=float, default=30.0, help="drain time on SIGTERM (default 30)"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=2.0, help="seconds between registry scans (default 2; 0 = off)"
    )
    parser.add_argument(
        "--monitor-url",
        default=DEFAULT_MONITOR_URL,
        help=f"monitor WebSocket for samples (default {DEFAULT_MONITOR_URL})",
    )
    parser.add_argument(
        "--sample-rate", type=float, default=None, help="fraction of requests sampled, for every model (0..1)"
    )
    parser.add_argument("--no-sampling", action="store_true", help="do not stream samples to the monitor")
    parser.add_argument("--device", default=None, help="cpu or cuda:N: overrides every model's providers")
    parser.add_argument(
        "--require-gpu",
        action="store_true",
        help="fail a load that would run on the CPU (old version keeps serving)",
    )
    parser.add_argument(
        "--check-providers",
        action="store_true",
        help="print what onnxruntime offers and which provider each model gets, then exit",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gateway processes sharing the port via SO_REUSEPORT (default 1)",
    )
    overload = parser.add_argument_group("overload protection (README: Overload)")
    overload.add_argument(
        "--max-concurrency",
        type=int,
        default=512,
        help="ceiling of the adaptive limit on inferences in flight (default 512; 0 = no limit)",
    )
    overload.add_argument(
        "--no-adaptive-concurrency",
        action="store_true",
        help="use --max-concurrency as a fixed limit instead of adapting it to measured latency",
    )
    overload.add_argument(
        "--max-concurrent-streams",
        type=int,
        default=0,
        help="HTTP/2 streams per client connection; excess calls wait in the client (default 0: gRPC's)",
    )
    overload.add_argument(
        "--max-pending-calls",
        type=int,
        default=64,
        help="calls gRPC core holds before Python takes them; past it gRPC core refuses calls at once "
        "(CANCELLED) without running Python (default 64; 0 = gRPC's own, 1000)",
    )
    overload.add_argument(
        "--accept-ahead",
        type=int,
        default=8,
        help="extra requests for the next ModelInfer call kept with gRPC core, so one event-loop turn takes "
        "that many more waiting calls (default 8; 0 = grpc.aio's one per turn)",
    )
    overload.add_argument(
        "--poller-scheduling",
        choices=("auto", "batch", "normal"),
        default="auto",
        help="Linux scheduling of grpc.aio's completion-queue poller and gRPC core's transport threads: "
        "batch (SCHED_BATCH, their wake-ups do not preempt the event loop, which yields the core every "
        "200 us while busy), normal, or auto (default: batch while the process may use one core only; "
        "README: The poller and transport threads)",
    )
    rollout = parser.add_argument_group("staged rollouts (docs/registry.md: Safe rollout)")
    rollout.add_argument(
        "--rollout-webhook",
        default=None,
        metavar="URL",
        help="POST rollout promotion/rollback events here (the monitor's webhook format)",
    )
    rollout.add_argument(
        "--rollout-webhook-secret-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="sign each rollout event with HMAC-SHA256 keyed by this file (X-Infergate-Signature-256)",
    )
    rollout.add_argument(
        "--monitor-read-token-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="bearer token for the monitor's /v1/drift (its --read-token-file), read by the drift gate",
    )
    security.add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument(
        "--log-format", choices=("json", "text"), default="json", help="log lines (default json)"
    )
    parser.add_argument(
        "--access-log-rate",
        type=float,
        default=0.01,
        help="fraction of successful requests logged (errors always are; default 0.01)",
    )
    parser.add_argument(
        "--access-log-shed-rate",
        type=float,
        default=10.0,
        help="access-log lines per second for overload refusals (RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED); "
        "the rest are counted in the next line's 'suppressed' (default 10; 0 = none)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if not args.registry.is_dir():
        print(f"infergate-gateway: registry {args.registry} is not a directory", file=sys.stderr)
        return 2
    try:
        config = GatewayConfig(
            registry=args.registry,
            host=args.host,
            port=args.port,
            metrics_port=None if args.no_metrics else args.metrics_port,
            max_message_bytes=args.max_message_bytes,
            grace_seconds=args.grace_seconds,
            poll_interval=args.poll_interval,
            monitor_url=args.monitor_url,
            sampling=not args.no_sampling,
            sample_rate=args.sample_rate,
            access_log_rate=args.access_log_rate,
            access_log_shed_rate=args.access_log_shed_rate,
            device=args.device,
            require_gpu=args.require_gpu,
            **security.config_options(args),
            max_concurrency=args.max_concurrency,
            adaptive_concurrency=not args.no_adaptive_concurrency,
            max_concurrent_streams=args.max_concurrent_streams,
            max_pending_calls=args.max_pending_calls,
            poller_scheduling=args.poller_scheduling,
            accept_ahead=args.accept_ahead,
            rollout_webhook=args.rollout_webhook,
            rollout_webhook_secret_file=args.rollout_webhook_secret_file,
            monitor_read_token_file=args.monitor_read_token_file,
        )
    except ValueError as exc:
        print(f"infergate-gateway: {exc}", file=sys.stderr)
        return 2
    if args.check_providers:
        return asyncio.run(check_providers(config))
    if args.workers < 1:
        print("infergate-gateway: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        return run_workers(config, args.workers, log_level=args.log_level, log_format=args.log_format)
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
