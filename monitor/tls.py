"""TLS of the monitor's separate ingest address, for a monitor that takes samples from other pods.

Contracts:

* :class:`IngestTls` owns one server ``ssl.SSLContext`` (TLS 1.2 or later) loaded from a PEM certificate
  chain and its key. A bad pair at start raises :class:`~monitor.errors.ConfigError` naming the files.
* :meth:`IngestTls.refresh` follows rotation (cert-manager rewriting a mounted Secret): it stats both files
  and, when one changed, loads the new pair into the **same** context, so every later handshake presents
  the new certificate and open connections keep their session. A half-written or mismatched pair on disk
  is skipped (logged once per change) and the previous one stays in use. :meth:`follow` calls it every
  ``interval`` seconds on the event loop (where the ingest site's handshakes run) until cancelled.
* Only ingest is served over TLS; reads and ``/metrics`` on the main port stay as they are (the kubelet
  and Prometheus reach them over the pod network, behind the NetworkPolicy and ``--read-token-file``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from monitor.errors import ConfigError
from registry.fsutil import FileStamp, file_stamp

__all__ = ["IngestTls"]

log = logging.getLogger(__name__)


class IngestTls:
    """The ingest site's TLS context and its rotation (see the module doc)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self.rotations = 0
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp = self._stat()
        try:
            self.context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"ingest TLS: cannot load {cert} and {key}: {exc}") from None

    def _stat(self) -> tuple[FileStamp | None, FileStamp | None]:
        return file_stamp(self.cert), file_stamp(self.key)

    def refresh(self) -> bool:
        """Load the pair again if a file changed; True when the new pair is in use."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            # a mismatched pair would leave the live context half-replaced: try it on a scratch one first
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert, self.key)
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("ingest TLS: keeping the previous certificate, the new pair is unusable: %s", exc)
            return False
        self.rotations += 1
        log.info("ingest TLS: certificate reloaded from %s", self.cert)
        return True

    async def follow(self, interval: float = 1.0) -> None:
        """:meth:`refresh` every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.refresh()
