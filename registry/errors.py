"""The registry's one error hierarchy.

Every failure the registry reports on purpose is a :class:`RegistryError`; callers (the gateway's model
table, the monitor, the CLI) catch that one base class and turn it into a log line, a status code or an
exit status. The message is always one line that names the file, key or tensor at fault.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "GoldenError",
    "IntegrityError",
    "ManifestError",
    "NotFoundError",
    "PublishError",
    "RegistryError",
    "SignatureError",
    "UsageError",
]


class RegistryError(Exception):
    """Base class of every error raised on purpose by the ``registry`` package."""


class ConfigError(RegistryError):
    """``model.toml`` (or a ``pin`` file) is unreadable, has an unknown key, a wrong type or a bad value."""


class SignatureError(RegistryError):
    """An ONNX model's inputs/outputs are not expressible as V2 tensors, or a signature record is bad."""


class ManifestError(RegistryError):
    """``manifest.json`` is unreadable or malformed, or a manifest field holds an invalid value."""


class PublishError(RegistryError):
    """A publish, pin or rollback was refused (bad name, bad reference arrays, nothing to roll back to...)."""


class NotFoundError(RegistryError):
    """A registry directory, model, READY version or file does not exist."""


class IntegrityError(RegistryError):
    """A stored file no longer matches the hash recorded in its manifest."""


class GoldenError(RegistryError):
    """``golden.npz`` is unreadable or incomplete, or the reference evaluation of the golden inputs failed."""


class UsageError(RegistryError):
    """An argument that parses but makes no sense (invalid JSON for ``--params``, ``--columns 0``...)."""
