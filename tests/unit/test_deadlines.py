"""Deadline and priority parameters of a request."""

from __future__ import annotations

import pytest

from gateway.deadlines import request_deadline, request_priority, request_schedule
from gateway.errors import InvalidArgumentError
from protos import inference_pb2 as pb


def _request(**parameters: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    for key, value in parameters.items():
        request.parameters[key].int64_param = value
    return request


def test_deadline_is_the_earliest_of_budget_timeout_and_grpc() -> None:
    assert request_deadline(_request(), now=10.0, grpc_remaining=None, budget_ms=100) == pytest.approx(10.1)
    assert request_deadline(
        _request(timeout=20_000), now=10.0, grpc_remaining=None, budget_ms=100
    ) == pytest.approx(10.02)
    assert request_deadline(
        _request(timeout=20_000), now=10.0, grpc_remaining=0.005, budget_ms=100
    ) == pytest.approx(10.005)
    assert request_deadline(
        _request(timeout=900_000), now=0.0, grpc_remaining=5.0, budget_ms=100
    ) == pytest.approx(0.1)


def test_uint64_timeout_as_tritonclient_may_send_it() -> None:
    request = pb.ModelInferRequest()
    request.parameters["timeout"].uint64_param = 1000
    assert request_deadline(request, now=0.0, grpc_remaining=None, budget_ms=100) == pytest.approx(0.001)


@pytest.mark.parametrize("value", [0, -5])
def test_non_positive_timeout_is_invalid(value: int) -> None:
    with pytest.raises(InvalidArgumentError, match="'timeout'"):
        request_deadline(_request(timeout=value), now=0.0, grpc_remaining=None, budget_ms=100)


def test_timeout_of_the_wrong_type_is_invalid() -> None:
    request = pb.ModelInferRequest()
    request.parameters["timeout"].string_param = "soon"
    with pytest.raises(InvalidArgumentError, match="int64 or uint64"):
        request_deadline(request, now=0.0, grpc_remaining=None, budget_ms=100)


def test_priority_levels() -> None:
    assert request_priority(_request(), 3) == 3
    assert request_priority(_request(priority=0), 3) == 3
    assert request_priority(_request(priority=1), 3) == 1
    with pytest.raises(InvalidArgumentError, match=r"1\.\.3"):
        request_priority(_request(priority=4), 3)


@pytest.mark.parametrize("grpc_remaining", [None, 0.01, 0.1, 5.0])
@pytest.mark.parametrize(
    "parameters", [{}, {"timeout": 20_000}, {"priority": 1}, {"timeout": 500, "priority": 2}]
)
def test_the_schedule_is_the_deadline_and_the_priority_with_or_without_parameters(
    grpc_remaining: float | None, parameters: dict[str, int]
) -> None:
    request = _request(**parameters)
    schedule = request_schedule(request, now=3.0, grpc_remaining=grpc_remaining, budget_ms=100, levels=3)
    assert schedule == (
        request_deadline(request, now=3.0, grpc_remaining=grpc_remaining, budget_ms=100),
        request_priority(request, 3),
    )


def test_the_schedule_refuses_malformed_parameters_as_its_parts_do() -> None:
    with pytest.raises(InvalidArgumentError, match=r"'priority' must be in 1\.\.3"):
        request_schedule(_request(priority=4), now=0.0, grpc_remaining=None, budget_ms=100, levels=3)
    with pytest.raises(InvalidArgumentError, match="'timeout' must be a positive"):
        request_schedule(_request(timeout=-1), now=0.0, grpc_remaining=None, budget_ms=100, levels=3)
