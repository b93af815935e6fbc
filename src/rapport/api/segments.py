"""Admin API for segment definitions: create, update (a new version), list, read, delete.

A definition's condition is the condition language of docs/conditions.md,
checked with ``compile_condition``: a wrong one gets 422 ``invalid_condition``
listing every error, each with its path inside the condition (``$.all[1].op``);
``field`` names the first as a path of the body (``condition.all[1].op``).
Conditions may read other segments (``in_segment``): those must exist in the
workspace, may not lead back to the segment itself, and a segment others read
cannot be deleted. Deleting is soft (see ``rapport.core.segments``): the id
can be used again and its versions go on counting.

Answers about an active segment carry its ``size``, and
``GET /api/segments/{id}/members`` pages its members: both come from the
membership index (``rapport.runtime.memberships``), a count and a keyset
page, never a scan of the segment.

A ``static`` segment has no condition: its members are uploaded with
``POST /api/segments/{id}/members`` (``rapport.api.segment_uploads``).
Dynamic conditions may read it like any segment. A segment keeps its kind
across updates (delete it and create it again to change it), so memberships
computed by a condition never become list entries, nor the reverse.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from rapport.api.auth import get_rapport, require_secret_key
from rapport.api.definitions import compile_or_422, json_response, read_definition_object
from rapport.api.errors import ApiError
from rapport.api.segment_uploads import UPLOAD_OPENAPI, accept_upload
from rapport.core.backfill import BackfillJob
from rapport.core.conditions import CompiledCondition, compile_condition
from rapport.core.segments import (
    DYNAMIC,
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    SEGMENT_ID_PATTERN,
    SEGMENT_KINDS,
    STATIC,
    SegmentAlreadyExists,
    SegmentDefinition,
    SegmentDraft,
    is_segment_id,
    reference_cycle,
)
from rapport.runtime.service import Rapport
from rapport.storage.base import ApiKey

router = APIRouter(prefix="/api/segments", tags=["segments"])

MAX_MEMBERS_PAGE = 1000
MAX_CURSOR_LENGTH = 200
_FIELDS = frozenset(("id", "name", "description", "kind", "condition"))

_S2_EXAMPLE = {
    "id": "viewed-same-product-3x-1h",
    "name": "Viewed the same product 3 times within an hour",
    "description": "Scenario S2: a customer hesitating over one product.",
    "kind": "dynamic",
    "condition": {
        "event": "Product Viewed",
        "aggregate": "count",
        "window": "1h",
        "key": "properties.product_id",
        "op": "gte",
        "value": 3,
    },
}


def _definition_body(*, with_id: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH},
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION_LENGTH},
        "kind": {
            "type": "string",
            "enum": sorted(SEGMENT_KINDS),
            "description": "dynamic (default on creation; kept on update) or static",
        },
        "condition": {
            "type": "object",
            "description": "Required for dynamic segments, refused for static ones;"
            " see GET /api/schemas/condition",
        },
    }
    if with_id:
        properties["id"] = {"type": "string", "pattern": f"^{SEGMENT_ID_PATTERN}$"}
    example = dict(_S2_EXAMPLE) if with_id else {k: v for k, v in _S2_EXAMPLE.items() if k != "id"}
    required = ["id", "name"] if with_id else ["name"]
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": required,
                        "properties": properties,
                        "additionalProperties": False,
                    },
                    "example": example,
                }
            },
        }
    }


def _time(value: datetime) -> str:
    return value.isoformat()


def backfill_body(job: BackfillJob) -> dict[str, Any]:
    """A backfill job's progress as answered (see docs/segments.md)."""
    return {
        "status": job.status,
        "version": job.version,
        "processed": job.processed,
        "total": job.total,
        "progress": round(job.progress, 4),
        "entered": job.entered,
        "exited": job.exited,
        "started_at": _time(job.started_at),
        "finished_at": None if job.finished_at is None else _time(job.finished_at),
    }


def segment_body(
    definition: SegmentDefinition, size: int | None = None, backfill: BackfillJob | None = None
) -> dict[str, Any]:
    """The definition as answered; ``size`` (current members, from the index) and the
    progress of the ``backfill`` that brings existing profiles to it, if given."""
    body: dict[str, Any] = {
        "id": definition.id,
        "name": definition.name,
        "description": definition.description,
        "kind": definition.kind,
        "condition": definition.condition,
        "version": definition.version,
        "status": definition.status,
        "created_at": _time(definition.created_at),
        "updated_at": _time(definition.updated_at),
    }
    if definition.active and definition.kind == STATIC:
        body["depends_on"] = {"traits": [], "events": [], "segments": [], "consents": []}
        body["time_dependent"] = False
    elif definition.active:
        compiled = compile_condition(definition.condition)
        body["depends_on"] = {
            "traits": sorted(compiled.traits),
            "events": sorted(compiled.events),
            "segments": sorted(compiled.segments),
            "consents": sorted(compiled.consents),
        }
        body["time_dependent"] = compiled.time_dependent
    if size is not None:
        body["size"] = size
    if backfill is not None and backfill.version == definition.version:
        body["backfill"] = backfill_body(backfill)
    return body


