"""The policy gate: send, defer or drop each outbound message, and say why.

For one message (``decide``), in this order, every check recorded:

1. topic: ``topic:<id>`` explicitly ``false`` drops it; an opt-in topic
   (``default_subscribed: false``) needs it explicitly ``true``;
2. marketing (promotional only): ``marketing`` must be granted explicitly;
3. routing: the first channel of the message's list whose consent is not
   explicitly ``false`` (nor never given, for the policy's ``consent.opt_in``
   channels), that has an address, and (promotional only, on the
   policy's confirmation channels) whose address is trusted
   (``contacts``): ``channels: [sms, email]`` is "SMS if she can get
   one, else email". None: dropped; if an untrusted address stood in the
   way, the reason is ``contact_unconfirmed`` and the decision asks for ONE
   confirmation message to it (``GateDecision.confirm``);
4. promotional only: quiet hours on the chosen channel DEFER to the
   window's end in the customer's zone (never drop), then frequency caps
   count the messages admitted earlier (the profile's ``sent``, and those
   admitted earlier in the same step) at the instant it would go.

Transactional messages skip caps and quiet hours, never consent.

``decide_all`` decides a step's messages for one profile in priority
order (highest first): when a cap lets fewer through than want to go, the
higher priority wins and the others are dropped naming the winner
(``arbitration``). ``gate_step`` also returns the profile with the
admitted messages recorded, and the confirmation messages to write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec

from rapport.core.journeys.effects import SendEffect
from rapport.core.model import ContactPoint, Profile, SentMessage
from rapport.core.policy.checks import GateVerdict, PolicyCheck
from rapport.core.policy.contacts import address_trust, contact_key, with_confirmation_requested
from rapport.core.policy.document import IN_APP, PolicyDocument, history_horizon
from rapport.core.policy.timing import count_for_cap, customer_zone, matches, quiet_until

MAX_SENT = 500
"""Admitted messages kept per profile at most, whatever the cap windows."""
CONFIRMATION_KEY_PREFIX = "confirm:"


class GateDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The verdict on one message, and the contact point to confirm, if it asks for one."""

    effect: SendEffect
    verdict: GateVerdict
    at: datetime
    """When it goes: the decision's instant, or the end of quiet hours."""
    confirm: ContactPoint | None = None
    """An untrusted address that stopped a promotion: send it one confirmation message."""

    @property
    def admitted(self) -> bool:
        return self.verdict.outcome != "drop"


@dataclass(frozen=True, slots=True)
class GateResult:
    """A step's decisions (priority order), the confirmations to send, the profile after."""

    decisions: list[GateDecision]
    confirmations: list[GateDecision]
    profile: Profile | None
    """The profile with admitted messages and confirmation requests recorded
    (the same object when nothing changed)."""


