"""Security options of the gateway process: their command-line group, their validation, and what the
server builds from them (the auth interceptor, the certificate files, the monitor credential).

Contracts:
- Every option is off by default; with all of them off the gateway serves plaintext with no interceptor,
  exactly as before.
- ``tls_cert`` and ``tls_key`` go together; ``tls_client_ca`` (mTLS) needs them. ``auth_reflection`` other
  than ``open`` needs ``auth_tokens``. A violation raises ValueError naming the option.
- The monitor token file holds the shared ingest token (one line; surrounding whitespace is ignored). The
  sample shipper (gateway/shipper.py) reads it at each (re)connect, so a rotated Secret is picked up then.
"""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from gateway.auth import REFLECTION_MODES, AuthInterceptor
from gateway.control import MODES
from gateway.grants import GrantStore, parse_grants
from gateway.shipper import monitor_ssl
from gateway.tls import CertificateFiles, RotatingCertificates
from registry.errors import RegistryError
from registry.signing import load_trusted_keys

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


def validate(config: GatewayConfig) -> None:
    """Raises ValueError when the security options of ``config`` do not fit together."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ValueError("tls_cert and tls_key must be given together")
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise ValueError("tls_client_ca (mTLS) needs tls_cert and tls_key")
    if config.auth_reflection not in REFLECTION_MODES:
        raise ValueError(
            f"auth_reflection must be one of {', '.join(REFLECTION_MODES)}, got {config.auth_reflection!r}"
        )
    if config.model_control not in MODES:
        raise ValueError(f"model_control must be one of {', '.join(MODES)}, got {config.model_control!r}")
    if config.auth_reload_seconds < 0:
        raise ValueError(f"auth_reload_seconds must be >= 0, got {config.auth_reload_seconds}")
    if config.auth_reflection != "open" and config.auth_tokens is None:
        raise ValueError("auth_reflection other than 'open' needs auth_tokens")


def interceptors(config: GatewayConfig, registry: CollectorRegistry | None = None) -> list[Any] | None:
    """The server interceptors: the auth check when a token file is configured, else None (no chain).
    Raises :class:`gateway.grants.GrantFileError` or OSError when the token file does not load."""
    if config.auth_tokens is None:
        return None
    store = GrantStore(config.auth_tokens, check_interval=config.auth_reload_seconds)
    return [AuthInterceptor(store, reflection=config.auth_reflection, registry=registry)]


def certificate_files(config: GatewayConfig) -> CertificateFiles | None:
    """The TLS files to serve with, or None for plaintext."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    return CertificateFiles(config.tls_cert, config.tls_key, config.tls_client_ca)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``security`` argument group of ``infergate-gateway``."""
    group = parser.add_argument_group("security (README: Security)")
    group.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain: serve TLS")
    group.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    group.add_argument(
        "--tls-client-ca",
        type=Path,
        default=None,
        help="PEM CA bundle: require and verify client certificates (mTLS)",
    )
    group.add_argument(
        "--auth-tokens",
        type=Path,
        default=None,
        help="TOML file of sha256-hashed bearer tokens and their scopes (infer, metadata, repository); "
        "reloaded on change",
    )
    group.add_argument(
        "--auth-reflection",
        choices=REFLECTION_MODES,
        default="open",
        help="server reflection under --auth-tokens: open, scoped (needs 'metadata') or off (default open)",
    )
    group.add_argument(
        "--auth-reload-seconds",
        type=float,
        default=1.0,
        help="how often the token file is checked for changes (default 1)",
    )
    group.add_argument(
        "--model-control",
        choices=MODES,
        default="poll",
        help="poll: the registry watcher decides what serves and RepositoryModelLoad/Unload are refused; "
        "explicit: only those RPCs do (no watcher); none: load at start only (default poll)",
    )
    group.add_argument(
        "--trusted-keys",
        type=Path,
        default=None,
        help="directory of Ed25519 public keys: refuse to load a version not signed by one of them",
    )
    group.add_argument(
        "--monitor-token-file",
        type=Path,
        default=None,
        help="file holding the monitor's ingest token, sent by the sample shipper",
    )
    group.add_argument(
        "--monitor-tls-ca",
        type=Path,
        default=None,
        help="CA bundle (PEM) that verifies a wss:// --monitor-url's certificate (default: the system's)",
    )


def config_options(args: argparse.Namespace) -> dict[str, Any]:
    """The GatewayConfig keyword arguments of the security group. Reads the files they name once, so a
    bad token file, certificate pair or key directory stops the command line before any model loads:
    ValueError naming the file."""
    try:
        if args.auth_tokens is not None:
            parse_grants(args.auth_tokens.read_text(), str(args.auth_tokens))
        if args.tls_cert is not None and args.tls_key is not None:
            RotatingCertificates(CertificateFiles(args.tls_cert, args.tls_key, args.tls_client_ca))
        if args.trusted_keys is not None:
            load_trusted_keys(args.trusted_keys)
        if args.monitor_token_file is not None and not args.monitor_token_file.read_text().strip():
            raise ValueError(f"{args.monitor_token_file} is empty")
        if args.monitor_tls_ca is not None:
            monitor_ssl(args.monitor_tls_ca)
    except (OSError, RegistryError, ssl.SSLError) as exc:
        raise ValueError(str(exc)) from exc
    return {
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_client_ca": args.tls_client_ca,
        "auth_tokens": args.auth_tokens,
        "auth_reflection": args.auth_reflection,
        "auth_reload_seconds": args.auth_reload_seconds,
        "monitor_token_file": args.monitor_token_file,
        "monitor_tls_ca": args.monitor_tls_ca,
        "model_control": args.model_control,
        "trusted_keys": args.trusted_keys,
    }
