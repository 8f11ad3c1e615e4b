"""``[warmup]`` in model.toml: defaults, the three modes, a file only with mode "file" and only inside the
version directory, and errors that name the key."""

from __future__ import annotations

import pytest

from registry.config import ModelConfig, WarmupConfig, parse_model_config
from registry.errors import ConfigError


def test_default_is_auto_without_a_file() -> None:
    assert ModelConfig().warmup == WarmupConfig("auto", "")
    assert parse_model_config({}).warmup == WarmupConfig()


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"mode": "off"}, WarmupConfig("off", "")),
        ({"mode": "auto"}, WarmupConfig("auto", "")),
        ({"mode": "file", "file": "warmup.npz"}, WarmupConfig("file", "warmup.npz")),
        ({"mode": "file", "file": "data/rows.npz"}, WarmupConfig("file", "data/rows.npz")),
    ],
)
def test_modes_parse(table: dict[str, str], expected: WarmupConfig) -> None:
    assert parse_model_config({"warmup": table}).warmup == expected


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"mode": "sometimes"}, "model.toml: [warmup].mode: expected one of ['auto', 'file', 'off']"),
        ({"mode": 1}, "model.toml: [warmup].mode: expected one of"),
        ({"mdoe": "off"}, "model.toml: [warmup].mdoe: unknown key"),
        ({"mode": "file"}, 'model.toml: [warmup].file: mode = "file" needs a relative path'),
        ({"mode": "file", "file": "/etc/passwd"}, '[warmup].file: mode = "file" needs a relative path'),
        ({"mode": "file", "file": "../other/x.npz"}, '[warmup].file: mode = "file" needs a relative path'),
        ({"mode": "file", "file": 3}, "[warmup].file: expected a string, got int 3"),
        ({"file": "warmup.npz"}, '[warmup].file: only used with mode = "file", got mode = "auto"'),
        ({"mode": "off", "file": "warmup.npz"}, '[warmup].file: only used with mode = "file"'),
    ],
)
def test_invalid_tables_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_model_config({"warmup": table})
    assert message in str(caught.value)


def test_warmup_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"\[warmup\]: expected a table"):
        parse_model_config({"warmup": "off"})
