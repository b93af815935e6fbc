"""Static segments: uploaded lists of customers, beside the segments computed from a condition.

A static segment (``kind: "static"``) has no condition: its members are the
customers someone uploaded (``POST /api/segments/{id}/members``). An upload
is not applied where it is received. Each entry becomes an internal event in
the event log (source ``rapport:static-segments``), so it is durable once
accepted and is then processed like every other change of a profile: in the
profile's order, by the one writer of profiles (the processor), its
``Segment Entered`` / ``Segment Exited`` events going out through the outbox
exactly like those of dynamic segments.

The event carries its identifier where customer events do (``userId``,
``anonymousId``, or the identifier trait in ``context.traits``), so the
processor finds and loads its owner like any other event's
(``identity.scan_identifiers``); the identifier is also in its properties,
with the segment, the definition version, the action and the upload id.
``apply_upload`` then does what the entry says:

* ``add``: the identifier's profile (an unknown identifier creates it, as an
  import would) enters the list under the definition's current version; the
  segments reading the list (``in_segment``) are evaluated at once, and a
  new profile against every segment.
* ``remove``: the owner leaves the list; an unknown identifier changes
  nothing and creates nothing, nor does a remove whose list was deleted
  since (its members leave it anyway; the id may now name another segment).

An upload is not the customer's activity: no trait is applied, ``last_seen``
and ``event_count`` stay, no aggregate counts it. An ``add`` that finds its
segment deleted, created again since the upload, or not static is refused
with a message the runtime records as a rejection.

Memberships of static segments are kept by streaming evaluation
(``SegmentCatalog.keeps``): only the uploads change them, a delete of the
definition makes members leave, and when profiles merge the merged profile
stays on the lists the absorbed one was on (``carry_static_memberships``):
a list names a person, whichever profile id ends up holding them.

Message ids derive from the segment, version, action, identifier and upload
id: an upload retried with the same upload id (the request's
``Idempotency-Key``) appends nothing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import msgspec

from rapport.core.identity import (
    ANONYMOUS_ID,
    USER_ID,
    EventClaims,
    IdentityRules,
    Refusal,
    parse_identifier,
)
from rapport.core.model import Event, Identifier, Membership, Profile
from rapport.core.profiles import attach_identifiers, new_profile
from rapport.core.segments import MembershipChange, SegmentCatalog, reevaluate_segments

STATIC_SEGMENT_SOURCE: Final = "rapport:static-segments"
MEMBER_ADDED: Final = "Static Segment Member Added"
MEMBER_REMOVED: Final = "Static Segment Member Removed"
ADD: Final = "add"
REMOVE: Final = "remove"
ACTIONS: Final = (ADD, REMOVE)
MAX_UPLOAD_ENTRIES: Final = 10_000
"""Entries (``add`` and ``remove`` together) one upload request may hold."""
MESSAGE_ID_PREFIX: Final = "static-segment:"


class InvalidUpload(ValueError):
    """An event of the static-segments source whose properties are not an upload."""


class StaticUpload(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of an upload: what its event's properties say."""

    segment_id: str
    version: int
    """The definition version when the upload was accepted."""
    action: str
    identifier: Identifier
    upload_id: str


@dataclass(frozen=True, slots=True)
class EntryError:
    """Why an uploaded entry is not an identifier."""

    path: str
    """Where inside the entry: ``""`` (the entry itself), ``.type``, ``.value``, ``.<field>``."""
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    """What processing one upload event does."""

    profile: Profile | None = None
    """The profile after the entry; ``None`` when it touches no profile."""
    attached: tuple[Identifier, ...] = ()
    """Identifiers now owned by ``profile`` (a profile the entry created)."""
    changes: list[MembershipChange] = field(default_factory=list)
    refused: str | None = None
    """Why the entry cannot be applied (recorded as a rejection)."""


# -- accepting an upload -------------------------------------------------------


def upload_types(rules: IdentityRules) -> list[str]:
    """The identifier types an entry may name: those events carry, sorted.

    ``user_id``, ``anonymous_id`` and the types of the workspace's identifier
    traits (``email``, ``phone``, ...): the identifiers a customer's own
    events can claim, so an uploaded one meets the same profile.
    """
    return sorted({USER_ID, ANONYMOUS_ID, *rules.identifier_traits.values()})


