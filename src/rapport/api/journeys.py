"""Admin API for journey definitions: the schema, validation, versions and their lifecycle.

Definitions are sent as JSON, or as YAML with a YAML content type
(``application/yaml``, ``application/x-yaml``, ``text/yaml``). A wrong one
gets 422 ``invalid_journey`` listing every error with its JSON path
(``$.steps.welcome.message.topic``); ``field`` names the first. Saving
stores a draft (a new version, or the draft replaced); ``publish``,
``pause``, ``resume`` and ``archive`` move versions through the lifecycle of
``rapport.core.journeys.lifecycle``, and an operation the journey's state
does not allow is 409 ``illegal_transition``. The reference is
docs/journeys.md.

``GET /api/schemas/journey`` needs no key, like the condition schema.

Runs are read back per journey: ``/metrics`` (per-step counters, totals and
how many instances have each status now) and ``/instances`` (paged by
instance id, each with its readable trace).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from rapport.api.auth import get_rapport, require_secret_key
from rapport.api.definitions import MAX_DEFINITION_BYTES
from rapport.api.errors import ApiError
from rapport.core.journeys import (
    ACTIONS,
    DRAFT,
    JOURNEY_SCHEMA,
    DocumentError,
    IllegalTransition,
    InvalidJourney,
    JourneyAlreadyExists,
    JourneyNotFound,
    JourneyVersion,
    describe,
    entry_version,
    journey_state,
    parse_document,
    parse_journey,
)
from rapport.core.journeys.instances import ENDED_STATUSES, LIVE_STATUSES, JourneyInstance
from rapport.core.journeys.schema import SLUG_PATTERN
from rapport.core.journeys.text import JSON, YAML
from rapport.runtime.journey_admin import UnknownSegments, apply_action, save_definition
from rapport.storage.base import ApiKey

router = APIRouter(tags=["journeys"])

_ENCODER = msgspec.json.Encoder()
_SLUG = re.compile(SLUG_PATTERN)
MAX_INSTANCES_PAGE = 500
_INSTANCE_STATUSES = tuple(sorted(LIVE_STATUSES | ENDED_STATUSES))
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")

_EXAMPLE: dict[str, Any] = {
    "id": "leather-jacket-nudge",
    "name": "Hesitating over a jacket",
    "triggers": [
        {
            "event": "Product Viewed",
            "where": [{"field": "properties.category", "op": "in", "value": ["coats", "jackets"]}],
            "condition": {
                "event": "Product Viewed",
                "key": "properties.product_id",
                "window": "1h",
                "op": "gte",
                "value": 3,
            },
        }
    ],
    "reentry": {"after": "7d"},
    "exit_when": [{"event": "Order Completed"}],
    "start": "offer",
    "steps": {
        "offer": {
            "message": {
                "channel": "email",
                "template": "coats-discount",
                "topic": "offers",
                "category": "promotional",
            }
        }
    },
}
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "A journey, as GET /api/schemas/journey describes",
                },
                "example": _EXAMPLE,
            },
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def _json(body: Any, status: int = 200, media_type: str = "application/json") -> Response:
    return Response(_ENCODER.encode(body), status_code=status, media_type=media_type)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def version_summary(version: JourneyVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "status": version.status,
        "created_at": _time(version.created_at),
        "updated_at": _time(version.updated_at),
        "published_at": _time(version.published_at),
    }


def journey_body(versions: Sequence[JourneyVersion], *, with_definition: bool) -> dict[str, Any]:
    """A journey as answered: its state, versions and (optionally) newest definition."""
    newest = versions[-1]
    entry = entry_version(versions)
    body: dict[str, Any] = {
        "id": newest.journey_id,
        "name": newest.name,
        "state": journey_state(versions),
        "entry_version": None if entry is None else entry.version,
        "draft_version": newest.version if newest.status == DRAFT else None,
        "latest_version": newest.version,
        "versions": [version_summary(v) for v in versions],
    }
    if with_definition:
        body["definition"] = newest.definition
    return body


def _invalid(errors: InvalidJourney) -> ApiError:
    first = errors.errors[0]
    return ApiError(
        422,
        "invalid_journey",
        str(first),
        field=first.path,
        extra={
            "errors": [
                {"path": e.path, "message": e.message, "kind": e.kind} for e in errors.errors
            ]
        },
    )


async def _read_document(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_DEFINITION_BYTES:
        raise ApiError(413, "definition_too_large", f"at most {MAX_DEFINITION_BYTES} bytes")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = YAML if content_type in _YAML_TYPES else JSON
    try:
        return parse_document(raw, fmt)
    except DocumentError as exc:
        raise ApiError(400, f"invalid_{fmt}", f"The body is {exc}") from None


def _check_id(journey_id: str) -> None:
    if not _SLUG.search(journey_id):
        raise ApiError(
            422,
            "invalid_journey_id",
            "A journey id is 1-100 lowercase letters, digits, '-' or '_',"
            " starting and ending with a letter or digit",
            field="journey_id",
        )


def _not_found(journey_id: str) -> ApiError:
    return ApiError(404, "journey_not_found", f"No journey {journey_id!r}", field="journey_id")


@router.get("/api/schemas/journey", summary="The JSON Schema of journey definitions")
async def journey_schema() -> Response:
    return _json(JOURNEY_SCHEMA, media_type="application/schema+json")


@router.post(
    "/api/journeys/validate",
    summary="Check a journey (JSON or YAML); list every error with its path",
    openapi_extra=_BODY,
)
async def validate(request: Request, _: Annotated[ApiKey, Depends(require_secret_key)]) -> Response:
    """Nothing is stored. 200 with a summary, or 422 ``invalid_journey`` with every error."""
    try:
        journey = parse_journey(await _read_document(request))
    except InvalidJourney as exc:
        raise _invalid(exc) from None
    return _json(
        {
            "valid": True,
            "id": journey.id,
            "triggers": len(journey.triggers),
            "steps": len(journey.steps),
        }
    )


async def _save(
    request: Request, key: ApiKey, journey_id: str | None, create_only: bool
) -> Response:
    rapport = get_rapport(request)
    document = await _read_document(request)
    try:
        stored, created = await save_definition(
            rapport.storage,
            key.workspace_id,
            document,
            rapport.clock.now(),
            journey_id=journey_id,
            create_only=create_only,
        )
    except InvalidJourney as exc:
        raise _invalid(exc) from None
    except JourneyAlreadyExists as exc:
        raise ApiError(
            409,
            "journey_exists",
            f"Journey {exc.journey_id!r} already exists;"
            f" PUT /api/journeys/{exc.journey_id} saves a new version",
            field="id",
        ) from None
    versions = await rapport.storage.journey_versions(key.workspace_id, stored.journey_id)
    return _json(journey_body(versions, with_definition=True), 201 if created else 200)


@router.post(
    "/api/journeys",
    summary="Create a journey: its version 1, a draft (409 if the id exists)",
    status_code=201,
    openapi_extra=_BODY,
)
async def create_journey(
    request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    return await _save(request, key, None, create_only=True)


@router.put(
    "/api/journeys/{journey_id}",
    summary="Save a journey's draft: replaces the draft, or starts the next version",
    openapi_extra=_BODY,
)
async def put_journey(
    journey_id: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    """201 when this created the journey, 200 otherwise. A missing ``id`` is the path's."""
    _check_id(journey_id)
    return await _save(request, key, journey_id, create_only=False)


