"""Admin API for computed-trait definitions: create, update (a new version), list, read, delete.

A definition names a trait (its id) and what the engine computes into it
(``compute``, whose shape depends on ``kind``: see docs/computed-traits.md).
A wrong ``compute`` gets 422 ``invalid_computed_trait`` listing every error
with its path inside ``compute`` (``$.window``); ``field`` names the first
as a path of the body (``compute.window``). Deleting is soft: the name can
be used again and its versions go on counting. The engine owns a computed
trait's name: ``PATCH /api/profiles/{ref}/traits`` refuses it (409
``computed_trait``).

Every create or update starts a backfill that rebuilds the trait on the
profiles that exist from their timelines (``rapport.runtime.backfill``);
its progress is answered as ``backfill``, as for segments.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from rapport.api.auth import get_rapport, require_secret_key
from rapport.api.definitions import json_response, read_definition_object
from rapport.api.errors import ApiError
from rapport.api.segments import backfill_body
from rapport.core.backfill import BackfillJob
from rapport.core.computed_traits import (
    AGGREGATE,
    KINDS,
    MAX_DESCRIPTION_LENGTH,
    RESERVED_NAMES,
    TRAIT_ID_PATTERN,
    ComputedTraitAlreadyExists,
    ComputedTraitDefinition,
    ComputedTraitDraft,
    compile_computed_trait,
    is_trait_id,
    validate_compute,
)
from rapport.runtime.service import Rapport
from rapport.storage.base import ApiKey

router = APIRouter(prefix="/api/computed-traits", tags=["computed traits"])

_FIELDS = frozenset(("id", "description", "kind", "compute"))

_EXAMPLE = {
    "id": "lifetime_revenue",
    "description": "Everything the customer ever spent.",
    "kind": "aggregate",
    "compute": {"event": "Order Completed", "aggregate": "sum", "of": "properties.revenue"},
}


def _definition_body(*, with_id: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION_LENGTH},
        "kind": {"type": "string", "enum": list(KINDS)},
        "compute": {"type": "object", "description": "See docs/computed-traits.md"},
    }
    if with_id:
        properties["id"] = {"type": "string", "pattern": f"^{TRAIT_ID_PATTERN}$"}
    example = dict(_EXAMPLE) if with_id else {k: v for k, v in _EXAMPLE.items() if k != "id"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["id", "compute"] if with_id else ["compute"],
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


def computed_trait_body(
    definition: ComputedTraitDefinition, backfill: BackfillJob | None = None
) -> dict[str, Any]:
    """The definition as answered, with the progress of the ``backfill`` of this version if given.

    The backfill's ``changed`` counts the profiles whose value it changed;
    ``entered``/``exited`` the segment memberships that followed.
    """
    body: dict[str, Any] = {
        "id": definition.id,
        "description": definition.description,
        "kind": definition.kind,
        "compute": definition.compute,
        "version": definition.version,
        "status": definition.status,
        "created_at": _time(definition.created_at),
        "updated_at": _time(definition.updated_at),
    }
    if definition.active:
        computation = compile_computed_trait(definition)
        body["depends_on"] = {
            "events": sorted(computation.events),
            "every_track_event": computation.every_track,
            "pages": computation.pages,
        }
        body["time_dependent"] = computation.windowed
    if backfill is not None and backfill.version == definition.version:
        body["backfill"] = {**backfill_body(backfill), "changed": backfill.changed}
    return body


async def _answered(rapport: Rapport, definition: ComputedTraitDefinition) -> dict[str, Any]:
    job = await rapport.storage.get_computed_trait_backfill(definition.workspace_id, definition.id)
    return computed_trait_body(definition, job)


def _check_id(trait_id: str, field: str) -> None:
    if not is_trait_id(trait_id):
        raise ApiError(
            422,
            "invalid_computed_trait_id",
            "A computed trait's id is the trait name: 1-100 lowercase letters, digits,"
            " '-' or '_', starting and ending with a letter or digit (e.g. lifetime_revenue)",
            field=field,
        )
    if trait_id in RESERVED_NAMES:
        raise ApiError(
            422,
            "reserved_trait_name",
            f"{trait_id!r} is already kept on every profile (see GET /api/profiles/{{ref}});"
            " choose another name",
            field=field,
        )


async def _read_body(request: Request) -> dict[str, Any]:
    return await read_definition_object(request, _FIELDS, "invalid_computed_trait")


def _draft(workspace_id: str, trait_id: str, body: dict[str, Any]) -> ComputedTraitDraft:
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH:
        raise ApiError(
            422,
            "invalid_description",
            f"description must be a string of at most {MAX_DESCRIPTION_LENGTH} characters",
            field="description",
        )
    kind = body.get("kind", AGGREGATE)
    if kind not in KINDS:
        raise ApiError(422, "invalid_kind", f"kind must be one of {', '.join(KINDS)}", field="kind")
    if "compute" not in body:
        raise ApiError(422, "invalid_computed_trait", "compute is required", field="compute")
    errors = validate_compute(kind, body["compute"])
    if errors:
        first = errors[0]
        raise ApiError(
            422,
            "invalid_computed_trait",
            str(first),
            field="compute" + first.path.removeprefix("$"),
            extra={"errors": [{"path": e.path, "message": e.message} for e in errors]},
        )
    return ComputedTraitDraft(
        workspace_id=workspace_id,
        id=trait_id,
        kind=str(kind),
        compute=body["compute"],
        description=description,
    )


def _not_found(trait_id: str) -> ApiError:
    return ApiError(404, "computed_trait_not_found", f"No computed trait {trait_id!r}", field="id")


@router.post(
    "",
    summary="Create a computed trait (409 if the name exists)",
    status_code=201,
    openapi_extra=_definition_body(with_id=True),
)
async def create_computed_trait(
    request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    rapport = get_rapport(request)
    body = await _read_body(request)
    trait_id = body.get("id")
    if not isinstance(trait_id, str):
        raise ApiError(
            422, "invalid_computed_trait_id", "id is required (the trait name)", field="id"
        )
    _check_id(trait_id, "id")
    draft = _draft(key.workspace_id, trait_id, body)
    try:
        stored = await rapport.storage.put_computed_trait(
            draft, rapport.clock.now(), create_only=True
        )
    except ComputedTraitAlreadyExists:
        raise ApiError(
            409,
            "computed_trait_exists",
            f"Computed trait {trait_id!r} already exists;"
            f" PUT /api/computed-traits/{trait_id} updates it",
            field="id",
        ) from None
    return json_response(await _answered(rapport, stored), 201)


@router.put(
    "/{trait_id}",
    summary="Create or update a computed trait; every update is a new version",
    openapi_extra=_definition_body(with_id=False),
)
async def put_computed_trait(
    trait_id: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    """201 when this created the trait (or re-created a deleted one), 200 when it updated it."""
    rapport = get_rapport(request)
    _check_id(trait_id, "trait_id")
    body = await _read_body(request)
    if "id" in body and body["id"] != trait_id:
        raise ApiError(
            422, "id_mismatch", "id in the body differs from the one in the path", field="id"
        )
    draft = _draft(key.workspace_id, trait_id, body)
    existed = await rapport.storage.get_computed_trait(key.workspace_id, trait_id) is not None
    stored = await rapport.storage.put_computed_trait(draft, rapport.clock.now())
    return json_response(await _answered(rapport, stored), 200 if existed else 201)


@router.get("", summary="The workspace's computed traits, by name")
async def list_computed_traits(
    request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    rapport = get_rapport(request)
    definitions = await rapport.storage.list_computed_traits(key.workspace_id)
    return json_response({"computed_traits": [await _answered(rapport, d) for d in definitions]})


@router.get("/{trait_id}", summary="A computed trait (its latest version)")
async def get_computed_trait(
    trait_id: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    rapport = get_rapport(request)
    found = await rapport.storage.get_computed_trait(key.workspace_id, trait_id)
    if found is None:
        raise _not_found(trait_id)
    return json_response(await _answered(rapport, found))


@router.delete("/{trait_id}", summary="Delete a computed trait")
async def delete_computed_trait(
    trait_id: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    """Answers with the stored tombstone (status ``deleted``, the next version).

    Profiles keep the last value written (source ``rapport:computed``); it is
    no longer maintained.
    """
    rapport = get_rapport(request)
    tombstone = await rapport.storage.delete_computed_trait(
        key.workspace_id, trait_id, rapport.clock.now()
    )
    if tombstone is None:
        raise _not_found(trait_id)
    return json_response(computed_trait_body(tombstone))


async def refuse_computed_traits(
    rapport: Rapport, workspace_id: str, names: Collection[str]
) -> None:
    """409 ``computed_trait`` naming the first of ``names`` that is a computed trait.

    For writes of traits by hand (``PATCH /api/profiles/{ref}/traits``): the
    engine owns those values, and would overwrite a hand-set one at the
    profile's next event anyway.
    """
    definitions = await rapport.storage.list_computed_traits(workspace_id)
    clashes = sorted(set(names) & {definition.id for definition in definitions})
    if clashes:
        name = clashes[0]
        raise ApiError(
            409,
            "computed_trait",
            f"{name!r} is a computed trait: its value is kept by Rapport"
            f" (see /api/computed-traits/{name})",
            field=f"traits.{name}",
        )