def parse_entry(raw: Any, rules: IdentityRules) -> Identifier | EntryError:
    """An uploaded entry (``{"type", "value"}`` or ``"type:value"``) as a normalised identifier."""
    if isinstance(raw, str):
        id_type, sep, value = raw.partition(":")
        if not sep or not id_type or not value:
            return EntryError("", "invalid_entry", _ENTRY_SHAPE)
        return _identifier(id_type, value, rules, type_path="", value_path="")
    if isinstance(raw, dict):
        for name in sorted(raw):
            if name not in ("type", "value"):
                return EntryError(
                    f".{name[:100]}", "unknown_field", f"unknown field {name[:100]!r}"
                )
        given_type = raw.get("type")
        if not isinstance(given_type, str) or not given_type:
            return EntryError(".type", "invalid_identifier_type", "type must be a non-empty string")
        if raw.get("value") is None:
            return EntryError(".value", "invalid_identifier", "value is required")
        return _identifier(given_type, raw["value"], rules, type_path=".type", value_path=".value")
    return EntryError("", "invalid_entry", _ENTRY_SHAPE)


_ENTRY_SHAPE: Final = 'an entry is {"type": ..., "value": ...} or "type:value"'


def _identifier(
    id_type: str, raw: Any, rules: IdentityRules, *, type_path: str, value_path: str
) -> Identifier | EntryError:
    types = upload_types(rules)
    if id_type not in types:
        return EntryError(
            type_path,
            "unknown_identifier_type",
            f"{id_type[:100]!r} is not an identifier type; use one of {', '.join(types)}",
        )
    parsed = parse_identifier(id_type, raw, rules)
    if isinstance(parsed, Refusal):
        why = (
            "is a placeholder value, never an identifier"
            if parsed.reason == "junk"
            else f"is not a valid {id_type}"
        )
        return EntryError(value_path, "invalid_identifier", f"{parsed.identifier} {why}")
    return parsed


def upload_message_id(upload: StaticUpload) -> str:
    """The entry's message id: the same entry of the same upload always gets the same one."""
    key = msgspec.json.encode(
        [
            upload.segment_id,
            upload.version,
            upload.action,
            upload.identifier.type,
            upload.identifier.value,
            upload.upload_id,
        ]
    )
    return MESSAGE_ID_PREFIX + hashlib.sha256(key).hexdigest()


def upload_event(
    workspace_id: str,
    upload: StaticUpload,
    rules: IdentityRules,
    now: datetime,
    uploaded_by: str,
) -> Event:
    """The internal event of one entry, its identifier where ``scan_identifiers`` finds it."""
    identifier = upload.identifier
    where: dict[str, Any] = {}
    if identifier.type == USER_ID:
        where["user_id"] = identifier.value
    elif identifier.type == ANONYMOUS_ID:
        where["anonymous_id"] = identifier.value
    else:
        traits = sorted(
            t for t, id_type in rules.identifier_traits.items() if id_type == identifier.type
        )
        if not traits:
            raise ValueError(f"{identifier.type!r} is not an identifier type events carry")
        where["context"] = {"traits": {traits[0]: identifier.value}}
    return Event(
        workspace_id=workspace_id,
        message_id=upload_message_id(upload),
        type="track",
        event=MEMBER_ADDED if upload.action == ADD else MEMBER_REMOVED,
        timestamp=now,
        received_at=now,
        source=STATIC_SEGMENT_SOURCE,
        properties={
            "segment_id": upload.segment_id,
            "version": upload.version,
            "action": upload.action,
            "identifier": {"type": identifier.type, "value": identifier.value},
            "upload_id": upload.upload_id,
            "uploaded_by": uploaded_by,
        },
        **where,
    )


# -- processing an upload ------------------------------------------------------


def read_upload(event: Event) -> StaticUpload:
    """The entry an upload event records; ``InvalidUpload`` if its properties are not one."""
    try:
        upload = msgspec.convert(event.properties, StaticUpload)
    except msgspec.ValidationError as exc:
        raise InvalidUpload(f"not a static segment upload: {exc}") from None
    if upload.action not in ACTIONS:
        raise InvalidUpload(f"unknown upload action {upload.action!r}")
    return upload


