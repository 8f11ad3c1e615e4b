"""Transport security of the gateway's gRPC port: TLS, mTLS, and certificate rotation without a restart.

Contracts:
- :func:`bind` adds the gRPC port: plaintext when no certificate is configured (exactly as before), else
  TLS with ``tls_cert``/``tls_key`` (PEM files; the certificate file may hold the whole chain). With
  ``tls_client_ca`` the port requires a client certificate signed by that CA (mTLS).
- The files are read again when they change, as cert-manager rotates a Secret: gRPC core asks
  :class:`RotatingCertificates` for the configuration on every new connection's handshake; it stats the
  files (a few microseconds, once per connection, never per call) and returns a new configuration only
  when one changed and the new key matches the new certificate. Until then, and when a half-written or
  mismatched pair is on disk, the previous certificates stay in use. Connections already open keep their
  session, so calls in flight are never dropped by a rotation.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from registry.fsutil import FileStamp, file_stamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CertificateFiles:
    """Where the server's certificate chain, its key and (for mTLS) the client CA live."""

    cert: Path
    key: Path
    client_ca: Path | None = None


Stamp = tuple[FileStamp | None, ...]


class RotatingCertificates:
    """The certificate configuration callback of ``grpc.dynamic_ssl_server_credentials``."""

    def __init__(self, files: CertificateFiles) -> None:
        self.files = files
        self.rotations = 0
        self._lock = threading.Lock()  # gRPC core may call from several handshake threads
        self._stamp = self._stat()
        self.initial = self._load()  # a bad pair at start is fatal

    def _paths(self) -> list[Path]:
        files = self.files
        return [files.cert, files.key] + ([files.client_ca] if files.client_ca is not None else [])

    def _stat(self) -> Stamp:
        return tuple(file_stamp(path) for path in self._paths())

    def _load(self) -> grpc.ServerCertificateConfiguration:
        files = self.files
        check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        check.load_cert_chain(files.cert, files.key)  # raises ssl.SSLError when the key does not match
        client_ca = files.client_ca.read_bytes() if files.client_ca is not None else None
        if client_ca is not None:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=client_ca.decode())
        return grpc.ssl_server_certificate_configuration(
            [(files.key.read_bytes(), files.cert.read_bytes())], root_certificates=client_ca
        )

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration when the files changed and load cleanly, else None (keep the current)."""
        stamp = self._stat()
        with self._lock:
            if stamp == self._stamp:
                return None
            try:
                config = self._load()
            except (OSError, ValueError, ssl.SSLError) as exc:
                log.warning("TLS files changed but do not load (%s); previous certificates stay in use", exc)
                return None
            self._stamp = stamp
            self.rotations += 1
        log.info("TLS certificates reloaded from %s", self.files.cert)
        return config


def server_credentials(files: CertificateFiles) -> tuple[grpc.ServerCredentials, RotatingCertificates]:
    """TLS (mTLS when ``files.client_ca``) server credentials that follow the files on disk."""
    rotating = RotatingCertificates(files)
    credentials = grpc.dynamic_ssl_server_credentials(
        rotating.initial,
        rotating,  # type: ignore[arg-type]  # the stubs omit that the fetcher may return None
        require_client_authentication=files.client_ca is not None,
    )
    return credentials, rotating


def bind(server: grpc.aio.Server, address: str, files: CertificateFiles | None) -> int:
    """Adds the gRPC port, plaintext or TLS; returns the bound port."""
    if files is None:
        return server.add_insecure_port(address)
    credentials, _ = server_credentials(files)
    return server.add_secure_port(address, credentials)
