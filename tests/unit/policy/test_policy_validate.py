"""Policy documents: every error with its path; a valid one parses with defaults."""

from __future__ import annotations

from typing import Any

from rapport.core.policy.document import DEFAULT_POLICY, PolicyDocument
from rapport.core.policy.validate import parse_policy, validate_policy

S6: dict[str, Any] = {
    "topics": [
        {"id": "offers", "name": "Offers"},
        {"id": "birthday", "name": "Birthday", "default_subscribed": False},
        {"id": "delivery", "name": "Delivery alerts", "category": "transactional"},
    ],
    "caps": [{"id": "weekly", "category": "promotional", "max": 3, "window": "7d"}],
    "quiet_hours": {"start": "21:00", "end": "09:00", "channels": ["sms", "push"]},
    "timezone": {"trait": "tz", "default": "Europe/Paris"},
    "addresses": {"sms": "mobile"},
    "consent": {"opt_in": ["sms"]},
}


def test_a_valid_document_parses_and_keeps_defaults_for_the_rest() -> None:
    parsed = parse_policy(S6)
    assert isinstance(parsed, PolicyDocument)
    assert parsed.topic("birthday") is not None
    assert parsed.caps[0].window == "7d"
    assert parsed.addresses == {"sms": "mobile"}
    assert parsed.consent.marketing == "marketing"
    assert parsed.consent.opt_in == ("sms",)
    assert DEFAULT_POLICY.consent.opt_in == ()
    assert parse_policy({}) == DEFAULT_POLICY


def test_every_error_is_listed_with_its_path() -> None:
    bad = {
        "topics": [{"id": "Offers!", "name": ""}, {"id": "x", "name": "X", "color": "red"}],
        "caps": [
            {"max": -1, "window": "7 days", "channel": "fax"},
            {"max": 1, "window": "24h", "topic": "nope"},
            {"window": "calendar_day"},
        ],
        "quiet_hours": {"start": "25:00", "end": "09:00", "channels": ["sms", "sms"]},
        "timezone": {"default": "Mars/Olympus"},
        "addresses": {"in_app": "x", "pigeon": "y"},
        "confirmation": {"template": "Bad Template", "channels": ["email", "in_app"]},
        "consent": {"opt_in": ["sms", "fax"]},
        "extra": 1,
    }
    found = [str(e) for e in validate_policy(bad)]
    expected = [
        "$.extra: unknown field",
        "$.topics[0].id: expected a slug",
        "$.topics[0].name: expected a non-empty string",
        "$.topics[1].color: unknown field",
        "$.caps[0].max: expected a whole number",
        "$.caps[0].window: expected a rolling window",
        "$.caps[0].channel: expected one of email",
        "$.caps[1].topic: unknown topic 'nope'",
        "$.caps[2]: 'max' is required",
        "$.quiet_hours.start: expected a 24-hour time",
        "$.quiet_hours.channels[1]: channel 'sms' is listed twice",
        "$.consent.opt_in[1]: expected one of email",
        "$.timezone.default: unknown time zone 'Mars/Olympus'",
        "$.addresses.in_app: the in-app inbox is addressed by the profile id",
        "$.addresses.pigeon: expected a channel",
        "$.confirmation.channels[1]: the in-app inbox has no address to confirm",
        "$.confirmation.template: expected a template id",
    ]
    for prefix in expected:
        assert any(message.startswith(prefix) for message in found), (prefix, found)
    assert len(found) == len(expected)


def test_not_an_object() -> None:
    assert [str(e) for e in validate_policy([])] == ["$: expected an object"]
    assert isinstance(parse_policy("x"), list)


def test_quiet_hours_start_and_end_must_differ() -> None:
    errors = validate_policy({"quiet_hours": {"start": "09:00", "end": "09:00"}})
    assert [str(e) for e in errors] == ["$.quiet_hours.end: start and end must differ"]