def apply_upload(
    catalog: SegmentCatalog,
    event: Event,
    claims: EventClaims,
    owners: Mapping[Identifier, str],
    profiles: Mapping[str, Profile],
    now: datetime,
    new_profile_id: Callable[[], str],
) -> UploadOutcome:
    """Apply one upload event (``claims`` from ``scan_identifiers``) to its profile.

    ``owners`` and ``profiles`` are the working set, as for ``identity.resolve``;
    with one identifier and no addressed profile there is nothing to merge,
    so resolution is a lookup: the owner, or a new profile for an ``add``.
    An owner missing from ``profiles`` counts as unknown, as in ``resolve``.
    """
    upload = read_upload(event)
    identifier = upload.identifier
    segment_id = upload.segment_id
    if identifier not in claims.identifiers:
        return UploadOutcome(
            refused=f"{identifier} is not an identifier under the workspace's identity rules"
        )
    owner = owners.get(identifier)
    known = profiles.get(owner) if owner is not None else None
    if upload.action == REMOVE:
        if known is None:
            return UploadOutcome()
        current = known.segments.get(segment_id)
        if current is None or _unavailable(catalog, upload, event) is not None:
            # Not on the list; or the list it named is gone (its members
            # leave it anyway) and the id may now be another segment.
            return UploadOutcome(profile=known)
        members = dict(known.segments)
        del members[segment_id]
        left = msgspec.structs.replace(known, segments=members)
        return _with_readers(
            catalog, left, [MembershipChange(segment_id, current.version, False)], (), now
        )
    refused = _unavailable(catalog, upload, event)
    if refused is not None:
        return UploadOutcome(refused=refused)
    definition = catalog.static[segment_id]
    attached: tuple[Identifier, ...] = ()
    if known is None:
        attached = (identifier,)
        profile = new_profile(new_profile_id(), event.workspace_id, now)
        profile = attach_identifiers(profile, attached, now)
    else:
        profile = known
    current = profile.segments.get(segment_id)
    if current is not None and catalog.keeps(segment_id, current):
        return UploadOutcome(profile=profile, attached=attached)
    changes: list[MembershipChange] = []
    members = dict(profile.segments)
    if current is not None:
        # It entered an earlier segment of this id (deleted, then created again).
        changes.append(MembershipChange(segment_id, current.version, False))
    members[segment_id] = _membership(catalog, segment_id, now)
    changes.append(MembershipChange(segment_id, definition.version, True))
    profile = msgspec.structs.replace(profile, segments=members)
    return _with_readers(catalog, profile, changes, attached, now, everything=known is None)


def carry_static_memberships(
    catalog: SegmentCatalog, winner: Profile, losers: Iterable[Profile], now: datetime
) -> tuple[Profile, list[MembershipChange]]:
    """``winner`` (once it absorbed ``losers``) on the static lists they were on.

    The absorbed profiles leave every segment (the runtime emits their
    exits); the merged profile enters, under its own id, the lists it was
    not on yet. Its dynamic segments are evaluated afterwards, as after
    every merge, which also evaluates the segments reading these lists.
    """
    members = winner.segments
    changes: list[MembershipChange] = []
    for loser in losers:
        for segment_id, membership in sorted(loser.segments.items()):
            definition = catalog.static.get(segment_id)
            if (
                definition is None
                or segment_id in members
                or not catalog.keeps(segment_id, membership)
            ):
                continue
            if not changes:
                members = dict(members)
            members[segment_id] = _membership(catalog, segment_id, now)
            changes.append(MembershipChange(segment_id, definition.version, True))
    if not changes:
        return winner, []
    return msgspec.structs.replace(winner, segments=members), changes


def _unavailable(catalog: SegmentCatalog, upload: StaticUpload, event: Event) -> str | None:
    """Why the entry's list is not there to change any more, if it is not."""
    segment_id = upload.segment_id
    definition = catalog.static.get(segment_id)
    if definition is None:
        if segment_id in catalog.versions or segment_id in catalog.invalid:
            return f"segment {segment_id!r} is not a static segment: members cannot be added"
        return f"static segment {segment_id!r} no longer exists: it was deleted after the upload"
    if event.timestamp < definition.created_at:
        return (
            f"static segment {segment_id!r} was deleted and created again after the upload"
            f" (version {upload.version}); upload to the new segment"
        )
    return None


def _membership(catalog: SegmentCatalog, segment_id: str, now: datetime) -> Membership:
    """A new membership of a static segment, recorded under its current version.

    Never dated before the segment's (re)creation, whatever the clocks of
    the API and the processor say: ``keeps`` tells members of an earlier
    segment of the same id by that date.
    """
    definition = catalog.static[segment_id]
    return Membership(version=definition.version, entered_at=max(now, definition.created_at))


def _with_readers(
    catalog: SegmentCatalog,
    profile: Profile,
    changes: list[MembershipChange],
    attached: tuple[Identifier, ...],
    now: datetime,
    *,
    everything: bool = False,
) -> UploadOutcome:
    """The outcome once the segments reading the changed list (all, for a new profile) followed."""
    if everything:
        positions: Iterable[int] = range(len(catalog.segments))
    else:
        positions = sorted(catalog.readers.get(changes[-1].segment_id, ()))
    segment_ids = [catalog.segments[position].definition.id for position in positions]
    profile, followed = reevaluate_segments(catalog, profile, segment_ids, now)
    return UploadOutcome(profile=profile, attached=attached, changes=changes + followed)
