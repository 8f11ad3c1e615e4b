"""Grants: who may call what. The token file (``--auth-tokens``), its scopes, and its reload on change.

Contracts:
- Scopes are ``infer`` (ModelInfer, ModelStreamInfer), ``metadata`` (server/model metadata, config, ready,
  statistics, repository index) and ``repository`` (RepositoryModelLoad/Unload). :data:`METHOD_SCOPES`
  maps every GRPCInferenceService method to the one it needs.
- The token file is TOML. It never holds a token, only the hex sha256 of one::

      [[token]]
      name = "batch-jobs"                 # shown in logs and errors instead of the token
      sha256 = "9f86d081884c7d65..."      # sha256 of the bearer token, 64 hex digits
      scopes = ["infer", "metadata"]

      [[certificate]]                     # under mTLS: a verified client certificate's identity
      name = "ops"
      subject = "ops-console"             # its subject common name, or
      # san = "spiffe://cluster/ns/ops"   # one of its subject alternative names
      scopes = ["metadata", "repository"]

  An unknown key, an unknown scope or a malformed hash fails the load with a message naming it.
- :meth:`GrantStore.lookup` is O(1): one sha256 of the presented token, one dict lookup of the digest,
  then a constant-time comparison (:func:`hmac.compare_digest`) of the stored digest with the computed
  one. Lookup time depends only on the digest of what the caller sent, never on a stored token.
- :meth:`GrantStore.maybe_reload` stats the file at most once per ``check_interval`` seconds (monotonic
  clock) and reloads it when its size, mtime or inode changed (a Kubernetes Secret update swaps a
  symlink). A file that fails to load keeps the previous grants and logs why. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from registry.fsutil import FileStamp, file_stamp

log = logging.getLogger(__name__)

SCOPES = frozenset({"infer", "metadata", "repository"})

_SERVICE = "/inference.GRPCInferenceService/"
METHOD_SCOPES: dict[str, str] = {
    _SERVICE + "ModelInfer": "infer",
    _SERVICE + "ModelStreamInfer": "infer",
    _SERVICE + "ServerLive": "metadata",
    _SERVICE + "ServerReady": "metadata",
    _SERVICE + "ServerMetadata": "metadata",
    _SERVICE + "ModelReady": "metadata",
    _SERVICE + "ModelMetadata": "metadata",
    _SERVICE + "ModelConfig": "metadata",
    _SERVICE + "ModelStatistics": "metadata",
    _SERVICE + "RepositoryIndex": "metadata",
    _SERVICE + "RepositoryModelLoad": "repository",
    _SERVICE + "RepositoryModelUnload": "repository",
}

_TOKEN_KEYS = frozenset({"name", "sha256", "scopes"})
_CERT_KEYS = frozenset({"name", "subject", "san", "scopes"})


class GrantFileError(ValueError):
    """The token file is unreadable or invalid; the message names the entry and key."""


@dataclass(frozen=True)
class Grant:
    """A named credential and the scopes it holds."""

    name: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class Grants:
    """One parsed token file: token digests and certificate identities, each to its grant."""

    tokens: dict[bytes, tuple[bytes, Grant]]
    subjects: dict[str, Grant]
    sans: dict[str, Grant]


def hash_token(token: str) -> str:
    """The hex sha256 a token file stores for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_grants(text: str, origin: str = "token file") -> Grants:
    """Parses and validates a token file; raises :class:`GrantFileError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GrantFileError(f"{origin}: not valid TOML: {exc}") from None
    unknown = set(data) - {"token", "certificate"}
    if unknown:
        raise GrantFileError(f"{origin}: unknown key {sorted(unknown)[0]!r} (expected token, certificate)")
    tokens: dict[bytes, tuple[bytes, Grant]] = {}
    subjects: dict[str, Grant] = {}
    sans: dict[str, Grant] = {}
    for i, entry in enumerate(_tables(data.get("token", []), f"{origin}: token")):
        where = f"{origin}: token[{i}]"
        grant = _grant(entry, _TOKEN_KEYS, where)
        digest = entry.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64:
            raise GrantFileError(f"{where}: sha256 must be 64 hex digits")
        try:
            raw = bytes.fromhex(digest)
        except ValueError:
            raise GrantFileError(f"{where}: sha256 must be 64 hex digits") from None
        if raw in tokens:
            raise GrantFileError(f"{where}: sha256 repeats the hash of token {tokens[raw][1].name!r}")
        tokens[raw] = (raw, grant)
    for i, entry in enumerate(_tables(data.get("certificate", []), f"{origin}: certificate")):
        where = f"{origin}: certificate[{i}]"
        grant = _grant(entry, _CERT_KEYS, where)
        if ("subject" in entry) == ("san" in entry):
            raise GrantFileError(f"{where}: give exactly one of subject, san")
        key, table = ("subject", subjects) if "subject" in entry else ("san", sans)
        value = entry[key]
        if not isinstance(value, str) or not value:
            raise GrantFileError(f"{where}: {key} must be a non-empty string")
        table[value] = grant
    return Grants(tokens, subjects, sans)


def _tables(value: object, where: str) -> list[dict[str, object]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise GrantFileError(f"{where}: must be an array of tables ([[...]])")
    return value


def _grant(entry: dict[str, object], allowed: frozenset[str], where: str) -> Grant:
    unknown = set(entry) - allowed
    if unknown:
        raise GrantFileError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise GrantFileError(f"{where}: name must be a non-empty string")
    scopes = entry.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise GrantFileError(f"{where}: scopes must be a list of strings")
    bad = set(scopes) - SCOPES
    if bad:
        raise GrantFileError(
            f"{where}: unknown scope {sorted(bad)[0]!r} (known: {', '.join(sorted(SCOPES))})"
        )
    return Grant(name, frozenset(scopes))


class GrantStore:
    """The grants in force, loaded from ``path`` and reloaded when the file changes."""

    def __init__(
        self,
        path: Path,
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.check_interval = check_interval
        self.clock = clock
        self.reloads = 0
        self.failed_reloads = 0
        self._stamp = self._stat()
        self.grants = parse_grants(path.read_text(), str(path))  # a bad file at start is fatal
        self._next_check = clock() + check_interval

    def _stat(self) -> FileStamp | None:
        return file_stamp(self.path)

    def maybe_reload(self) -> None:
        """Reloads the file if ``check_interval`` has passed and it changed; keeps the old grants on error."""
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + self.check_interval
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.grants = parse_grants(self.path.read_text(), str(self.path))
        except (OSError, UnicodeDecodeError, GrantFileError) as exc:
            self.failed_reloads += 1
            log.error("token file not reloaded, previous grants stay in force: %s", exc)
            return
        self.reloads += 1
        log.info(
            "token file reloaded: %d tokens, %d certificate identities",
            len(self.grants.tokens),
            len(self.grants.subjects) + len(self.grants.sans),
        )

    def lookup(self, token: str) -> Grant | None:
        """The grant of a bearer token, or None; constant-time on the stored digest."""
        digest = hashlib.sha256(token.encode()).digest()
        entry = self.grants.tokens.get(digest)
        if entry is None:
            return None
        stored, grant = entry
        return grant if hmac.compare_digest(stored, digest) else None

    def lookup_certificate(self, subject: str | None, sans: list[str]) -> Grant | None:
        """The grant of a verified client certificate: its SANs first, then its subject common name."""
        grants = self.grants
        for san in sans:
            grant = grants.sans.get(san)
            if grant is not None:
                return grant
        return grants.subjects.get(subject) if subject is not None else None
