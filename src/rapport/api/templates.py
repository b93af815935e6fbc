"""Admin API for message templates: create, update (a new version), list, read,
delete, and preview against a real profile or sample data.

A template's body has ``name``, ``channel``, the channel's parts at the top
level (``subject``/``html``/``text`` for email, ``body`` for sms...), and
optional ``description`` and ``variables`` (declared defaults by path); see
docs/templates.md. Saving parses every part with the locked-down Liquid
environment of ``rapport.core.templates.compile``: a wrong template gets 422
``invalid_template`` listing every error with its path and line
(``$.html: unexpected tag 'endfor'``), ``field`` naming the first as a body
field (``html``).

``POST /api/templates/{id}/preview`` renders the template as a send would:
with a stored profile (``"profile": "user_id:dana"``) and/or a sample
``event``, ``journey`` variables, ``offer`` and promo ``codes`` (pool id ->
a sample code: nothing is claimed from a pool). The message's ``links``
are preview links (``PREVIEW_LINK_TOKEN`` where a signed token would be):
the message shows whole, and such a link acts on no one (its token is
refused). "now" is the runtime clock's time. A render that fails (a
missing variable, a limit) is still a completed preview: the answer says
``"status": "failed"`` with the failure a send would record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from rapport.api.auth import get_rapport, require_secret_key
from rapport.api.definitions import json_response, read_definition
from rapport.api.errors import ApiError
from rapport.api.profiles import resolve_profile
from rapport.channels.links import LinkKind, link_url
from rapport.core.templates import (
    CHANNELS,
    RenderContext,
    Rendered,
    TemplateAlreadyExists,
    TemplateCache,
    TemplateDefinition,
    TemplateDraft,
    TemplateError,
    compile_template,
    empty_profile_context,
    is_template_id,
    next_template,
    parse_draft,
    profile_context,
    render_template,
)
from rapport.core.templates.definitions import TEMPLATE_ID_PATTERN
from rapport.runtime.compose import TEMPLATE_LINKS
from rapport.runtime.service import Rapport
from rapport.storage.base import ApiKey

router = APIRouter(prefix="/api/templates", tags=["templates"])

_PREVIEW_FIELDS = frozenset(("profile", "event", "journey", "offer", "codes", "version"))
PREVIEW_LINK_TOKEN = "PREVIEW-not-a-real-link"
"""Stands for the signed token in a preview's links: unsigned, so the link
endpoints refuse it (400 ``invalid_link``) and it acts on no customer."""

_S1_EXAMPLE: dict[str, Any] = {
    "id": "backorder-thanks",
    "name": "Thank you for waiting",
    "channel": "email",
    "subject": "Thank you, {{ profile.traits.first_name }}",
    "html": "<p>Hi {{ profile.traits.first_name }}, we added"
    " {{ journey.points }} points to your account.</p>",
    "text": "Hi {{ profile.traits.first_name }}, we added {{ journey.points }} points.",
    "variables": {"profile.traits.first_name": "there", "journey.points": 100},
}


def _definition_body(*, with_id: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "channel": {"type": "string", "enum": sorted(CHANNELS)},
        "variables": {
            "type": "object",
            "description": "Context path -> default used when the value there is missing",
        },
    }
    if with_id:
        properties["id"] = {"type": "string", "pattern": f"^{TEMPLATE_ID_PATTERN}$"}
    example = dict(_S1_EXAMPLE) if with_id else {k: v for k, v in _S1_EXAMPLE.items() if k != "id"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["id", "name", "channel"] if with_id else ["name", "channel"],
                        "properties": properties,
                        "description": "Plus the channel's parts: email subject, html, text;"
                        " sms body; push title, body, deep_link; in_app title, body;"
                        " webhook body (a JSON value whose strings are Liquid)",
                    },
                    "example": example,
                }
            },
        }
    }


def _time(value: datetime) -> str:
    return value.isoformat()


def template_body(definition: TemplateDefinition) -> dict[str, Any]:
    """A stored version as answered: the fields it was written with, flat, plus
    version, status and times."""
    return {
        "id": definition.id,
        "name": definition.name,
        "description": definition.description,
        "channel": definition.channel,
        **definition.parts,
        "variables": definition.variables,
        "version": definition.version,
        "status": definition.status,
        "created_at": _time(definition.created_at),
        "updated_at": _time(definition.updated_at),
    }


def _invalid(errors: list[TemplateError]) -> ApiError:
    first = errors[0]
    field = first.path.removeprefix("$.").split("[", 1)[0] or None
    return ApiError(
        422,
        "invalid_template",
        str(first),
        field=field,
        extra={"errors": [error.as_json() for error in errors]},
    )


def _check_id(template_id: str, field: str) -> None:
    if not is_template_id(template_id):
        raise ApiError(
            422,
            "invalid_template_id",
            "A template id is 1-100 lowercase letters, digits, '-' or '_',"
            " starting and ending with a letter or digit (e.g. backorder-thanks)",
            field=field,
        )


async def _read_object(request: Request) -> dict[str, Any]:
    body = await read_definition(request)
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_template", "The body must be a JSON object")
    return body


def _draft(key: ApiKey, template_id: str, body: dict[str, Any], now: datetime) -> TemplateDraft:
    """The draft the body describes, its Liquid compiled and checked: or 422 with every error."""
    parsed = parse_draft(key.workspace_id, template_id, body)
    if isinstance(parsed, list):
        raise _invalid(parsed)
    compiled = compile_template(next_template(None, parsed, now))
    if isinstance(compiled, list):
        raise _invalid(compiled)
    return parsed


def _not_found(template_id: str) -> ApiError:
    return ApiError(404, "template_not_found", f"No template {template_id!r}", field="id")


def _cache(request: Request) -> TemplateCache:
    """The app's compiled versions: a preview parses a version once."""
    cache: TemplateCache | None = getattr(request.app.state, "template_cache", None)
    if cache is None:
        cache = TemplateCache()
        request.app.state.template_cache = cache
    return cache


