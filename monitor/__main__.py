"""``infergate-monitor`` (also ``python -m monitor``): run the drift sidecar (DESIGN.md §8).

This module owns the command line: it parses the options into a :class:`~monitor.config.MonitorConfig`,
serves :func:`~monitor.app.create_app` on the given host and port until SIGINT or SIGTERM, and prints
one line ``infergate-monitor listening on http://HOST:PORT`` once it accepts connections (with
``--port 0`` that line tells the port chosen). Exit status 2 for a bad option or registry.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from monitor.config import MonitorConfig, WebhookSettings
from monitor.errors import ConfigError
from monitor.tls import IngestTls

__all__ = ["SWITCH_INTERVAL_S", "build_parser", "main"]

SWITCH_INTERVAL_S = 0.0005


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infergate-monitor",
        description="Drift monitor sidecar: takes sampled inferences, compares them with each model "
        "version's reference (PSI, KS) and serves /v1/drift, /metrics and the history.",
    )
    parser.add_argument("--registry", type=Path, required=True, help="registry directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8090, help="HTTP and WebSocket port (default 8090; 0: any)"
    )
    parser.add_argument(
        "--db", default="monitor.db", help="SQLite history file (default ./monitor.db; ':memory:' keeps none)"
    )
    parser.add_argument("--alert-webhook", default=None, metavar="URL", help="POST drift events here")
    security = parser.add_argument_group("security (README: Security)")
    security.add_argument(
        "--monitor-token-file",
        type=Path,
        default=None,
        help="file holding the ingest token the gateway sends (POST /v1/samples, /v1/samples/stream)",
    )
    security.add_argument(
        "--read-token-file",
        type=Path,
        default=None,
        help="file holding the token /v1/drift and its history need (default: reads are open)",
    )
    security.add_argument(
        "--webhook-secret-file",
        type=Path,
        default=None,
        help="key for the X-Infergate-Signature-256 HMAC header on webhook POSTs",
    )
    security.add_argument(
        "--ingest-host",
        default=None,
        help="serve ingest only on this address (e.g. 127.0.0.1 in a pod), apart from reads and /metrics",
    )
    security.add_argument(
        "--ingest-port", type=int, default=8091, help="port of --ingest-host (default 8091; 0: any)"
    )
    security.add_argument(
        "--ingest-tls-cert",
        type=Path,
        default=None,
        help="serve --ingest-host over TLS with this PEM certificate chain (reloaded when it changes)",
    )
    security.add_argument("--ingest-tls-key", type=Path, default=None, help="the key of --ingest-tls-cert")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if not args.registry.is_dir():
            raise ConfigError(f"registry: {args.registry} is not a directory")
        config = MonitorConfig(
            registry=args.registry,
            host=args.host,
            port=args.port,
            db=None if args.db == ":memory:" else Path(args.db),
            webhook=WebhookSettings(url=args.alert_webhook, secret_file=args.webhook_secret_file),
            ingest_token_file=args.monitor_token_file,
            read_token_file=args.read_token_file,
            ingest_host=args.ingest_host,
            ingest_port=args.ingest_port,
            ingest_tls_cert=args.ingest_tls_cert,
            ingest_tls_key=args.ingest_tls_key,
        )
        tls = None
        if config.ingest_tls_cert is not None and config.ingest_tls_key is not None:
            tls = IngestTls(config.ingest_tls_cert, config.ingest_tls_key)
    except ConfigError as exc:
        print(f"infergate-monitor: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve(config, tls))
    return 0


async def _serve(config: MonitorConfig, tls: IngestTls | None = None) -> None:
    from monitor.app import create_app  # here, so that --help never waits for numba

    # Window evaluations run in a worker thread that needs the GIL between its (GIL-free) kernels; under
    # heavy ingest the default 5 ms switch interval would make each hand-over cost up to 5 ms.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    runner = web.AppRunner(create_app(config), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        ingest = None
        if config.ingest_host is not None:
            from monitor.app import serve_ingest

            context = None if tls is None else tls.context
            ingest = await serve_ingest(runner, config.ingest_host, config.ingest_port, context)
        print(f"infergate-monitor listening on http://{host}:{port}", flush=True)
        if ingest is not None:
            scheme = "http" if tls is None else "https"
            print(f"infergate-monitor ingest on {scheme}://{config.ingest_host}:{ingest}", flush=True)
        rotation = None if tls is None else asyncio.create_task(tls.follow(), name="ingest-tls-rotation")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        if rotation is not None:
            rotation.cancel()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
