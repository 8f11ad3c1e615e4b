"""MonitorConfig and its parts validate in __post_init__ and name the field at fault."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from monitor.config import MonitorConfig, ProfileSettings, WebhookSettings
from monitor.errors import ConfigError, MonitorError


def test_defaults_follow_the_design() -> None:
    config = MonitorConfig(Path("reg"))
    assert (config.host, config.port, config.db) == ("127.0.0.1", 8090, Path("monitor.db"))
    assert config.webhook.url is None
    assert (config.profile.fine_bins, config.profile.max_features, config.profile.max_reference_rows) == (
        1000,
        256,
        100_000,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: MonitorConfig("reg"), "registry"),  # type: ignore[arg-type]
        (lambda: MonitorConfig(Path("r"), port=-1), "port"),
        (lambda: MonitorConfig(Path("r"), port=True), "port"),  # type: ignore[arg-type]
        (lambda: MonitorConfig(Path("r"), host=""), "host"),
        (lambda: MonitorConfig(Path("r"), db="x.db"), "db"),  # type: ignore[arg-type]
        (lambda: MonitorConfig(Path("r"), max_body_bytes=10), "max_body_bytes"),
        (lambda: MonitorConfig(Path("r"), tick_s=0), "tick_s"),
        (lambda: MonitorConfig(Path("r"), tick_s=float("nan")), "tick_s"),
        (lambda: ProfileSettings(fine_bins=1), "fine_bins"),
        (lambda: ProfileSettings(max_categories=0), "max_categories"),
        (lambda: WebhookSettings(url="localhost:80"), "alert_webhook"),
        (lambda: WebhookSettings(attempts=0), "attempts"),
        (lambda: WebhookSettings(backoff_s=-1), "backoff_s"),
    ],
)
def test_invalid_values_name_the_field(build: object, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as caught:
        build()  # type: ignore[operator]
    assert isinstance(caught.value, MonitorError)
