"""Identity resolution: which profile an event belongs to.

An event *claims* identifiers — its ``userId``, ``anonymousId``, identifier
traits such as ``email`` and, for ``alias``, the ``previousId`` — as belonging
to one person. ``resolve`` decides, from the current owners of those
identifiers, where the event goes, which new identifiers attach to that
profile, which profiles merge into it, and which claims are refused and why.
It is a pure decision: the runtime loads the owners and profiles before and
commits the outcome after.

The rules that keep the graph from collapsing into super-profiles:

* two different user ids never share a profile, so profiles that each hold one
  never merge; the event goes to its ``userId``'s profile and a conflicting
  identifier stays with its owner;
* each identifier type has a cap per profile; an attachment or a merge that
  would exceed it is refused;
* junk values (``"null"``, ``"undefined"``, all-zero UUIDs, ...) are never
  identifiers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final, Literal

import msgspec

from rapport.core.model import Event, Identifier, MergeRecord, Profile

USER_ID: Final = "user_id"
ANONYMOUS_ID: Final = "anonymous_id"

DEFAULT_IDENTIFIER_TRAITS: Final[Mapping[str, str]] = {"email": "email", "phone": "phone"}
"""Trait name -> identifier type."""

DEFAULT_CAPS: Final[Mapping[str, int]] = {USER_ID: 1, "email": 5, "phone": 5, ANONYMOUS_ID: 100}
"""Most identifiers of a type one profile may hold; other types get ``default_cap``."""

JUNK_VALUES: Final[frozenset[str]] = frozenset(
    {
        # Empty and the spellings of "no value" that SDKs and templates leak.
        "",
        "null",
        "undefined",
        "none",
        "nil",
        "nan",
        "true",
        "false",
        "[object object]",
        "{}",
        "[]",
        # Placeholders shared by everyone who has not told us who they are.
        "0",
        "-1",
        "anonymous",
        "unknown",
        "n/a",
        "guest",
        "test",
        "00000000-0000-0000-0000-000000000000",
    }
)
"""Values (compared after ``strip().casefold()``) that are never identifiers:
each of them is sent by many different people, so trusting one would merge
strangers into one profile."""

_EMAIL_SHAPE: Final = re.compile(r"[^\s@]+@[^\s@]+")
"""One ``@`` between a non-empty local part and domain, no whitespace: deliberately
loose, since the identity graph needs a stable key, not RFC 5322 validation."""

RefusalReason = Literal["junk", "invalid", "conflicting_user_id", "cap_reached"]


class IdentityRules(msgspec.Struct, frozen=True, kw_only=True):
    """How events map to identifiers, and the limits of one profile."""

    identifier_traits: dict[str, str] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_IDENTIFIER_TRAITS)
    )
    """Trait name -> identifier type, e.g. ``{"loyalty_id": "loyalty_id"}``."""
    caps: dict[str, int] = msgspec.field(default_factory=lambda: dict(DEFAULT_CAPS))
    """Overrides of ``DEFAULT_CAPS`` per identifier type."""
    default_cap: int = 10
    junk_values: frozenset[str] = JUNK_VALUES
    max_value_length: int = 512
    """Longer values are refused as invalid: no real identifier is that long."""

    def __post_init__(self) -> None:
        if self.cap(USER_ID) != 1:
            raise ValueError("the user_id cap must be 1: two user ids never share a profile")
        for id_type, cap in self.caps.items():
            if cap < 1:
                raise ValueError(f"identifier cap for {id_type!r} must be at least 1")
        if self.default_cap < 1:
            raise ValueError("default_cap must be at least 1")
        bad = sorted(v for v in self.junk_values if v != v.strip().casefold())
        if bad:
            raise ValueError(f"junk values must be stripped and lower-case: {bad}")

    @classmethod
    def from_config(
        cls, *, identifier_traits: Mapping[str, str], caps: Mapping[str, int]
    ) -> IdentityRules:
        """Rules from settings: the trait map replaces the default, caps override it."""
        return cls(identifier_traits=dict(identifier_traits), caps={**DEFAULT_CAPS, **caps})

    def cap(self, id_type: str) -> int:
        found = self.caps.get(id_type)
        if found is not None:
            return found
        return DEFAULT_CAPS.get(id_type, self.default_cap)

    def is_junk(self, value: str) -> bool:
        return value.strip().casefold() in self.junk_values


class Refusal(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A claimed identifier that was not attached, and why."""

    identifier: Identifier
    reason: RefusalReason
    owner: str | None = None
    """The profile the identifier stays with, when it has one."""