async def _with_size(rapport: Rapport, definition: SegmentDefinition) -> dict[str, Any]:
    ws = definition.workspace_id
    sizes = await rapport.storage.segment_sizes(ws, [definition.id])
    job = await rapport.storage.get_backfill(ws, definition.id)
    return segment_body(definition, sizes[definition.id], job)


def _check_id(segment_id: str, field: str) -> None:
    if not is_segment_id(segment_id):
        raise ApiError(
            422,
            "invalid_segment_id",
            "A segment id is 1-100 lowercase letters, digits, '-' or '_',"
            " starting and ending with a letter or digit (e.g. viewed-same-product-3x-1h)",
            field=field,
        )


async def _read_body(request: Request) -> dict[str, Any]:
    return await read_definition_object(request, _FIELDS, "invalid_segment")


def _text(body: dict[str, Any], name: str, *, required: bool, limit: int) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise ApiError(422, f"invalid_{name}", f"{name} must be a non-empty string", field=name)
    if len(value) > limit:
        raise ApiError(
            422, f"invalid_{name}", f"{name} must be at most {limit} characters", field=name
        )
    return value


def _kind(body: dict[str, Any], existing: SegmentDefinition | None) -> str:
    """The kind the body asks for: the existing segment's when it names none."""
    kind = body.get("kind", DYNAMIC if existing is None else existing.kind)
    if kind not in SEGMENT_KINDS:
        raise ApiError(
            422,
            "invalid_kind",
            f"kind must be one of {', '.join(sorted(SEGMENT_KINDS))}",
            field="kind",
        )
    if existing is not None and kind != existing.kind:
        raise ApiError(
            409,
            "kind_change",
            f"Segment {existing.id!r} is {existing.kind}; a segment keeps its kind:"
            " delete it and create it again as a {kind} segment",
            field="kind",
        )
    return str(kind)


def _compile(body: dict[str, Any]) -> CompiledCondition:
    if "condition" not in body:
        raise ApiError(422, "invalid_condition", "condition is required", field="condition")
    return compile_or_422(body["condition"], body_path="condition")


def _reads(definition: SegmentDefinition) -> frozenset[str]:
    """The segments a stored definition's condition reads (none for a static one)."""
    if definition.kind == STATIC:
        return frozenset()
    return compile_condition(definition.condition).segments


async def _check_references(
    rapport: Rapport, workspace_id: str, segment_id: str, compiled: CompiledCondition
) -> None:
    if not compiled.segments:
        return
    stored = {d.id: d for d in await rapport.storage.list_segments(workspace_id)}
    for referenced in sorted(compiled.segments):
        if referenced != segment_id and referenced not in stored:
            raise ApiError(
                422,
                "unknown_segment",
                f"The condition reads segment {referenced!r}, which does not exist",
                field="condition",
            )
    references: dict[str, frozenset[str]] = {other.id: _reads(other) for other in stored.values()}
    references[segment_id] = compiled.segments
    cycle = reference_cycle(segment_id, references)
    if cycle is not None:
        raise ApiError(
            422,
            "segment_cycle",
            "Membership would depend on itself: " + " -> ".join(cycle),
            field="condition",
        )


async def _draft(
    rapport: Rapport,
    key: ApiKey,
    segment_id: str,
    body: dict[str, Any],
    existing: SegmentDefinition | None = None,
) -> SegmentDraft:
    """What the body asks to store; ``existing``: the active segment it updates, if any."""
    name = _text(body, "name", required=True, limit=MAX_NAME_LENGTH)
    description = _text(body, "description", required=False, limit=MAX_DESCRIPTION_LENGTH)
    kind = _kind(body, existing)
    condition: Any = None
    if kind == STATIC:
        if body.get("condition") is not None:
            raise ApiError(
                422,
                "condition_not_allowed",
                "A static segment has no condition: its members are uploaded"
                f" (POST /api/segments/{segment_id}/members)",
                field="condition",
            )
    else:
        compiled = _compile(body)
        await _check_references(rapport, key.workspace_id, segment_id, compiled)
        condition = body["condition"]
    return SegmentDraft(
        workspace_id=key.workspace_id,
        id=segment_id,
        name=name,
        description=description,
        kind=kind,
        condition=condition,
    )


def _not_found(segment_id: str) -> ApiError:
    return ApiError(404, "segment_not_found", f"No segment {segment_id!r}", field="id")


