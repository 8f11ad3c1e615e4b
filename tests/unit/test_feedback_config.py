"""[feedback] of model.toml: defaults, strict validation, and the tensor roles taken from a signature."""

from __future__ import annotations

import pytest

from registry.config import parse_model_config
from registry.errors import ConfigError
from registry.feedback_config import FeedbackConfig, FeedbackRoles, feedback_roles
from registry.signature import Signature, TensorSpec

INPUT = (TensorSpec("input", "FP32", (-1, 4)),)


def signature(*outputs: tuple[str, str, tuple[int, ...]]) -> Signature:
    return Signature(INPUT, tuple(TensorSpec(n, d, s) for n, d, s in outputs))


def test_defaults_and_a_full_section_parse() -> None:
    assert parse_model_config({}).feedback == FeedbackConfig()
    config = parse_model_config(
        {"feedback": {"task": "classifier", "window_rows": 500, "ttl_seconds": 60, "alpha": 0.01}}
    ).feedback
    assert (config.task, config.window_rows, config.ttl_seconds, config.alpha) == (
        "classifier",
        500,
        60.0,
        0.01,
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"task": "ranker"}, "[feedback].task"),
        ({"max_rows": 0}, "[feedback].max_rows"),
        ({"max_bytes": 10}, "[feedback].max_bytes"),
        ({"ttl_seconds": 0}, "[feedback].ttl_seconds"),
        ({"window_seconds": -1.0}, "[feedback].window_seconds"),
        ({"grace_seconds": -1.0}, "[feedback].grace_seconds"),
        ({"alpha": 1.0}, "[feedback].alpha"),
        ({"confidence": 0}, "[feedback].confidence"),
        ({"window_rows": 1}, "[feedback].window_rows"),
        ({"consecutive": 0}, "[feedback].consecutive"),
        ({"label": 3}, "[feedback].label"),
        ({"windows": 3}, "[feedback].windows: unknown key"),
    ],
)
def test_bad_values_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_model_config({"feedback": table})


def test_roles_default_from_the_signature() -> None:
    demo = signature(("probabilities", "FP32", (-1, 2)), ("label", "INT64", (-1,)))
    assert feedback_roles(FeedbackConfig(), demo) == FeedbackRoles(
        "classifier", "label", "probabilities", "label", 2
    )
    only_proba = signature(("scores", "FP32", (-1, 3)))
    assert feedback_roles(FeedbackConfig(), only_proba) == FeedbackRoles(
        "classifier", None, "scores", "label", 3
    )
    regression = signature(("prediction", "FP32", (-1, 1)))
    assert feedback_roles(FeedbackConfig(), regression) == FeedbackRoles(
        "regressor", "prediction", None, "prediction", 0
    )
    named = FeedbackConfig(task="regressor", prediction="b", label="y")
    two = signature(("a", "FP32", (-1,)), ("b", "FP64", (-1, 1)))
    assert feedback_roles(named, two) == FeedbackRoles("regressor", "b", None, "y", 0)


@pytest.mark.parametrize(
    ("config", "outputs", "message"),
    [
        (FeedbackConfig(prediction="nope"), [("label", "INT64", (-1,))], "prediction"),
        (FeedbackConfig(probabilities="label"), [("label", "INT64", (-1,))], "probabilities"),
        (FeedbackConfig(probabilities="p"), [("p", "FP32", (-1, 1))], "fixed k > 1"),
        (FeedbackConfig(), [("embedding", "FP32", (-1, 1, 8))], "no output"),
        (FeedbackConfig(task="regressor"), [("label", "INT64", (-1,))], "no output"),
    ],
)
def test_unusable_roles_are_refused(
    config: FeedbackConfig, outputs: list[tuple[str, str, tuple[int, ...]]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        feedback_roles(config, signature(*outputs))
