"""Message template definitions: one channel's parts, in Liquid, with declared defaults.

A template is addressed by a slug unique in its workspace (the ``template``
a journey's message step names) and is versioned like segment definitions
(``rapport.core.segments``): every write stores the next version, deleting
stores a ``deleted`` tombstone, and every version stays stored, so a message
can always be traced to the exact text it was rendered from.

Each channel has its own parts (``CHANNEL_PARTS``); each part is Liquid
source, except the webhook ``body``: a JSON value whose strings are Liquid
sources, so rendered values can never break the JSON structure around them.

``variables`` declares defaults by path into the render context
(``{"profile.traits.first_name": "there"}``): when the value at that path is
missing or null, the default is used instead (see ``rapport.core.templates.render``).

``parse_draft`` checks a JSON body's shape and returns every error with its
path (``$.variables['offer.code']``); the Liquid inside is checked by
``compile_template``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec

TEMPLATE_ID_PATTERN: Final = r"[a-z0-9](?:[a-z0-9_-]{0,98}[a-z0-9])?"
"""The id rule of segments and journeys: what a message step's ``template`` names."""
_TEMPLATE_ID = re.compile(TEMPLATE_ID_PATTERN)

MAX_NAME_LENGTH: Final = 200
MAX_DESCRIPTION_LENGTH: Final = 2000
MAX_PART_SOURCE: Final = 100_000
"""Characters of Liquid source in one part (or one webhook body string)."""
MAX_VARIABLES: Final = 200
MAX_WEBHOOK_DEPTH: Final = 10

ACTIVE: Final = "active"
DELETED: Final = "deleted"

DEFAULT_ROOTS: Final = ("profile", "event", "journey", "offer")
"""The roots a declared default may fill: not ``codes`` (a default promo code
would be shared by every customer who got it), nor ``links`` (a default link
would act for nobody, or for somebody else)."""
ROOTS: Final = (*DEFAULT_ROOTS, "codes", "links")
"""The names a template reads from the render context; anything else is an error."""

_SEGMENT = r"[A-Za-z_][A-Za-z0-9_-]*"
_VARIABLE_PATH = re.compile(rf"(?:{'|'.join(DEFAULT_ROOTS)})(?:\.{_SEGMENT})+")


@dataclass(frozen=True, slots=True)
class ChannelParts:
    """The parts a channel's template has: ``required`` ones, optional ones, and
    ``one_of`` groups of which at least one must be given."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        return self.required + self.one_of + self.optional


CHANNEL_PARTS: Final[Mapping[str, ChannelParts]] = {
    "email": ChannelParts(required=("subject",), one_of=("html", "text")),
    "sms": ChannelParts(required=("body",)),
    "push": ChannelParts(required=("title", "body"), optional=("deep_link",)),
    "in_app": ChannelParts(required=("title", "body")),
    "webhook": ChannelParts(required=("body",)),
}
CHANNELS: Final = frozenset(CHANNEL_PARTS)

HTML_PARTS: Final = frozenset({("email", "html")})
"""Parts rendered with HTML autoescaping: every value a template outputs is escaped."""
JSON_PARTS: Final = frozenset({("webhook", "body")})
"""Parts that are a JSON value whose strings are Liquid sources."""


class TemplateDefinition(msgspec.Struct, frozen=True, kw_only=True):
    """One stored version of a template."""

    workspace_id: str
    id: str
    name: str
    channel: str
    parts: dict[str, Any]
    """Part name -> Liquid source (a JSON value for the webhook body)."""
    variables: dict[str, Any]
    """Context path -> the default used when the value there is missing or null."""
    version: int
    status: str
    created_at: datetime
    """When this id was (re)created; kept across updates, new after a delete."""
    updated_at: datetime
    description: str = ""

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


class TemplateDraft(msgspec.Struct, frozen=True, kw_only=True):
    """What a caller writes; the storage adds version, status and times."""

    workspace_id: str
    id: str
    name: str
    channel: str
    parts: dict[str, Any]
    variables: dict[str, Any] = {}
    description: str = ""


class TemplateAlreadyExists(Exception):
    """A create-only write found an active template with the same id."""

    def __init__(self, workspace_id: str, template_id: str) -> None:
        super().__init__(f"template {template_id!r} already exists")
        self.workspace_id = workspace_id
        self.template_id = template_id


@dataclass(frozen=True, slots=True)
class TemplateError:
    """One thing wrong with a template, at ``path`` in its JSON body (``$.html``);
    ``line`` and ``column`` (1-based) place Liquid errors inside the part's source."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = "" if self.line is None else f" (line {self.line}, column {self.column})"
        return f"{self.path}: {self.message}{where}"

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"path": self.path, "message": self.message}
        if self.line is not None:
            body["line"] = self.line
            body["column"] = self.column
        return body


def is_template_id(value: str) -> bool:
    return _TEMPLATE_ID.fullmatch(value) is not None


