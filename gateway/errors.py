"""The gateway's one error hierarchy.

Every failure a client can see is a :class:`GatewayError` subclass, and each class names its gRPC status
in ``status`` (the one table: the servicer turns the name into a ``grpc.StatusCode``, the data plane uses
it as the ``code`` label); any other exception becomes INTERNAL "internal error" with its traceback in the
log only. This module never imports grpc, so the data path (codec, validation, runner, model table, data
plane) stays transport-free.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every client-visible error. ``str(error)`` is the message the client receives."""

    #: The gRPC status code name this error is answered with.
    status = "INTERNAL"


class InvalidArgumentError(GatewayError):
    """The request is malformed: the message names the tensor and what was expected."""

    status = "INVALID_ARGUMENT"


class NotFoundError(GatewayError):
    """Unknown model or version."""

    status = "NOT_FOUND"


class UnavailableError(GatewayError):
    """The model exists but cannot serve now (loading, unloaded, or the server is draining)."""

    status = "UNAVAILABLE"


class ResourceExhaustedError(GatewayError):
    """A queue or size limit was hit; retrying later may succeed."""

    status = "RESOURCE_EXHAUSTED"


class DeadlineExceededError(GatewayError):
    """The request's deadline passed, or cannot be met."""

    status = "DEADLINE_EXCEEDED"


class ModelLoadError(GatewayError):
    """A version failed to load (corrupt file, signature mismatch, failed warm-up)."""

    status = "UNAVAILABLE"


def status_name(error: BaseException) -> str:
    """The gRPC status name an error is answered with: its class's ``status``, INTERNAL for anything outside
    the hierarchy."""
    return error.status if isinstance(error, GatewayError) else "INTERNAL"
