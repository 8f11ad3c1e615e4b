"""Signed versions: an Ed25519 signature over a version's ``manifest.json``, checked against trusted keys.

The manifest holds the SHA-256 of ``model.onnx`` and of every recorded artifact, so a valid signature over
its exact bytes vouches for the whole version: who published it, not only that the files match.

Contracts:
- ``infergate-registry keygen --out DIR`` writes ``signing.key`` (PKCS#8 PEM, mode 0600) and
  ``signing.pub`` (SubjectPublicKeyInfo PEM). Trusted keys are the ``*.pub``/``*.pem`` public keys of a
  directory (``--trusted-keys DIR``); a private key there is an error, not a trusted key.
- :func:`sign_version` writes ``manifest.sig``: JSON ``{"algorithm": "ed25519", "key_id", "signature"}``
  (``key_id`` = the first 16 hex digits of the SHA-256 of the raw public key; ``signature`` base64).
  ``publish --sign-key`` writes it before READY, so a signed version is never visible unsigned.
- :func:`signature_problems` returns why a version is not trusted (unsigned, malformed signature file,
  a key not among the trusted ones, a signature that does not verify), or an empty list.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from registry.errors import RegistryError

__all__ = [
    "SIGNATURE_FILE",
    "SigningError",
    "TrustedKeys",
    "generate_key",
    "key_id",
    "load_trusted_keys",
    "sign_version",
    "signature_problems",
]

SIGNATURE_FILE = "manifest.sig"
MANIFEST_FILE = "manifest.json"
ALGORITHM = "ed25519"


class SigningError(RegistryError):
    """A key that cannot be read or used."""


@dataclass(frozen=True)
class TrustedKeys:
    """Public keys by key id, and the directory they came from."""

    keys: dict[str, Ed25519PublicKey]
    source: Path


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(directory: Path) -> tuple[Path, Path]:
    """A new Ed25519 key pair: ``directory/signing.key`` (0600) and ``signing.pub``; never overwrites."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / "signing.key", directory / "signing.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise SigningError(f"{path} exists; not overwriting a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def _private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningError(f"{path}: not a readable unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 key")
    return key


def sign_version(version_dir: Path, private_key: Path) -> str:
    """Signs ``version_dir/manifest.json`` with the key at ``private_key``; returns the key id."""
    key = _private_key(private_key)
    manifest = (version_dir / MANIFEST_FILE).read_bytes()
    ident = key_id(key.public_key())
    record = {
        "algorithm": ALGORITHM,
        "key_id": ident,
        "signature": base64.b64encode(key.sign(manifest)).decode("ascii"),
    }
    (version_dir / SIGNATURE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return ident


def load_trusted_keys(directory: Path) -> TrustedKeys:
    """The public keys in ``directory``; SigningError when it holds none or an unreadable one."""
    keys: dict[str, Ed25519PublicKey] = {}
    try:
        paths = sorted(p for p in directory.iterdir() if p.suffix in (".pub", ".pem") and p.is_file())
    except OSError as exc:
        raise SigningError(f"trusted keys: {directory}: {exc}") from None
    for path in paths:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise SigningError(f"trusted keys: {path}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningError(f"trusted keys: {path}: not an Ed25519 public key")
        keys[key_id(key)] = key
    if not keys:
        raise SigningError(f"trusted keys: {directory} holds no *.pub or *.pem public key")
    return TrustedKeys(keys, directory)


def signature_problems(version_dir: Path, trusted: TrustedKeys) -> list[str]:
    """Why the version at ``version_dir`` is not signed by a trusted key (empty when it is)."""
    path = version_dir / SIGNATURE_FILE
    try:
        record = json.loads(path.read_text())
        algorithm, ident, encoded = record["algorithm"], record["key_id"], record["signature"]
        signature = base64.b64decode(encoded, validate=True)
    except FileNotFoundError:
        return [f"{version_dir}: unsigned (no {SIGNATURE_FILE}) and trusted keys are required"]
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        return [f"{path}: malformed signature file ({type(exc).__name__}: {exc})"]
    if algorithm != ALGORITHM:
        return [f"{path}: algorithm {algorithm!r} is not {ALGORITHM!r}"]
    key = trusted.keys.get(ident) if isinstance(ident, str) else None
    if key is None:
        return [f"{path}: signed by key {ident!r}, which is not among the trusted keys in {trusted.source}"]
    try:
        key.verify(signature, (version_dir / MANIFEST_FILE).read_bytes())
    except InvalidSignature:
        return [f"{path}: the signature does not match manifest.json (tampered or re-written after signing)"]
    except OSError as exc:
        return [f"{version_dir / MANIFEST_FILE}: {exc}"]
    return []