@router.post(
    "",
    summary="Create a segment definition (409 if the id exists)",
    status_code=201,
    openapi_extra=_definition_body(with_id=True),
)
async def create_segment(
    request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    rapport = get_rapport(request)
    body = await _read_body(request)
    segment_id = body.get("id")
    if not isinstance(segment_id, str):
        raise ApiError(422, "invalid_segment_id", "id is required (a slug)", field="id")
    _check_id(segment_id, "id")
    draft = await _draft(rapport, key, segment_id, body)
    try:
        stored = await rapport.storage.put_segment(draft, rapport.clock.now(), create_only=True)
    except SegmentAlreadyExists:
        raise ApiError(
            409,
            "segment_exists",
            f"Segment {segment_id!r} already exists; PUT /api/segments/{segment_id} updates it",
            field="id",
        ) from None
    return json_response(await _with_size(rapport, stored), 201)


@router.put(
    "/{segment_id}",
    summary="Create or update a segment definition; every update is a new version",
    openapi_extra=_definition_body(with_id=False),
)
async def put_segment(
    segment_id: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    """201 when this created the segment (or re-created a deleted one), 200 when it updated it."""
    rapport = get_rapport(request)
    _check_id(segment_id, "segment_id")
    body = await _read_body(request)
    if "id" in body and body["id"] != segment_id:
        raise ApiError(
            422, "id_mismatch", "id in the body differs from the one in the path", field="id"
        )
    existing = await rapport.storage.get_segment(key.workspace_id, segment_id)
    draft = await _draft(rapport, key, segment_id, body, existing)
    stored = await rapport.storage.put_segment(draft, rapport.clock.now())
    return json_response(await _with_size(rapport, stored), 200 if existing is not None else 201)


@router.get("", summary="The workspace's segment definitions, by id")
async def list_segments(
    request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    rapport = get_rapport(request)
    definitions = await rapport.storage.list_segments(key.workspace_id)
    sizes = await rapport.storage.segment_sizes(key.workspace_id, [d.id for d in definitions])
    jobs = {d.id: await rapport.storage.get_backfill(key.workspace_id, d.id) for d in definitions}
    answered = [segment_body(d, sizes[d.id], jobs[d.id]) for d in definitions]
    return json_response({"segments": answered})


@router.get("/{segment_id}", summary="A segment definition (its latest version)")
async def get_segment(
    segment_id: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    rapport = get_rapport(request)
    found = await rapport.storage.get_segment(key.workspace_id, segment_id)
    if found is None:
        raise _not_found(segment_id)
    return json_response(await _with_size(rapport, found))


@router.get(
    "/{segment_id}/members",
    summary="A segment's current members, by profile id, paged",
)
async def list_members(
    segment_id: str,
    request: Request,
    key: Annotated[ApiKey, Depends(require_secret_key)],
    limit: Annotated[int, Query(ge=1, le=MAX_MEMBERS_PAGE)] = 100,
    after: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_CURSOR_LENGTH,
            description="`next_after` from the previous page",
        ),
    ] = None,
) -> Response:
    """From the membership index, which trails processing by milliseconds
    (see docs/segments.md). Pages follow profile ids: no profile shows twice
    across pages, and one that enters or leaves while a client pages may or
    may not show."""
    rapport = get_rapport(request)
    found = await rapport.storage.get_segment(key.workspace_id, segment_id)
    if found is None:
        raise _not_found(segment_id)
    page = await rapport.storage.list_segment_members(
        key.workspace_id, segment_id, limit=limit, after=after
    )
    sizes = await rapport.storage.segment_sizes(key.workspace_id, [segment_id])
    return json_response(
        {
            "segment_id": segment_id,
            "version": found.version,
            "size": sizes[segment_id],
            "members": [
                {
                    "profile_id": m.profile_id,
                    "entered_at": _time(m.entered_at),
                    "version": m.version,
                }
                for m in page.members
            ],
            "next_after": page.next_after,
        }
    )


@router.post(
    "/{segment_id}/members",
    summary="Add and remove the members of a static segment (uploaded identifiers)",
    openapi_extra=UPLOAD_OPENAPI,
)
async def upload_members(
    segment_id: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    """Each good entry is appended to the event log before the answer, which
    counts them (``accepted``, ``duplicates`` for a retried upload) and lists
    the bad ones by position (``rejected``); the processor applies them in
    each profile's order, within milliseconds. See docs/segments.md."""
    rapport = get_rapport(request)
    found = await rapport.storage.get_segment(key.workspace_id, segment_id)
    if found is None:
        raise _not_found(segment_id)
    return await accept_upload(rapport, key, found, request)


@router.delete("/{segment_id}", summary="Delete a segment definition")
async def delete_segment(
    segment_id: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    """Answers with the stored tombstone (status ``deleted``, the next version)."""
    rapport = get_rapport(request)
    readers = [
        other.id
        for other in await rapport.storage.list_segments(key.workspace_id)
        if other.id != segment_id and segment_id in _reads(other)
    ]
    if readers:
        raise ApiError(
            409,
            "segment_in_use",
            f"Segments {', '.join(readers)} read {segment_id!r}; change or delete them first",
            field="id",
        )
    tombstone = await rapport.storage.delete_segment(
        key.workspace_id, segment_id, rapport.clock.now()
    )
    if tombstone is None:
        raise _not_found(segment_id)
    return json_response(segment_body(tombstone))
