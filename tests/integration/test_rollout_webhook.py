"""Signed rollout webhooks: a real HTTP receiver on loopback checks each event's HMAC the way the README
tells a receiver to (``hmac.compare_digest`` against the body it read), a rotated secret file signs the
next event, an unreadable one fails the delivery without stopping the notifier, and no secret reaches a
log line."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.__main__ import parse_args
from gateway.config import GatewayConfig
from gateway.rollout_events import RolloutNotifier
from registry.rollout import RolloutState
from registry.webhook_signing import signature
from tests.rollout_rig import Hook


async def received(hook: Hook, count: int) -> list[tuple[bytes, str]]:
    """The first ``count`` (body, signature header) pairs, waiting on the loop without blocking it."""
    for _ in range(2000):
        if len(hook.raw) >= count:
            return hook.raw
        await asyncio.sleep(0.005)
    raise AssertionError(f"the receiver got {len(hook.raw)} of {count} events")


@pytest.fixture
def receiver() -> Any:
    hook = Hook()
    yield hook
    hook.close()


def verified(body: bytes, header: str, secret: bytes) -> bool:
    return hmac.compare_digest(header, signature(secret, body))


STATE = RolloutState(stable=1, candidate=2, status="rolled_back", reason="gate p99_ratio failed")


async def test_events_are_signed_with_the_secret_of_the_moment(
    receiver: Hook, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("first-secret-value\n")
    notifier = RolloutNotifier(receiver.url, secret_file=secret, backoff_s=0.01)
    notifier.start()
    caplog.set_level(logging.DEBUG)
    try:
        notifier.emit("m", "rolled_back", STATE, "p99_ratio")
        ((body, header),) = await received(receiver, 1)
        assert verified(body, header, b"first-secret-value")  # stripped of the newline
        assert not verified(body, header, b"another-secret")
        event = json.loads(body)
        assert (event["event"], event["model"], event["version"], event["gate"]) == (
            "rollout_rolled_back",
            "m",
            "2",
            "p99_ratio",
        )
        secret.write_text("rotated-secret-value")
        notifier.emit("m", "promoted", STATE, "")
        body2, header2 = (await received(receiver, 2))[1]
        assert verified(body2, header2, b"rotated-secret-value")
        assert not verified(body2, header2, b"first-secret-value")
    finally:
        await notifier.stop()
    logged = "\n".join(record.getMessage() + str(getattr(record, "fields", "")) for record in caplog.records)
    assert "secret-value" not in logged


async def test_an_unreadable_secret_fails_the_delivery_and_the_next_one_still_goes(
    receiver: Hook, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "secret"
    notifier = RolloutNotifier(receiver.url, secret_file=secret, backoff_s=0.01)
    notifier.start()
    try:
        with caplog.at_level(logging.ERROR, logger="infergate.rollout"):
            notifier.emit("m", "rolled_back", STATE, "error_ratio")  # the file does not exist yet
            for _ in range(2000):
                if any("not delivered" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.005)
        assert [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()] == [
            "rollout webhook: rollout_rolled_back not delivered: FileNotFoundError"
        ]
        assert receiver.raw == []
        secret.write_text("now-it-exists")
        notifier.emit("m", "aborted", STATE, "")
        ((body, header),) = await received(receiver, 1)
        assert verified(body, header, b"now-it-exists")
    finally:
        await notifier.stop()


async def test_without_a_secret_events_go_unsigned(receiver: Hook) -> None:
    notifier = RolloutNotifier(receiver.url)
    notifier.start()
    try:
        notifier.emit("m", "promoted", STATE, "")
        ((body, header),) = await received(receiver, 1)
    finally:
        await notifier.stop()
    assert header == ""
    assert json.loads(body)["event"] == "rollout_promoted"


def test_the_secret_needs_a_webhook_and_the_flag_reaches_the_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set rollout_webhook too"):
        GatewayConfig(tmp_path, rollout_webhook_secret_file=tmp_path / "secret")
    args = parse_args(
        [
            "--registry",
            str(tmp_path),
            "--rollout-webhook",
            "http://127.0.0.1:9/hook",
            "--rollout-webhook-secret-file",
            str(tmp_path / "secret"),
        ]
    )
    assert args.rollout_webhook_secret_file == tmp_path / "secret"
