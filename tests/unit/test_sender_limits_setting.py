"""``sender_limits``: the sender's limits from the settings, validated at start-up."""

from __future__ import annotations

import pytest

from rapport.runtime.sender_limits import SenderConfig
from rapport.settings import SettingsError, load_settings


def test_defaults_without_the_setting() -> None:
    assert load_settings(environ={}).sender_config() == SenderConfig()


def test_pairs_override_the_defaults_with_their_types() -> None:
    settings = load_settings(
        environ={"RAPPORT_SENDER_LIMITS": "lease=12, max_attempts=20,backoff_base=0.5"}
    )
    config = settings.sender_config()
    assert (config.lease, config.max_attempts, config.backoff_base) == (12.0, 20, 0.5)
    assert isinstance(config.max_attempts, int)
    assert config.breaker_failures == SenderConfig().breaker_failures


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("retries=3", "unknown limit 'retries'"),
        ("max_attempts=2.5", "max_attempts expects a positive integer"),
        ("lease=0", "lease expects a positive number"),
        ("breaker_cooldown=-1", "breaker_cooldown expects a positive number"),
        ("backoff_base=nan", "backoff_base expects a positive number"),
        ("lease", "expected key=value pairs"),
    ],
)
def test_bad_limits_fail_at_start_up_naming_the_setting(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match="sender_limits") as raised:
        load_settings(environ={"RAPPORT_SENDER_LIMITS": raw})
    assert message in str(raised.value)