@router.get("/api/journeys", summary="The workspace's journeys, by id, with their versions")
async def list_journeys(
    request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    rapport = get_rapport(request)
    grouped: dict[str, list[JourneyVersion]] = {}
    for version in await rapport.storage.list_journey_versions(key.workspace_id):
        grouped.setdefault(version.journey_id, []).append(version)
    return _json({"journeys": [journey_body(vs, with_definition=False) for vs in grouped.values()]})


@router.get("/api/journeys/{journey_id}", summary="A journey: state, versions, newest definition")
async def get_journey(
    journey_id: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    rapport = get_rapport(request)
    versions = await rapport.storage.journey_versions(key.workspace_id, journey_id)
    if not versions:
        raise _not_found(journey_id)
    return _json(journey_body(versions, with_definition=True))


@router.get(
    "/api/journeys/{journey_id}/versions/{version}",
    summary="One version of a journey, with its definition",
)
async def get_journey_version(
    journey_id: str,
    version: int,
    request: Request,
    key: Annotated[ApiKey, Depends(require_secret_key)],
) -> Response:
    rapport = get_rapport(request)
    found = await rapport.storage.get_journey_version(key.workspace_id, journey_id, version)
    if found is None:
        raise ApiError(
            404,
            "journey_version_not_found",
            f"No version {version} of journey {journey_id!r}",
            field="version",
        )
    return _json({"id": journey_id, **version_summary(found), "definition": found.definition})


@router.post(
    "/api/journeys/{journey_id}/{action}",
    summary="Publish, pause, resume or archive a journey",
)
async def journey_action(
    journey_id: str,
    action: str,
    request: Request,
    key: Annotated[ApiKey, Depends(require_secret_key)],
) -> Response:
    """``publish`` the draft (earlier published versions keep their in-flight
    instances; new entries take the new one); ``pause`` / ``resume`` every
    published / paused version; ``archive`` every version. 409
    ``illegal_transition`` when the journey's state does not allow it."""
    if action not in ACTIONS:
        raise ApiError(
            404,
            "unknown_action",
            f"No action {action!r}; one of {', '.join(ACTIONS)}",
            field="action",
        )
    rapport = get_rapport(request)
    try:
        versions = await apply_action(
            rapport.storage, key.workspace_id, journey_id, action, rapport.clock.now()
        )
        # A publish or resume stored its signal with the new status: the relay
        # delivers it now rather than at its next look at the schedule.
        rapport.relay.notify()
    except JourneyNotFound:
        raise _not_found(journey_id) from None
    except IllegalTransition as exc:
        raise ApiError(409, "illegal_transition", str(exc), extra={"state": exc.state}) from None
    except UnknownSegments as exc:
        raise ApiError(
            422, "unknown_segment", str(exc), field="definition", extra={"segments": exc.segments}
        ) from None
    except InvalidJourney as exc:
        raise _invalid(exc) from None
    return _json(journey_body(versions, with_definition=True))


async def _versions_or_404(request: Request, key: ApiKey, journey_id: str) -> None:
    if not await get_rapport(request).storage.journey_versions(key.workspace_id, journey_id):
        raise _not_found(journey_id)


@router.get(
    "/api/journeys/{journey_id}/metrics",
    summary="A journey's counters per step, their totals, and its instances per status",
)
async def journey_metrics(
    journey_id: str,
    request: Request,
    key: Annotated[ApiKey, Depends(require_secret_key)],
    version: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """``steps``: step id -> metric -> count (of ``version``, or of all versions);
    ``totals``: metric -> count over the steps; ``instances``: status -> count now."""
    await _versions_or_404(request, key, journey_id)
    storage = get_rapport(request).storage
    metrics = await storage.journey_metrics(key.workspace_id, journey_id)
    counts = await storage.journey_instance_counts(key.workspace_id, journey_id)
    return _json(
        {
            "id": journey_id,
            "version": version,
            "steps": metrics.by_step(version),
            "totals": metrics.totals(version),
            "instances": counts,
        }
    )


def instance_body(instance: JourneyInstance) -> dict[str, Any]:
    """An instance as answered: its stored fields, the trace as readable lines."""
    body: dict[str, Any] = msgspec.to_builtins(instance)
    body.pop("trace_dropped", None)
    body["trace"] = describe(instance)
    return body


@router.get("/api/journeys/{journey_id}/instances", summary="A journey's instances, by id")
async def journey_instances(
    journey_id: str,
    request: Request,
    key: Annotated[ApiKey, Depends(require_secret_key)],
    limit: Annotated[int, Query(ge=1, le=MAX_INSTANCES_PAGE)] = 100,
    after: str | None = None,
    status: str | None = None,
) -> Response:
    """Paged by instance id: pass ``next_after`` as ``after``. ``status`` keeps one status."""
    if status is not None and status not in _INSTANCE_STATUSES:
        raise ApiError(
            422,
            "invalid_status",
            f"status is one of {', '.join(_INSTANCE_STATUSES)}",
            field="status",
        )
    await _versions_or_404(request, key, journey_id)
    page = await get_rapport(request).storage.list_journey_instances(
        key.workspace_id, journey_id, limit, after, status=status
    )
    return _json(
        {
            "instances": [instance_body(i) for i in page.instances],
            "next_after": page.next_after,
        }
    )