def is_variable_path(value: str) -> bool:
    """``profile.traits.first_name``: a root, then dot-separated names."""
    return _VARIABLE_PATH.fullmatch(value) is not None


def next_template(
    previous: TemplateDefinition | None, draft: TemplateDraft, now: datetime
) -> TemplateDefinition:
    """The version that writing ``draft`` stores after ``previous`` (active or deleted)."""
    recreated = previous is None or not previous.active
    return TemplateDefinition(
        workspace_id=draft.workspace_id,
        id=draft.id,
        name=draft.name,
        description=draft.description,
        channel=draft.channel,
        parts=draft.parts,
        variables=draft.variables,
        version=1 if previous is None else previous.version + 1,
        status=ACTIVE,
        created_at=now if recreated or previous is None else previous.created_at,
        updated_at=now,
    )


def deleted_template(previous: TemplateDefinition, now: datetime) -> TemplateDefinition:
    """The tombstone that deleting ``previous`` stores."""
    return msgspec.structs.replace(
        previous, status=DELETED, version=previous.version + 1, updated_at=now
    )


def parse_draft(
    workspace_id: str, template_id: str, body: Mapping[str, Any]
) -> TemplateDraft | list[TemplateError]:
    """The draft a JSON body (id aside) describes, or every shape error in it.

    The body has ``name``, ``channel``, the channel's parts at the top level
    (``subject``, ``html``...), optional ``description`` and ``variables``.
    """
    errors: list[TemplateError] = []
    allowed = {"id", "name", "description", "channel", "variables"}
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        errors.append(
            TemplateError("$.name", f"name must be a non-empty string of at most {MAX_NAME_LENGTH}")
        )
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH:
        errors.append(
            TemplateError(
                "$.description", f"description must be a string of at most {MAX_DESCRIPTION_LENGTH}"
            )
        )
    channel = body.get("channel")
    parts: dict[str, Any] = {}
    if not isinstance(channel, str) or channel not in CHANNEL_PARTS:
        errors.append(
            TemplateError("$.channel", f"channel must be one of {', '.join(sorted(CHANNELS))}")
        )
    else:
        shape = CHANNEL_PARTS[channel]
        allowed.update(shape.all)
        parts = _parts(channel, shape, body, errors)
    variables = _variables(body.get("variables", {}), errors)
    for field in sorted(body):
        if field not in allowed:
            known = ", ".join(sorted(allowed))
            errors.append(TemplateError(f"$.{field}", f"unknown field; this template has {known}"))
    if errors:
        return errors
    return TemplateDraft(
        workspace_id=workspace_id,
        id=template_id,
        name=str(name),
        description=str(description),
        channel=str(channel),
        parts=parts,
        variables=variables,
    )


def _parts(
    channel: str, shape: ChannelParts, body: Mapping[str, Any], errors: list[TemplateError]
) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    for part in shape.all:
        if part not in body or body[part] is None:
            if part in shape.required:
                errors.append(TemplateError(f"$.{part}", f"a {channel} template needs {part}"))
            continue
        value = body[part]
        if (channel, part) in JSON_PARTS:
            _check_json(value, f"$.{part}", 0, errors)
        elif not isinstance(value, str):
            errors.append(TemplateError(f"$.{part}", f"{part} must be a string of Liquid"))
            continue
        elif len(value) > MAX_PART_SOURCE:
            errors.append(
                TemplateError(f"$.{part}", f"{part} must be at most {MAX_PART_SOURCE} characters")
            )
            continue
        parts[part] = value
    if shape.one_of and not any(part in parts for part in shape.one_of):
        wanted = " or ".join(shape.one_of)
        errors.append(TemplateError(f"$.{shape.one_of[0]}", f"a {channel} template needs {wanted}"))
    return parts


def _check_json(value: Any, path: str, depth: int, errors: list[TemplateError]) -> None:
    if depth > MAX_WEBHOOK_DEPTH:
        errors.append(TemplateError(path, f"nested deeper than {MAX_WEBHOOK_DEPTH} levels"))
    elif isinstance(value, str) and len(value) > MAX_PART_SOURCE:
        errors.append(TemplateError(path, f"at most {MAX_PART_SOURCE} characters"))
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, f"{path}[{key!r}]", depth + 1, errors)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth + 1, errors)


def _variables(value: Any, errors: list[TemplateError]) -> dict[str, Any]:
    if not isinstance(value, dict):
        errors.append(TemplateError("$.variables", "variables must be an object: path -> default"))
        return {}
    if len(value) > MAX_VARIABLES:
        errors.append(TemplateError("$.variables", f"at most {MAX_VARIABLES} variables"))
    for path in value:
        if not is_variable_path(path):
            errors.append(
                TemplateError(
                    f"$.variables[{path!r}]",
                    "a variable is a path into the context starting with "
                    f"{', '.join(DEFAULT_ROOTS)} (e.g. profile.traits.first_name)",
                )
            )
    return dict(value)