def decide(
    policy: PolicyDocument,
    profile: Profile | None,
    effect: SendEffect,
    now: datetime,
    earlier: Sequence[GateDecision] = (),
) -> GateDecision:
    """The verdict on ``effect`` for ``profile`` at ``now``.

    ``earlier``: decisions already taken in the same step (caps count the
    admitted ones, and a cap they fill names them).
    """
    checks: list[PolicyCheck] = []

    def drop(name: str, detail: str, channel: str | None = None) -> GateDecision:
        checks.append(PolicyCheck(name=name, passed=False, detail=detail, channel=channel))
        verdict = GateVerdict(outcome="drop", reason=detail, checks=tuple(checks))
        return GateDecision(effect=effect, verdict=verdict, at=now)

    if profile is None:
        return drop("profile", "profile_not_found: the message's profile no longer exists")
    promotional = effect.category == "promotional"

    def granted(name: str) -> bool | None:
        value = profile.consent.get(name)
        return None if value is None else value.granted

    if effect.topic:
        name = policy.consent.topic_prefix + effect.topic
        topic = policy.topic(effect.topic)
        state = granted(name)
        if state is False:
            return drop("topic", f"topic_unsubscribed: she unsubscribed from {effect.topic!r}")
        if state is None and topic is not None and not topic.default_subscribed:
            return drop(
                "topic",
                f"topic_not_subscribed: {effect.topic!r} is opt-in and she has not opted in",
            )
        how = "opted in" if state else "subscribed by default"
        checks.append(PolicyCheck(name="topic", passed=True, detail=f"{effect.topic}: {how}"))
    if promotional:
        marketing = policy.consent.marketing
        state = granted(marketing)
        if state is not True:
            why = "withdrawn" if state is False else "never given"
            return drop("consent", f"marketing_not_granted: {marketing!r} consent {why}")
        checks.append(PolicyCheck(name="consent", passed=True, detail=f"{marketing!r} granted"))

    channel, address, confirm = _route(policy, profile, effect, checks)
    if channel is None or address is None:
        if confirm is not None:
            detail = (
                f"contact_unconfirmed: {confirm.address} ({confirm.channel}) was only given"
                " through a browser-side key and is not confirmed"
            )
            decided = drop("contact", detail, confirm.channel)
            pending = confirm.confirmation_requested_at is None and not any(
                d.confirm is not None
                and contact_key(d.confirm.channel, d.confirm.address)
                == contact_key(confirm.channel, confirm.address)
                for d in earlier
            )
            return msgspec.structs.replace(decided, confirm=confirm if pending else None)
        return drop("route", f"no_channel: none of {', '.join(effect.channels)} can reach her")

    if not promotional:
        checks.append(
            PolicyCheck(
                name="cap",
                passed=True,
                detail="transactional: frequency caps and quiet hours do not apply",
                channel=channel,
            )
        )
        verdict = GateVerdict(
            outcome="send", channel=channel, address=address, checks=tuple(checks)
        )
        return GateDecision(effect=effect, verdict=verdict, at=now)

    zone = customer_zone(policy, profile)
    at = now
    quiet = policy.quiet_hours
    if quiet is not None and channel in quiet.channels:
        until = quiet_until(quiet, zone, now)
        if until is not None:
            at = until
            checks.append(
                PolicyCheck(
                    name="quiet_hours",
                    passed=False,
                    detail=f"quiet_hours: {quiet.start}-{quiet.end} in {zone}; deferred to"
                    f" {until.astimezone(zone).isoformat()}",
                    channel=channel,
                )
            )
        else:
            checks.append(
                PolicyCheck(
                    name="quiet_hours",
                    passed=True,
                    detail=f"outside {quiet.start}-{quiet.end} in {zone}",
                    channel=channel,
                )
            )

    step_sent = [(d, _sent(d)) for d in earlier if d.admitted]
    for cap in policy.caps:
        if not matches(cap, channel, effect.category, effect.topic):
            continue
        before = count_for_cap(cap, profile.sent, at, zone)
        winners = [d for d, s in step_sent if count_for_cap(cap, (s,), at, zone)]
        if before >= cap.max:
            return drop("cap", f"cap_reached: {cap.label()}: {before} already sent", channel)
        if before + len(winners) >= cap.max:
            names = ", ".join(
                f"{w.effect.journey_id}/{w.effect.step_id} (priority {w.effect.priority})"
                for w in winners
            )
            return drop(
                "arbitration",
                f"arbitration: {cap.label()} lets {cap.max - before} through this time;"
                f" won by {names}",
                channel,
            )
        checks.append(
            PolicyCheck(
                name="cap",
                passed=True,
                detail=f"{cap.label()}: {before + len(winners)} before this one",
                channel=channel,
            )
        )
    if at != now:
        verdict = GateVerdict(
            outcome="defer",
            channel=channel,
            address=address,
            not_before=at,
            reason=checks_reason(checks),
            checks=tuple(checks),
        )
    else:
        verdict = GateVerdict(
            outcome="send", channel=channel, address=address, checks=tuple(checks)
        )
    return GateDecision(effect=effect, verdict=verdict, at=at)


def checks_reason(checks: Sequence[PolicyCheck]) -> str:
    """The detail of the first failed check (what deferred or dropped the message)."""
    return next((c.detail for c in checks if not c.passed), "")


def _route(
    policy: PolicyDocument, profile: Profile, effect: SendEffect, checks: list[PolicyCheck]
) -> tuple[str | None, str | None, ContactPoint | None]:
    """The first channel that can take the message, its address, and the first
    untrusted address that stood in the way (for a confirmation)."""
    unconfirmed: ContactPoint | None = None
    promotional = effect.category == "promotional"
    for channel in effect.channels:
        category = policy.consent.channels.get(channel, channel)
        consent = profile.consent.get(category)
        if consent is not None and not consent.granted:
            checks.append(
                PolicyCheck(
                    name="consent",
                    passed=False,
                    detail=f"channel_blocked: {category!r} consent withdrawn",
                    channel=channel,
                )
            )
            continue
        if consent is None and channel in policy.consent.opt_in:
            checks.append(
                PolicyCheck(
                    name="consent",
                    passed=False,
                    detail=f"channel_not_opted_in: {category!r} consent never granted",
                    channel=channel,
                )
            )
            continue
        address, trait_name = _address(policy, profile, channel)
        if address is None:
            where = f"trait {trait_name!r}" if trait_name else "no address trait configured"
            checks.append(
                PolicyCheck(
                    name="route", passed=False, detail=f"no_address: {where}", channel=channel
                )
            )
            continue
        if promotional and channel in policy.confirmation.channels:
            trait = profile.traits.get(trait_name) if trait_name else None
            point = address_trust(channel, address, trait, profile.contacts)
            if point is None or not point.trusted:
                checks.append(
                    PolicyCheck(
                        name="contact",
                        passed=False,
                        detail=f"contact_unconfirmed: {address} is not confirmed",
                        channel=channel,
                    )
                )
                if unconfirmed is None and point is not None:
                    unconfirmed = point
                continue
        checks.append(
            PolicyCheck(
                name="route",
                passed=True,
                detail=f"{channel} to {address}"
                + (f" ({category!r} granted)" if consent is not None else ""),
                channel=channel,
            )
        )
        return channel, address, None
    return None, None, unconfirmed


