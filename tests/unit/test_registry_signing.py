"""Signed versions: keygen, publish --sign-key, verify against trusted keys (library and CLI), and every
way a version can fail to be trusted: unsigned, another key, a tampered manifest, a malformed file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from registry.cli import main
from registry.layout import VersionInfo
from registry.manifest import load_manifest
from registry.publish import publish
from registry.signing import SIGNATURE_FILE, SigningError, load_trusted_keys, signature_problems
from registry.verify import verify_version
from tests.unit.test_registry_verify import adder


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """(signing key, trusted-keys directory holding its public key)."""
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "publisher.pub").write_bytes((tmp_path / "keys" / "signing.pub").read_bytes())
    return tmp_path / "keys" / "signing.key", trusted


def _publish(tmp_path: Path, key: Path | None) -> VersionInfo:
    return publish(tmp_path / "registry", "m", adder(tmp_path / "m.onnx", 1.0), sign_key=key)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path: Path) -> None:
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    assert os.stat(tmp_path / "k" / "signing.key").st_mode & 0o077 == 0
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 2


def test_a_signed_version_verifies(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, trusted = keys
    info = _publish(tmp_path, key)
    assert (info.path / SIGNATURE_FILE).is_file()
    assert verify_version(info, full=True, trusted=load_trusted_keys(trusted)) == []
    assert (
        main(["verify", "--registry", str(tmp_path / "registry"), "m", "--trusted-keys", str(trusted)]) == 0
    )


def test_an_unsigned_version_is_refused_only_when_keys_are_required(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    info = _publish(tmp_path, None)
    assert verify_version(info, full=True) == []
    [problem] = verify_version(info, trusted=load_trusted_keys(keys[1]))
    assert "unsigned" in problem
    assert (
        main(["verify", "--registry", str(tmp_path / "registry"), "m", "--trusted-keys", str(keys[1])]) == 1
    )
    assert "unsigned" in capsys.readouterr().out


def test_a_key_that_is_not_trusted(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    assert main(["keygen", "--out", str(tmp_path / "other")]) == 0
    info = _publish(tmp_path, tmp_path / "other" / "signing.key")
    [problem] = signature_problems(info.path, load_trusted_keys(keys[1]))
    assert "not among the trusted keys" in problem


def test_a_manifest_rewritten_after_signing_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, trusted = keys
    info = _publish(tmp_path, key)
    # the attack a signature exists for: new files with a manifest whose hashes match them
    manifest = json.loads(info.manifest_path.read_text())
    manifest["notes"] = "rewritten"
    info.manifest_path.write_text(json.dumps(manifest))
    assert load_manifest(info.manifest_path).notes == "rewritten"
    [problem] = verify_version(info, trusted=load_trusted_keys(trusted))
    assert "does not match manifest.json" in problem


@pytest.mark.parametrize(
    "content",
    ["not json", '{"algorithm": "ed25519"}', '{"algorithm": "rsa", "key_id": "x", "signature": ""}'],
)
def test_malformed_signature_files(tmp_path: Path, keys: tuple[Path, Path], content: str) -> None:
    info = _publish(tmp_path, keys[0])
    (info.path / SIGNATURE_FILE).write_text(content)
    [problem] = signature_problems(info.path, load_trusted_keys(keys[1]))
    assert SIGNATURE_FILE in problem


def test_trusted_keys_directory_must_hold_public_keys(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SigningError, match="holds no"):
        load_trusted_keys(empty)
    (empty / "oops.pem").write_bytes(keys[0].read_bytes())  # a private key is no trusted key
    with pytest.raises(SigningError, match="not a PEM public key"):
        load_trusted_keys(empty)