class EventClaims(msgspec.Struct, frozen=True, kw_only=True):
    """What one event says about identity, ready for ``resolve``."""

    workspace_id: str
    message_id: str
    event_type: str
    identifiers: tuple[Identifier, ...]
    """Valid, distinct, in priority order: ``userId`` first."""
    refused: tuple[Refusal, ...] = ()
    profile_id: str | None = None
    """The live profile an internal event addresses directly, if any."""


class Resolution(msgspec.Struct, frozen=True, kw_only=True):
    """Where an event goes and what it changes in the identity graph."""

    profile_id: str
    created: bool
    """True when ``profile_id`` is a new profile."""
    attached: tuple[Identifier, ...]
    """Identifiers that now belong to ``profile_id`` and did not before."""
    merges: tuple[MergeRecord, ...]
    """Profiles merged into ``profile_id``, in the order to apply them."""
    refused: tuple[Refusal, ...]


# -- normalisation -------------------------------------------------------------


def normalize_value(id_type: str, value: str) -> str:
    """The canonical spelling of an identifier value (no validity check)."""
    value = value.strip()
    if id_type == "email":
        return value.casefold()
    if id_type == "phone":
        digits = "".join(ch for ch in value if ch.isdigit() and ch.isascii())
        return f"+{digits}" if value.startswith("+") else digits
    return value


def normalize_identifier(identifier: Identifier, rules: IdentityRules) -> Identifier:
    """``identifier`` spelled as it is stored, for lookups (e.g. the admin API).

    A value that can never be an identifier (junk, malformed) comes back in
    its cleaned-up spelling, which matches nothing in the graph.
    """
    parsed = parse_identifier(identifier.type, identifier.value, rules)
    return parsed if isinstance(parsed, Identifier) else parsed.identifier


def parse_identifier(id_type: str, raw: Any, rules: IdentityRules) -> Identifier | Refusal:
    """A claimed raw value as an identifier, or the reason it is not one."""
    if type(raw) is str:
        text: str = raw
    elif isinstance(raw, int) and not isinstance(raw, bool):
        text = str(raw)
    else:
        shown = msgspec.json.encode(raw).decode()[: rules.max_value_length]
        return Refusal(identifier=Identifier(id_type, shown), reason="invalid")
    stripped = text.strip()
    if stripped.casefold() in rules.junk_values:
        return Refusal(identifier=Identifier(id_type, stripped), reason="junk")
    value = normalize_value(id_type, stripped)
    if len(value) > rules.max_value_length or not _well_formed(id_type, value):
        return Refusal(
            identifier=Identifier(id_type, value[: rules.max_value_length]), reason="invalid"
        )
    # Normalising can reveal junk (a phone "(000)" becomes "000").
    if value != stripped and value.casefold() in rules.junk_values:
        return Refusal(identifier=Identifier(id_type, value), reason="junk")
    return Identifier(id_type, value)


def _well_formed(id_type: str, value: str) -> bool:
    if not value:
        return False
    if id_type == "email":
        return _EMAIL_SHAPE.fullmatch(value) is not None
    if id_type == "phone":
        digits = value.lstrip("+")
        # "0000000" and friends are placeholders typed into required fields.
        return len(digits) >= 3 and len(set(digits)) > 1
    return True


# -- extraction ----------------------------------------------------------------


def scan_identifiers(event: Event, rules: IdentityRules) -> EventClaims:
    """The identifiers an event carries itself (``previousId`` aside), and refusals."""
    found: list[Identifier] = []
    refused: list[Refusal] = []

    def claim(id_type: str, raw: Any) -> None:
        parsed = parse_identifier(id_type, raw, rules)
        if isinstance(parsed, Refusal):
            refused.append(parsed)
        elif parsed not in found:
            found.append(parsed)

    if event.user_id is not None:
        claim(USER_ID, event.user_id)
    if event.anonymous_id is not None:
        claim(ANONYMOUS_ID, event.anonymous_id)
    for traits in _person_trait_sources(event):
        for trait, id_type in rules.identifier_traits.items():
            if trait in traits and traits[trait] is not None:
                claim(id_type, traits[trait])
    return EventClaims(
        workspace_id=event.workspace_id,
        message_id=event.message_id,
        event_type=event.type,
        identifiers=tuple(found),
        refused=tuple(refused),
        profile_id=event.profile_id,
    )