def _address(
    policy: PolicyDocument, profile: Profile, channel: str
) -> tuple[str | None, str | None]:
    if channel == IN_APP:
        return profile.id, None
    trait_name = policy.addresses.get(channel)
    if trait_name is None:
        return None, None
    trait = profile.traits.get(trait_name)
    if trait is None or not isinstance(trait.value, str) or not trait.value.strip():
        return None, trait_name
    return trait.value.strip(), trait_name


def _sent(decision: GateDecision) -> SentMessage:
    return SentMessage(
        at=decision.at,
        channel=decision.verdict.channel or "",
        category=decision.effect.category,
        topic=decision.effect.topic,
    )


def decide_all(
    policy: PolicyDocument,
    profile: Profile | None,
    effects: Sequence[SendEffect],
    now: datetime,
) -> list[GateDecision]:
    """Decide a step's messages for one profile, highest ``priority`` first (ties: in order)."""
    ordered = sorted(enumerate(effects), key=lambda pair: (-pair[1].priority, pair[0]))
    decisions: list[GateDecision] = []
    for _, effect in ordered:
        decisions.append(decide(policy, profile, effect, now, decisions))
    return decisions


def gate_step(
    policy: PolicyDocument,
    profile: Profile | None,
    effects: Sequence[SendEffect],
    now: datetime,
) -> GateResult:
    """``decide_all``, the confirmation messages it asks for, and the profile after:
    admitted messages added to ``sent`` (pruned to the longest cap window),
    confirmation requests noted on the contact points."""
    decisions = decide_all(policy, profile, effects, now)
    if profile is None:
        return GateResult(decisions, [], None)
    admitted = [_sent(d) for d in decisions if d.admitted]
    asked = [d for d in decisions if d.confirm is not None]
    if not admitted and not asked:
        return GateResult(decisions, [], profile)
    horizon = now - history_horizon(policy)
    sent = [s for s in (*profile.sent, *admitted) if s.at > horizon]
    sent.sort(key=lambda s: s.at)
    contacts = profile.contacts
    confirmations: list[GateDecision] = []
    for decision in asked:
        assert decision.confirm is not None
        contacts = with_confirmation_requested(contacts, decision.confirm, now)
        confirmations.append(confirmation(policy, profile, decision, now))
    sent = sent[-MAX_SENT:]
    if sent == profile.sent and contacts is profile.contacts:
        # No cap keeps a history: nothing to write back.
        return GateResult(decisions, confirmations, profile)
    changed = msgspec.structs.replace(profile, sent=sent, contacts=contacts, updated_at=now)
    return GateResult(decisions, confirmations, changed)


def confirmation(
    policy: PolicyDocument, profile: Profile, asked_by: GateDecision, now: datetime
) -> GateDecision:
    """The one transactional message that asks her to confirm an address (double opt-in).

    Its idempotency key names the profile and the address: the outbox keeps
    one per address, however many promotions it stopped. Its ``data``
    holds ``confirmation: {channel, address}``; the sender renders the
    confirmation link (``rapport.channels.links.confirmation_link``) from it.
    """
    point = asked_by.confirm
    assert point is not None
    effect = asked_by.effect
    key = CONFIRMATION_KEY_PREFIX + f"{profile.id}:" + contact_key(point.channel, point.address)
    message = SendEffect(
        idempotency_key=key,
        instance_id=effect.instance_id,
        journey_id=effect.journey_id,
        version=effect.version,
        step_id=effect.step_id,
        profile_id=profile.id,
        channels=(point.channel,),
        template=policy.confirmation.template,
        category="transactional",
        data={"confirmation": {"channel": point.channel, "address": point.address}},
        priority=effect.priority,
        trigger_message_id=effect.trigger_message_id,
    )
    check = PolicyCheck(
        name="contact",
        passed=True,
        detail=f"confirmation of {point.address} asked by {effect.idempotency_key}",
        channel=point.channel,
    )
    verdict = GateVerdict(
        outcome="send", channel=point.channel, address=point.address, checks=(check,)
    )
    return GateDecision(effect=message, verdict=verdict, at=now)
