"""The gateway's one error hierarchy.

Every failure a client can see is a :class:`GatewayError` subclass. The servicer maps each class to a
gRPC status code in a single table (``gateway.servicer.STATUS_BY_ERROR``); any other exception becomes
INTERNAL "internal error" with its traceback in the log only. This module never imports grpc, so the
data path (codec, validation, runner, model table) stays transport-free.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every client-visible error. ``str(error)`` is the message the client receives."""


class InvalidArgumentError(GatewayError):
    """The request is malformed: the message names the tensor and what was expected."""


class NotFoundError(GatewayError):
    """Unknown model or version."""


class UnavailableError(GatewayError):
    """The model exists but cannot serve now (loading, unloaded, or the server is draining)."""


class ResourceExhaustedError(GatewayError):
    """A queue or size limit was hit; retrying later may succeed."""


class DeadlineExceededError(GatewayError):
    """The request's deadline passed, or cannot be met."""


class ModelLoadError(GatewayError):
    """A version failed to load (corrupt file, signature mismatch, failed warm-up)."""
