"""TLS of the monitor's ingest address (monitor/tls.py): a bad pair at start is a ConfigError, a rotated
pair is loaded into the same context, a mismatched one is skipped and the previous pair stays in use."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.tls import IngestTls
from tests.certs import Pki, common_name


async def _served_name(tls: IngestTls, ca: Path) -> str:
    """The common name of the certificate a TLS handshake with ``tls.context`` presents."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=tls.context)
    port = server.sockets[0].getsockname()[1]
    try:
        client = ssl.create_default_context(cafile=str(ca))
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return common_name(ssl.DER_cert_to_PEM_cert(der).encode())
    finally:
        server.close()
        await server.wait_closed()


def test_rotation_loads_a_new_pair_and_skips_a_mismatched_one(tmp_path: Path) -> None:
    pki = Pki()
    ca = pki.write_ca(tmp_path)
    cert, key = pki.issue("first", server=True).write(tmp_path, "monitor")
    tls = IngestTls(cert, key)
    assert not tls.refresh()  # nothing changed
    assert asyncio.run(_served_name(tls, ca)) == "first"
    pki.issue("second", server=True).write(tmp_path, "monitor")
    assert tls.refresh()
    assert tls.rotations == 1
    assert asyncio.run(_served_name(tls, ca)) == "second"
    cert.write_bytes(pki.issue("third", server=True).cert)  # the key is not this certificate's
    assert not tls.refresh()
    assert asyncio.run(_served_name(tls, ca)) == "second"


def test_a_bad_pair_at_start_names_the_files(tmp_path: Path) -> None:
    cert = tmp_path / "monitor.crt"
    cert.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"monitor\.crt"):
        IngestTls(cert, tmp_path / "monitor.key")
