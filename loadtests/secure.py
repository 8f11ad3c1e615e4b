"""How ``infergate-load`` reaches a secured gateway: TLS (``--tls-ca``), a client certificate for mTLS
(``--tls-cert``/``--tls-key``) and a bearer token (``--token`` or ``--token-file``).

Contracts:
- :class:`ClientSecurity` is plain data (it crosses to the client processes); :func:`open_channel` turns
  it into a channel: plaintext without a CA, else TLS verified against the CA (``server_name`` overrides
  the name checked). With a token, every call carries ``authorization: Bearer <token>`` (a client
  interceptor, so the hot path gains one metadata pair and nothing when no token is set).
- :meth:`ClientSecurity.describe` is what reports show: which options were on, never the token.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

__all__ = ["ClientSecurity", "add_arguments", "from_args", "open_channel"]


@dataclass(frozen=True)
class ClientSecurity:
    """TLS files and the bearer token of a load run (each optional)."""

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    server_name: str | None = None
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_cert is not None and self.tls_ca is None:
            raise ValueError("--tls-cert needs --tls-ca")

    def describe(self) -> dict[str, Any]:
        """JSON-ready, without the token."""
        return {
            "tls": self.tls_ca is not None,
            "client_certificate": self.tls_cert is not None,
            "token": self.token is not None,
        }


class _BearerInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, token: str) -> None:
        self._pair = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self._pair]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def open_channel(
    target: str, options: list[tuple[str, Any]], security: ClientSecurity | None = None
) -> grpc.Channel:
    """A channel to ``target``, secured as ``security`` says (plaintext when None)."""
    if security is None or security.tls_ca is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        credentials = grpc.ssl_channel_credentials(
            security.tls_ca.read_bytes(),
            security.tls_key.read_bytes() if security.tls_key is not None else None,
            security.tls_cert.read_bytes() if security.tls_cert is not None else None,
        )
        if security.server_name:
            options = [*options, ("grpc.ssl_target_name_override", security.server_name)]
        channel = grpc.secure_channel(target, credentials, options=options)
    if security is not None and security.token:
        return grpc.intercept_channel(channel, _BearerInterceptor(security.token))
    return channel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``security`` argument group of ``infergate-load``."""
    group = parser.add_argument_group("security (README: Security)")
    group.add_argument("--tls-ca", type=Path, default=None, help="PEM CA: speak TLS, verify the server")
    group.add_argument("--tls-cert", type=Path, default=None, help="PEM client certificate (mTLS)")
    group.add_argument("--tls-key", type=Path, default=None, help="PEM key of --tls-cert")
    group.add_argument("--tls-server-name", default=None, help="name the server certificate must carry")
    group.add_argument("--token", default=None, help="bearer token (visible in ps: prefer --token-file)")
    group.add_argument("--token-file", type=Path, default=None, help="file holding the bearer token")


def from_args(args: argparse.Namespace) -> ClientSecurity | None:
    """The run's security, or None when no option was given. Raises ValueError or OSError."""
    token = args.token
    if args.token_file is not None:
        if token is not None:
            raise ValueError("give --token or --token-file, not both")
        token = args.token_file.read_text().strip()
        if not token:
            raise ValueError(f"--token-file {args.token_file} is empty")
    if args.tls_ca is None and args.tls_cert is None and args.tls_key is None and token is None:
        return None
    return ClientSecurity(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name, token)
