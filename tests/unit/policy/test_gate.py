"""The policy gate's rules, one message at a time and per step (arbitration)."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from rapport.core.model import SentMessage
from rapport.core.policy.document import (
    FrequencyCap,
    PolicyDocument,
    QuietHours,
    TimeZones,
    Topic,
)
from rapport.core.policy.gate import GateDecision, decide, decide_all, gate_step
from tests.unit.policy.helpers import BROWSER, DANA, OPTED_IN, T0, message, profile

DEFAULT = PolicyDocument()


def names(decision: GateDecision) -> list[tuple[str, bool]]:
    return [(c.name, c.passed) for c in decision.verdict.checks]


def test_a_promotion_to_an_opted_in_customer_is_sent_with_every_check_recorded() -> None:
    d = decide(DEFAULT, profile(DANA, OPTED_IN), message(), T0)
    assert (d.verdict.outcome, d.verdict.channel, d.verdict.address) == (
        "send",
        "email",
        "dana@example.com",
    )
    assert names(d) == [("topic", True), ("consent", True), ("route", True)]


def test_a_promotion_needs_marketing_granted_explicitly() -> None:
    never = decide(DEFAULT, profile(DANA, {}), message(), T0)
    assert never.verdict.outcome == "drop"
    assert never.verdict.reason.startswith("marketing_not_granted")
    assert "never given" in never.verdict.reason
    withdrawn = decide(DEFAULT, profile(DANA, {"marketing": False}), message(), T0)
    assert "withdrawn" in withdrawn.verdict.reason


def test_a_transactional_message_needs_no_marketing_consent() -> None:
    d = decide(DEFAULT, profile(DANA, {}), message(category="transactional", topic=None), T0)
    assert d.verdict.outcome == "send"


def test_explicit_channel_consent_false_blocks_every_message_on_it() -> None:
    blocked = profile(DANA, {"marketing": True, "email": False})
    for category in ("promotional", "transactional"):
        d = decide(DEFAULT, blocked, message(category=category), T0)
        assert d.verdict.outcome == "drop", category
        assert d.verdict.reason.startswith("no_channel")
        assert ("consent", False) in names(d)


def test_routing_takes_the_first_channel_she_can_get_sms_if_opted_in_else_email() -> None:
    alert = message(channels=("sms", "email"), category="transactional", topic="delivery")
    opted_in = decide(DEFAULT, profile(DANA, {"sms": True}), alert, T0)
    assert (opted_in.verdict.channel, opted_in.verdict.address) == ("sms", "+33 6 12 34 56 78")
    opted_out = decide(DEFAULT, profile(DANA, {"sms": False}), alert, T0)
    assert opted_out.verdict.channel == "email"
    no_phone = decide(DEFAULT, profile({"email": "dana@example.com"}), alert, T0)
    assert no_phone.verdict.channel == "email"
    assert ("route", False) in names(no_phone)


def test_an_opt_in_channel_needs_its_consent_granted_explicitly() -> None:
    policy = msgspec.structs.replace(
        DEFAULT, consent=msgspec.structs.replace(DEFAULT.consent, opt_in=("sms",))
    )
    alert = message(channels=("sms", "email"), category="transactional", topic="delivery")
    never = decide(policy, profile(DANA, {}), alert, T0)
    assert never.verdict.channel == "email"
    [skipped] = [c for c in never.verdict.checks if c.channel == "sms"]
    assert (skipped.name, skipped.passed) == ("consent", False)
    assert skipped.detail == "channel_not_opted_in: 'sms' consent never granted"
    granted = decide(policy, profile(DANA, {"sms": True}), alert, T0)
    assert (granted.verdict.channel, granted.verdict.address) == ("sms", "+33 6 12 34 56 78")
    # Without the setting, a customer who never answered is texted (consent not withdrawn).
    assert decide(DEFAULT, profile(DANA, {}), alert, T0).verdict.channel == "sms"
    # Email is not opt-in: a missing answer does not block it.
    only_email = decide(policy, profile(DANA, {}), message(category="transactional"), T0)
    assert only_email.verdict.channel == "email"


def test_in_app_is_addressed_by_the_profile_id() -> None:
    d = decide(DEFAULT, profile({}, OPTED_IN), message(channels=("in_app",)), T0)
    assert (d.verdict.channel, d.verdict.address) == ("in_app", "prof_dana")


def test_a_topic_unsubscribe_drops_promotions_and_transactional_messages_of_that_topic() -> None:
    gone = profile(DANA, {"marketing": True, "topic:offers": False})
    d = decide(DEFAULT, gone, message(), T0)
    assert d.verdict.reason.startswith("topic_unsubscribed")
    assert decide(DEFAULT, gone, message(topic="news"), T0).verdict.outcome == "send"


def test_an_opt_in_topic_needs_an_explicit_yes() -> None:
    policy = PolicyDocument(
        topics=(Topic(id="birthday", name="Birthday", default_subscribed=False),)
    )
    birthday = message(topic="birthday")
    assert decide(policy, profile(DANA, OPTED_IN), birthday, T0).verdict.reason.startswith(
        "topic_not_subscribed"
    )
    likes = profile(DANA, {"marketing": True, "topic:birthday": True})
    assert decide(policy, likes, birthday, T0).verdict.outcome == "send"


def test_an_untrusted_address_gets_no_promotion_and_one_confirmation_request() -> None:
    claimed = profile(DANA, OPTED_IN, source=BROWSER)
    d = decide(DEFAULT, claimed, message(), T0)
    assert d.verdict.outcome == "drop"
    assert d.verdict.reason.startswith("contact_unconfirmed")
    assert d.confirm is not None and d.confirm.address == "dana@example.com"
    # A transactional message (an order confirmation) still reaches what she typed.
    order = decide(DEFAULT, claimed, message(category="transactional", topic=None), T0)
    assert order.verdict.outcome == "send"


def test_gate_step_writes_one_confirmation_and_remembers_it_was_asked() -> None:
    claimed = profile(DANA, OPTED_IN, source=BROWSER)
    result = gate_step(DEFAULT, claimed, [message(1), message(2)], T0)
    assert [d.verdict.outcome for d in result.decisions] == ["drop", "drop"]
    assert len(result.confirmations) == 1
    confirm = result.confirmations[0]
    assert confirm.effect.idempotency_key == "confirm:prof_dana:email:dana@example.com"
    assert confirm.effect.category == "transactional"
    assert confirm.effect.template == "contact-confirmation"
    assert confirm.effect.data == {
        "confirmation": {"channel": "email", "address": "dana@example.com"}
    }
    assert (confirm.verdict.outcome, confirm.verdict.address) == ("send", "dana@example.com")
    assert result.profile is not None
    point = result.profile.contacts["email:dana@example.com"]
    assert point.confirmation_requested_at == T0 and not point.trusted
    again = gate_step(DEFAULT, result.profile, [message(3)], T0 + timedelta(hours=1))
    assert again.confirmations == []
    assert again.decisions[0].verdict.reason.startswith("contact_unconfirmed")


def test_routing_skips_an_untrusted_sms_for_a_trusted_email() -> None:
    phone = profile({"phone": "+33612345678"}, {"marketing": True, "sms": True}, source=BROWSER)
    email = profile({"email": "dana@example.com"}, OPTED_IN)
    both = msgspec.structs.replace(
        phone,
        traits={**phone.traits, **email.traits},
        contacts={**phone.contacts, **email.contacts},
    )
    d = decide(DEFAULT, both, message(channels=("sms", "email")), T0)
    assert (d.verdict.outcome, d.verdict.channel) == ("send", "email")
    assert ("contact", False) in names(d)
    assert d.confirm is None, "a confirmation is asked only when the promotion is dropped"


QUIET = PolicyDocument(
    quiet_hours=QuietHours(start="21:00", end="09:00", channels=("sms",)),
    timezone=TimeZones(trait="timezone", default="Europe/Paris"),
)


def test_quiet_hours_defer_a_promotional_sms_to_nine_in_her_zone() -> None:
    dana = profile({**DANA, "timezone": "America/New_York"}, {"marketing": True, "sms": True})
    at_two_am_ny = T0.replace(hour=6)  # 02:00 in New York (EDT, UTC-4)
    d = decide(QUIET, dana, message(channels=("sms",)), at_two_am_ny)
    assert d.verdict.outcome == "defer"
    assert d.verdict.not_before == T0.replace(hour=13)  # 09:00 EDT
    assert d.verdict.reason.startswith("quiet_hours")
    assert d.at == d.verdict.not_before
    email = decide(QUIET, dana, message(channels=("email",)), at_two_am_ny)
    assert email.verdict.outcome == "send", "quiet hours cover sms only here"
    alert = decide(QUIET, dana, message(channels=("sms",), category="transactional"), at_two_am_ny)
    assert alert.verdict.outcome == "send", "transactional messages skip quiet hours"


def test_an_unknown_zone_falls_back_to_the_policy_default() -> None:
    dana = profile({**DANA, "timezone": "Mars/Olympus"}, {"marketing": True})
    late_in_paris = T0.replace(hour=20)  # 22:00 CEST
    d = decide(QUIET, dana, message(channels=("sms",)), late_in_paris)
    assert d.verdict.not_before == T0.replace(day=11, hour=7)


WEEKLY = PolicyDocument(
    caps=(FrequencyCap(id="weekly", category="promotional", max=1, window="7d"),)
)


def test_a_cap_counts_what_was_admitted_earlier_and_transactional_skips_it() -> None:
    sent = [SentMessage(at=T0 - timedelta(days=6), channel="email", category="promotional")]
    dana = profile(DANA, OPTED_IN, sent=sent)
    d = decide(WEEKLY, dana, message(), T0)
    assert d.verdict.outcome == "drop"
    assert d.verdict.reason == "cap_reached: weekly: 1 already sent"
    later = decide(WEEKLY, dana, message(), T0 + timedelta(days=1))
    assert later.verdict.outcome == "send"
    order = decide(WEEKLY, dana, message(category="transactional"), T0)
    assert order.verdict.outcome == "send"


def test_the_highest_priority_wins_the_global_cap_and_the_others_name_it() -> None:
    dana = profile(DANA, OPTED_IN)
    low = message(1, priority=10, journey="newsletter")
    high = message(2, priority=90, journey="apology")
    mid = message(3, priority=50, journey="jacket")
    decisions = decide_all(WEEKLY, dana, [low, high, mid], T0)
    assert [d.effect.journey_id for d in decisions] == ["apology", "jacket", "newsletter"]
    assert [d.verdict.outcome for d in decisions] == ["send", "drop", "drop"]
    for loser in decisions[1:]:
        assert loser.verdict.reason.startswith("arbitration")
        assert "won by apology/offer (priority 90)" in loser.verdict.reason


def test_gate_step_records_admitted_messages_and_prunes_to_the_longest_window() -> None:
    old = SentMessage(at=T0 - timedelta(days=8), channel="email", category="promotional")
    dana = profile(DANA, OPTED_IN, sent=[old])
    result = gate_step(WEEKLY, dana, [message()], T0)
    assert result.profile is not None
    assert result.profile.sent == [
        SentMessage(at=T0, channel="email", category="promotional", topic="offers")
    ]
    dropped = gate_step(WEEKLY, result.profile, [message(2)], T0 + timedelta(hours=1))
    assert dropped.profile is result.profile, "nothing admitted: the profile is not rewritten"


def test_a_missing_profile_drops_with_a_reason() -> None:
    d = decide(DEFAULT, None, message(), T0)
    assert d.verdict.reason.startswith("profile_not_found")