def extract_identifiers(event: Event, rules: IdentityRules) -> list[Identifier]:
    """The valid identifiers an event carries: userId, anonymousId, identifier traits."""
    return list(scan_identifiers(event, rules).identifiers)


def alias_candidates(event: Event, rules: IdentityRules) -> list[Identifier]:
    """What an alias's ``previousId`` may name: a user id or an anonymous id.

    The runtime looks both up; ``event_claims`` keeps the ones that are known.
    """
    if event.type != "alias" or event.previous_id is None:
        return []
    out: list[Identifier] = []
    for id_type in (USER_ID, ANONYMOUS_ID):
        parsed = parse_identifier(id_type, event.previous_id, rules)
        if isinstance(parsed, Identifier):
            out.append(parsed)
    return out


def event_claims(
    event: Event, rules: IdentityRules, owners: Mapping[Identifier, str]
) -> EventClaims:
    """All identifiers an event claims, given what the graph already knows."""
    return add_alias_claims(scan_identifiers(event, rules), event, rules, owners)


def add_alias_claims(
    claims: EventClaims, event: Event, rules: IdentityRules, owners: Mapping[Identifier, str]
) -> EventClaims:
    """``claims`` (from ``scan_identifiers``) plus what an alias's ``previousId`` names.

    ``previousId`` counts as whichever of user id / anonymous id is already
    known; an unknown ``previousId`` is taken as an anonymous id (what
    Segment's ``alias`` is normally used for).
    """
    if event.type != "alias" or event.previous_id is None:
        return claims
    candidates = alias_candidates(event, rules)
    if not candidates:
        junk = parse_identifier(ANONYMOUS_ID, event.previous_id, rules)
        refusals = (junk,) if isinstance(junk, Refusal) else ()
        return msgspec.structs.replace(claims, refused=claims.refused + refusals)
    known = [c for c in candidates if c in owners]
    extra = known or [c for c in candidates if c.type == ANONYMOUS_ID]
    identifiers = claims.identifiers + tuple(c for c in extra if c not in claims.identifiers)
    return msgspec.structs.replace(claims, identifiers=identifiers)


def _person_trait_sources(event: Event) -> Iterable[Mapping[str, Any]]:
    """Trait maps that describe the person (a group's traits describe the group)."""
    context_traits = event.context.get("traits")
    if isinstance(context_traits, dict):
        yield context_traits
    if event.type == "identify":
        yield event.traits


# -- resolution ----------------------------------------------------------------


def _user_ids(profile: Profile) -> set[str]:
    return {i.value for i in profile.identifiers if i.type == USER_ID}


def _priority(profile: Profile) -> tuple[int, datetime, str]:
    """Sort key of merge winners: a user id holder, then the oldest, then by id."""
    return (0 if _user_ids(profile) else 1, profile.created_at, profile.id)


class _Target:
    """The profile being assembled: what it will hold, to check caps and conflicts."""

    def __init__(self, profile: Profile | None, rules: IdentityRules) -> None:
        self.rules = rules
        held = profile.identifiers if profile is not None else []
        self.counts: Counter[str] = Counter(i.type for i in held)
        self.user_ids: set[str] = {i.value for i in held if i.type == USER_ID}

    def refuse_merge(self, loser: Profile) -> RefusalReason | None:
        loser_counts = Counter(i.type for i in loser.identifiers)
        if self.user_ids and loser_counts[USER_ID]:
            return "conflicting_user_id"
        for id_type, n in loser_counts.items():
            if self.counts[id_type] + n > self.rules.cap(id_type):
                return "cap_reached"
        return None

    def refuse_attach(self, identifier: Identifier) -> RefusalReason | None:
        if identifier.type == USER_ID and self.user_ids:
            return "conflicting_user_id"
        if self.counts[identifier.type] >= self.rules.cap(identifier.type):
            return "cap_reached"
        return None

    def take(self, identifiers: Iterable[Identifier]) -> None:
        for identifier in identifiers:
            self.counts[identifier.type] += 1
            if identifier.type == USER_ID:
                self.user_ids.add(identifier.value)