@router.post(
    "",
    summary="Create a template (409 if the id exists)",
    status_code=201,
    openapi_extra=_definition_body(with_id=True),
)
async def create_template(
    request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    rapport = get_rapport(request)
    body = await _read_object(request)
    template_id = body.get("id")
    if not isinstance(template_id, str):
        raise ApiError(422, "invalid_template_id", "id is required (a slug)", field="id")
    _check_id(template_id, "id")
    now = rapport.clock.now()
    draft = _draft(key, template_id, body, now)
    try:
        stored = await rapport.storage.put_template(draft, now, create_only=True)
    except TemplateAlreadyExists:
        raise ApiError(
            409,
            "template_exists",
            f"Template {template_id!r} already exists; PUT /api/templates/{template_id} updates it",
            field="id",
        ) from None
    return json_response(template_body(stored), 201)


@router.put(
    "/{template_id}",
    summary="Create or update a template; every update is a new version",
    openapi_extra=_definition_body(with_id=False),
)
async def put_template(
    template_id: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    """201 when this created the template (or re-created a deleted one), 200 when it updated it."""
    rapport = get_rapport(request)
    _check_id(template_id, "template_id")
    body = await _read_object(request)
    if "id" in body and body["id"] != template_id:
        raise ApiError(
            422, "id_mismatch", "id in the body differs from the one in the path", field="id"
        )
    existing = await rapport.storage.get_template(key.workspace_id, template_id)
    now = rapport.clock.now()
    stored = await rapport.storage.put_template(_draft(key, template_id, body, now), now)
    return json_response(template_body(stored), 200 if existing is not None else 201)


@router.get("", summary="The workspace's templates (latest version of each), by id")
async def list_templates(
    request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    rapport = get_rapport(request)
    definitions = await rapport.storage.list_templates(key.workspace_id)
    return json_response({"templates": [template_body(d) for d in definitions]})


@router.get("/{template_id}", summary="A template: its latest version, or the one asked for")
async def get_template(
    template_id: str,
    request: Request,
    key: Annotated[ApiKey, Depends(require_secret_key)],
    version: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    rapport = get_rapport(request)
    found = await rapport.storage.get_template(key.workspace_id, template_id, version)
    if found is None:
        raise _not_found(template_id)
    return json_response(template_body(found))


@router.delete("/{template_id}", summary="Delete a template")
async def delete_template(
    template_id: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    """Answers with the stored tombstone (status ``deleted``, the next version)."""
    rapport = get_rapport(request)
    tombstone = await rapport.storage.delete_template(
        key.workspace_id, template_id, rapport.clock.now()
    )
    if tombstone is None:
        raise _not_found(template_id)
    return json_response(template_body(tombstone))


@router.post(
    "/{template_id}/preview",
    summary="Render a template with a stored profile and/or sample event, journey and offer",
)
async def preview_template(
    template_id: str, request: Request, key: Annotated[ApiKey, Depends(require_secret_key)]
) -> Response:
    """Body (all optional): ``profile`` (a ref, ``user_id:dana``), ``event``
    (``{"name", "properties", "timestamp"}``), ``journey`` (an object of
    variables), ``offer`` (an object), ``codes`` (pool id -> sample code),
    ``version`` (default: the latest). ``links`` are preview links.
    Answers ``status`` ``rendered`` with ``parts`` and ``defaults_used``, or
    ``failed`` with the ``failure`` a send would record."""
    rapport = get_rapport(request)
    body = await _read_object(request)
    for name in sorted(body):
        if name not in _PREVIEW_FIELDS:
            known = ", ".join(sorted(_PREVIEW_FIELDS))
            raise ApiError(
                422, "unknown_field", f"Unknown field {name!r}; a preview has {known}", field=name
            )
    version = body.get("version")
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or version < 1
    ):
        raise ApiError(
            422, "invalid_version", "version must be a positive integer", field="version"
        )
    found = await rapport.storage.get_template(key.workspace_id, template_id, version)
    if found is None:
        raise _not_found(template_id)
    context = RenderContext(
        now=rapport.clock.now(),
        profile=await _profile(rapport, key, body.get("profile")),
        event=_event(body.get("event")),
        journey=_object(body, "journey"),
        offer=_object(body, "offer") if body.get("offer") is not None else None,
        codes=_codes(body.get("codes")),
        links=preview_links(rapport.settings.public_url),
    )
    compiled = _cache(request).get(found)
    if isinstance(compiled, list):  # stored before a stricter check: say what is wrong
        raise _invalid(compiled)
    result = render_template(compiled, context)
    answer: dict[str, Any] = {"template_id": found.id, "version": found.version}
    answer["channel"] = found.channel
    if isinstance(result, Rendered):
        answer.update(
            status="rendered", parts=result.parts, defaults_used=list(result.defaults_used)
        )
    else:
        answer.update(status="failed", failure=result.as_json())
    return json_response(answer)


async def _profile(rapport: Rapport, key: ApiKey, ref: Any) -> dict[str, Any]:
    if ref is None:
        return empty_profile_context()
    if not isinstance(ref, str):
        raise ApiError(
            422,
            "invalid_profile_ref",
            "profile must be a ref such as user_id:dana",
            field="profile",
        )
    try:
        return profile_context(await resolve_profile(rapport, key.workspace_id, ref))
    except ApiError as error:
        status = 422 if error.status == 400 else error.status
        raise ApiError(status, error.code, error.message, field="profile") from None


def preview_links(public_url: str) -> dict[str, str]:
    """The links a template may show, as preview links: the real URL shape, no real token."""
    return {
        name: link_url(public_url, cast(LinkKind, name), PREVIEW_LINK_TOKEN)
        for name in TEMPLATE_LINKS
    }


def _codes(value: Any) -> dict[str, str]:
    """Sample promo codes by pool id: shown as given, nothing claimed."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(
            422, "invalid_codes", "codes must be an object: pool id -> sample code", field="codes"
        )
    for pool_id, code in value.items():
        if not isinstance(code, str) or not code:
            raise ApiError(
                422,
                "invalid_codes",
                f"codes.{pool_id} must be a sample code (a non-empty string)",
                field=f"codes.{pool_id}",
            )
    return value


def _object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name, {})
    if not isinstance(value, dict):
        raise ApiError(422, f"invalid_{name}", f"{name} must be an object", field=name)
    return value


def _event(value: Any) -> dict[str, Any]:
    """A sample triggering event, in the shape ``event_context`` gives a real one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_event", "event must be an object", field="event")
    event = {"name": "", "type": "track", "properties": {}, "timestamp": "", "message_id": ""}
    for name, item in value.items():
        if name not in event:
            known = ", ".join(sorted(event))
            raise ApiError(
                422,
                "invalid_event",
                f"Unknown event field {name!r}; known: {known}",
                field=f"event.{name}",
            )
        wanted = dict if name == "properties" else str
        if not isinstance(item, wanted):
            raise ApiError(
                422,
                "invalid_event",
                f"event.{name} must be {'an object' if wanted is dict else 'a string'}",
                field=f"event.{name}",
            )
        event[name] = item
    return event
