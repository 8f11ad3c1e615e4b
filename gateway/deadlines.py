"""Request scheduling parameters: the deadline and the priority of one inference request.

Contracts (DESIGN.md §3):
- The deadline is the earliest of the gRPC deadline, the ``timeout`` request parameter (int64 µs,
  Triton's name; it works without any server default) and the model's ``latency_budget_ms``. It is
  expressed in the event loop's monotonic clock (``loop.time()`` seconds).
- ``priority`` is 1 (highest) .. ``priority_levels``; 0 or absent means the lowest level.
- A malformed parameter raises InvalidArgumentError naming it.
"""

from __future__ import annotations

from gateway.errors import InvalidArgumentError
from protos import inference_pb2 as pb


def _integer_parameter(request: pb.ModelInferRequest, name: str) -> int | None:
    if name not in request.parameters:
        return None
    parameter = request.parameters[name]
    kind = parameter.WhichOneof("parameter_choice")
    if kind == "int64_param":
        return int(parameter.int64_param)
    if kind == "uint64_param":
        return int(parameter.uint64_param)
    raise InvalidArgumentError(f"parameter '{name}' must be an int64 or uint64, got {kind or 'nothing'}")


def request_deadline(
    request: pb.ModelInferRequest, *, now: float, grpc_remaining: float | None, budget_ms: float
) -> float:
    """The request's absolute deadline on the monotonic clock ``now`` was read from."""
    budget = budget_ms / 1000.0
    timeout_us = _integer_parameter(request, "timeout")
    if timeout_us is not None:
        if timeout_us <= 0:
            raise InvalidArgumentError(
                f"parameter 'timeout' must be a positive number of µs, got {timeout_us}"
            )
        budget = min(budget, timeout_us / 1e6)
    return _deadline(now, budget, grpc_remaining)


def _deadline(now: float, budget: float, grpc_remaining: float | None) -> float:
    """``now`` plus the smaller of ``budget`` and the call's remaining gRPC time (seconds)."""
    return now + (budget if grpc_remaining is None or grpc_remaining > budget else grpc_remaining)


def request_priority(request: pb.ModelInferRequest, levels: int) -> int:
    """The request's priority level, 1 = highest; absent or 0 means ``levels`` (the lowest)."""
    priority = _integer_parameter(request, "priority")
    if priority is None or priority == 0:
        return levels
    if not 1 <= priority <= levels:
        raise InvalidArgumentError(
            f"parameter 'priority' must be in 1..{levels} for this model, got {priority}"
        )
    return priority


def request_schedule(
    request: pb.ModelInferRequest, *, now: float, grpc_remaining: float | None, budget_ms: float, levels: int
) -> tuple[float, int]:
    """(:func:`request_deadline`, :func:`request_priority`) of ``request`` in one call; a request without
    parameters (the common one) costs one look at them instead of two look-ups each."""
    if request.parameters:
        return (
            request_deadline(request, now=now, grpc_remaining=grpc_remaining, budget_ms=budget_ms),
            request_priority(request, levels),
        )
    return _deadline(now, budget_ms / 1000.0, grpc_remaining), levels