def resolve(
    claims: EventClaims,
    owners: Mapping[Identifier, str],
    profiles: Mapping[str, Profile],
    rules: IdentityRules,
    now: datetime,
    new_profile_id: Callable[[], str],
) -> Resolution:
    """Decide which profile the event belongs to and what it changes.

    ``owners`` maps known identifiers to live profile ids and ``profiles``
    holds those profiles (an owner missing from ``profiles`` is treated as
    unknown, so the identifier is re-attached). ``new_profile_id`` is called
    only when a new profile is needed.
    """
    fast = _already_settled(claims, owners, profiles)
    if fast is not None:
        return Resolution(profile_id=fast, created=False, attached=(), merges=(), refused=())
    owned: dict[Identifier, str] = {
        i: owners[i] for i in claims.identifiers if i in owners and owners[i] in profiles
    }
    candidates: list[Profile] = []
    for owner in dict.fromkeys(owned.values()):
        candidates.append(profiles[owner])
    primary = next((i for i in claims.identifiers if i.type == USER_ID), None)
    addressed = profiles.get(claims.profile_id) if claims.profile_id is not None else None

    winner = _choose_winner(primary, owned, profiles, candidates, addressed, rules)
    target = _Target(winner, rules)
    attached: list[Identifier] = []
    refused: list[Refusal] = list(claims.refused)
    merges: list[MergeRecord] = []
    winner_id = winner.id if winner is not None else new_profile_id()

    # The event's own userId attaches before merges are weighed, so a
    # profile holding another user id can never be merged in through it.
    if primary is not None and primary not in owned:
        reason = target.refuse_attach(primary)
        if reason is None:
            target.take([primary])
            attached.append(primary)
        else:
            refused.append(Refusal(identifier=primary, reason=reason))

    losers = [p for p in candidates if p.id != winner_id]
    if addressed is not None and addressed.id != winner_id and addressed.id not in owned.values():
        losers.append(addressed)
    # The addressed profile goes first: the event must land where it points.
    losers.sort(key=lambda p: (p is not addressed, _priority(p)))
    for loser in losers:
        linked = [i for i in claims.identifiers if owned.get(i) == loser.id]
        reason = target.refuse_merge(loser)
        if reason is not None:
            refused.extend(Refusal(identifier=i, reason=reason, owner=loser.id) for i in linked)
            continue
        target.take(loser.identifiers)
        why = (
            f"{claims.event_type} linked {linked[0]}"
            if linked
            else f"{claims.event_type} addressed {loser.id} directly"
        )
        merges.append(
            MergeRecord(
                workspace_id=claims.workspace_id,
                winner=winner_id,
                loser=loser.id,
                merged_at=now,
                reason=why,
                message_id=claims.message_id,
            )
        )

    for identifier in claims.identifiers:
        if identifier in owned or identifier == primary:
            continue
        reason = target.refuse_attach(identifier)
        if reason is None:
            target.take([identifier])
            attached.append(identifier)
        else:
            refused.append(Refusal(identifier=identifier, reason=reason))

    return Resolution(
        profile_id=winner_id,
        created=winner is None,
        attached=tuple(attached),
        merges=tuple(merges),
        refused=tuple(refused),
    )


def _already_settled(
    claims: EventClaims, owners: Mapping[Identifier, str], profiles: Mapping[str, Profile]
) -> str | None:
    """The owner when every claim already belongs to the same known profile.

    This is the common case (a returning customer) and needs no further work.
    """
    if claims.refused or claims.profile_id is not None or not claims.identifiers:
        return None
    owner = owners.get(claims.identifiers[0])
    if owner is None or owner not in profiles:
        return None
    for identifier in claims.identifiers[1:]:
        if owners.get(identifier) != owner:
            return None
    return owner


def _choose_winner(
    primary: Identifier | None,
    owned: Mapping[Identifier, str],
    profiles: Mapping[str, Profile],
    candidates: list[Profile],
    addressed: Profile | None,
    rules: IdentityRules,
) -> Profile | None:
    """The profile the event lands on; ``None`` means a new one."""
    if primary is not None and primary in owned:
        return profiles[owned[primary]]
    pool = list(candidates)
    if addressed is not None and addressed not in pool:
        pool.append(addressed)
    if primary is not None:
        # The userId is new: only profiles without a user id can take it.
        pool = [p for p in pool if not _user_ids(p)]
        if addressed is not None and _user_ids(addressed):
            return addressed
    if not pool:
        return None
    best = min(pool, key=_priority)
    # The addressed profile must end up where the event lands: if it cannot
    # merge into the best candidate, the event stays on it.
    if (
        addressed is not None
        and best.id != addressed.id
        and _Target(best, rules).refuse_merge(addressed) is not None
    ):
        return addressed
    return best
