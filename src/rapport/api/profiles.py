"""Admin API for profiles: look up, read the timeline and segment history, patch traits.

Profiles are addressed as ``{type}:{value}`` — any identifier (``email:dana@x.com``,
``user_id:42``, ``loyalty_id:L-7``) or ``id:<profile id>``. An identifier or
profile id that was merged away still resolves to the surviving profile.

A profile's current segment memberships are part of the profile (``segments``,
committed with it); their history (``/segments/history``) comes from the
membership index (``rapport.runtime.memberships``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from rapport.api.auth import get_rapport, require_secret_key
from rapport.api.computed_traits import refuse_computed_traits
from rapport.api.errors import ApiError
from rapport.core.identity import normalize_identifier
from rapport.core.model import Event, Identifier, Profile
from rapport.runtime.service import Rapport
from rapport.storage.base import ApiKey

router = APIRouter(prefix="/api/profiles", tags=["profiles"])

_EVENT_DECODER = msgspec.json.Decoder(Event)
_ENCODER = msgspec.json.Encoder()
MAX_TRAITS_PER_PATCH = 200
MAX_TRAIT_NAME = 255
PROCESSING_WAIT_SECONDS = 10.0


def json_response(body: Any, status: int = 200) -> Response:
    return Response(_ENCODER.encode(body), status_code=status, media_type="application/json")


def parse_ref(ref: str) -> Identifier:
    kind, sep, value = ref.partition(":")
    if not sep or not kind or not value:
        raise ApiError(
            400,
            "invalid_profile_ref",
            "Address a profile as {type}:{value}, e.g. email:dana@example.com or id:prof_1",
            field="ref",
        )
    return Identifier(kind, value)


async def resolve_profile(rapport: Rapport, workspace_id: str, ref: str) -> Profile:
    ident = parse_ref(ref)
    if ident.type == "id":
        profile_id = await rapport.storage.resolve_profile_id(workspace_id, ident.value)
    else:
        normalized = normalize_identifier(ident, rapport.rules)
        owners = await rapport.storage.find_profile_ids(workspace_id, [normalized])
        found = owners.get(normalized)
        profile_id = (
            await rapport.storage.resolve_profile_id(workspace_id, found) if found else None
        )
    if profile_id is not None:
        profiles = await rapport.storage.load_profiles(workspace_id, [profile_id])
        if profile_id in profiles:
            return profiles[profile_id]
    raise ApiError(404, "profile_not_found", f"No profile for {ref}", field="ref")


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def profile_body(rapport: Rapport, profile: Profile) -> dict[str, Any]:
    merges = await rapport.storage.list_merges(profile.workspace_id, profile.id)
    return {
        "id": profile.id,
        "workspace_id": profile.workspace_id,
        "identifiers": [{"type": i.type, "value": i.value} for i in profile.identifiers],
        "traits": {
            name: msgspec.to_builtins(trait) for name, trait in sorted(profile.traits.items())
        },
        "consent": {name: msgspec.to_builtins(c) for name, c in sorted(profile.consent.items())},
        "merged_from": list(profile.merged_from),
        "merges": [
            {
                "loser": m.loser,
                "merged_at": _time(m.merged_at),
                "reason": m.reason,
                "message_id": m.message_id,
            }
            for m in merges
        ],
        "created_at": _time(profile.created_at),
        "updated_at": _time(profile.updated_at),
        "first_seen": _time(profile.first_seen),
        "last_seen": _time(profile.last_seen),
        "event_count": profile.event_count,
        "segments": {
            segment_id: {"version": m.version, "entered_at": _time(m.entered_at)}
            for segment_id, m in sorted(profile.segments.items())
        },
    }


@router.get("/{ref:path}/events", summary="A profile's events, newest first")
async def get_profile_events(
    ref: str,
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    before: int | None = Query(None, ge=1, description="`next_before` from the previous page"),
    key: ApiKey = Depends(require_secret_key),
) -> Response:
    rapport = get_rapport(request)
    profile = await resolve_profile(rapport, key.workspace_id, ref)
    page = await rapport.storage.list_profile_events(
        key.workspace_id, profile.id, limit=limit, before=before
    )
    events = []
    for stored in page.events:
        body = msgspec.to_builtins(_EVENT_DECODER.decode(stored.body))
        body["offset"] = stored.offset
        events.append(body)
    return json_response(
        {"profile_id": profile.id, "events": events, "next_before": page.next_before}
    )


@router.patch(
    "/{ref:path}/traits",
    summary="Set traits on a profile (e.g. an agent tagging a customer)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["traits"],
                        "properties": {"traits": {"type": "object", "additionalProperties": True}},
                    },
                    "example": {"traits": {"inconvenienced": True}},
                }
            },
        }
    },
)
async def patch_profile_traits(
    ref: str, request: Request, key: ApiKey = Depends(require_secret_key)
) -> Response:
    """Writes go through the event log like every other change, so they keep
    per-profile order and provenance (source ``admin:<key id>``); the answer
    comes once the change is processed. Send an ``Idempotency-Key`` header to
    make retries safe."""
    rapport = get_rapport(request)
    raw = await request.body()
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"Body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("traits"), dict):
        raise ApiError(422, "invalid_traits", 'Body must be {"traits": {...}}', field="traits")
    traits: dict[str, Any] = body["traits"]
    if not traits:
        raise ApiError(422, "invalid_traits", "traits must not be empty", field="traits")
    if len(traits) > MAX_TRAITS_PER_PATCH:
        raise ApiError(
            422, "invalid_traits", f"at most {MAX_TRAITS_PER_PATCH} traits at once", field="traits"
        )
    for name in traits:
        if not name.strip() or len(name) > MAX_TRAIT_NAME:
            raise ApiError(
                422,
                "invalid_trait_name",
                f"trait names must be 1-{MAX_TRAIT_NAME} characters",
                field=f"traits.{name}",
            )
    await refuse_computed_traits(rapport, key.workspace_id, traits)
    idempotency_key = request.headers.get("idempotency-key", "").strip()
    if len(idempotency_key) > 99:
        raise ApiError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be < 100 characters",
            field="Idempotency-Key",
        )
    profile = await resolve_profile(rapport, key.workspace_id, ref)
    now = rapport.clock.now()
    event = Event(
        workspace_id=key.workspace_id,
        message_id=f"admin-{idempotency_key}" if idempotency_key else rapport.ids.new_id("adm"),
        type="identify",
        timestamp=now,
        received_at=now,
        source=f"admin:{key.id}",
        traits=traits,
        profile_id=profile.id,
    )
    await rapport.event_log.append([event])
    rapport.processor.notify()
    end = await rapport.event_log.end_offset()
    if not await rapport.processor.wait_processed(end, PROCESSING_WAIT_SECONDS):
        # Accepted and durable, just not processed yet: say so honestly.
        return json_response({"status": "accepted", "message_id": event.message_id}, 202)
    updated = await resolve_profile(rapport, key.workspace_id, f"id:{profile.id}")
    return json_response(await profile_body(rapport, updated))


@router.get(
    "/{ref:path}/segments/history",
    summary="A profile's segment entries and exits, newest first",
)
async def get_profile_segment_history(
    ref: str,
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    before: int | None = Query(None, ge=1, description="`next_before` from the previous page"),
    key: ApiKey = Depends(require_secret_key),
) -> Response:
    """From the membership index (which trails processing by milliseconds),
    including the changes of the profiles merged into this one; each item
    names the profile id it happened to."""
    rapport = get_rapport(request)
    profile = await resolve_profile(rapport, key.workspace_id, ref)
    page = await rapport.storage.list_segment_history(
        key.workspace_id, [profile.id, *profile.merged_from], limit=limit, before=before
    )
    return json_response(
        {
            "profile_id": profile.id,
            "history": [
                {
                    "segment_id": change.segment_id,
                    "change": "entered" if change.entered else "exited",
                    "version": change.version,
                    "at": _time(change.at),
                    "profile_id": change.profile_id,
                    "offset": change.offset,
                }
                for change in page.changes
            ],
            "next_before": page.next_before,
        }
    )


@router.get("/{ref:path}", summary="A profile by any of its identifiers, or id:<profile id>")
async def get_profile(
    ref: str, request: Request, key: ApiKey = Depends(require_secret_key)
) -> Response:
    rapport = get_rapport(request)
    profile = await resolve_profile(rapport, key.workspace_id, ref)
    return json_response(await profile_body(rapport, profile))
