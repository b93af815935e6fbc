"""Rendering a compiled template for one customer: never raises.

The context a template reads has six roots:

``profile``
    ``id``; ``traits`` as plain values (``profile.traits.first_name``);
    ``identifiers`` by type, the first of each (``profile.identifiers.email``);
    ``consent`` as booleans (``profile.consent.email_marketing``);
    ``segments``, the ids of the segments she is in, sorted.
``event``
    The event that let her into the journey: ``name`` (the track event's name,
    else the page/screen name, else the type), ``type``, ``properties``,
    ``timestamp`` (ISO 8601) and ``message_id``; empty when there is none.
``journey``
    The journey's variables for her (a message step's ``data``).
``offer``
    The offer chosen for this message, if any (empty otherwise).
``codes``
    Promo codes claimed for this customer, by code pool id
    (``codes.welcome-10``): the composer (``rapport.runtime.compose``) finds
    the pools a template reads by static analysis, claims one code from each
    before rendering (the same code every time for one customer) and passes
    them here; empty in a preview. No declared default can fill it.
``links``
    The message's own signed links: ``links.unsubscribe`` (GET: the hosted
    preference page; POST: one-click unsubscribe from the message's topic),
    so a channel without headers (an SMS) can carry its unsubscribe link in
    its text. The composer signs them for the message before rendering;
    empty in a preview. No declared default can fill it.

Beside the roots, a render has its time, ``now``: what ``{{ "now" | date: "%Y" }}``
(or ``"today"``) shows. The composer passes its clock's time and a preview
the API's, so a run on a virtual clock renders the virtual date; the
machine's clock is never read.

The rule for missing values, in order:

1. a declared variable (``variables``: path -> default) whose value is
   missing or null gets its default, and its path is listed in
   ``defaults_used``;
2. any other missing value is undefined: it may be tested (``if``,
   ``unless``, ``== nil``) or given an inline ``| default: ...``, but
   outputting it or looping over it fails the render with
   ``missing_variable`` naming it.

A failed render returns a ``RenderFailure`` (code, message, the part's path
and line) for the send pipeline to record as dropped with that reason: a
message is sent whole or not at all. Previewing a template against sample
data shows the same failure before any send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from liquid import BoundTemplate
from liquid.exceptions import LiquidError, ResourceLimitError, UndefinedError

from rapport.core.model import Event, Profile
from rapport.core.templates.compile import NOW_GLOBAL, CompiledTemplate, source_position
from rapport.core.templates.definitions import ROOTS

MISSING_VARIABLE: Final = "missing_variable"
LIMIT_EXCEEDED: Final = "limit_exceeded"
RENDER_ERROR: Final = "render_error"


@dataclass(frozen=True, slots=True)
class RenderContext:
    """What a template is rendered with (see the module docstring for each root).

    ``now`` is required so no caller can forget its clock: it is the render's
    time (``"now" | date``), an aware datetime from the runtime's ``Clock``."""

    now: datetime = field(kw_only=True)
    profile: Mapping[str, Any] = field(default_factory=lambda: empty_profile_context())
    event: Mapping[str, Any] = field(default_factory=dict)
    journey: Mapping[str, Any] = field(default_factory=dict)
    offer: Mapping[str, Any] | None = None
    codes: Mapping[str, str] = field(default_factory=dict)
    links: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rendered:
    """The rendered parts (part name -> text; a JSON value for a webhook body)."""

    parts: dict[str, Any]
    defaults_used: tuple[str, ...]
    """Declared variables whose default was used, by path, sorted."""


@dataclass(frozen=True, slots=True)
class RenderFailure:
    """Why a render produced no message: ``code`` is ``missing_variable``,
    ``limit_exceeded`` or ``render_error``; ``path`` the part (``$.html``)."""

    code: str
    message: str
    path: str
    line: int | None = None
    column: int | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "path": self.path}
        if self.line is not None:
            body["line"] = self.line
            body["column"] = self.column
        return body


def empty_profile_context(profile_id: str = "") -> dict[str, Any]:
    """The ``profile`` root of a profile with nothing known yet (a preview without one)."""
    return {"id": profile_id, "traits": {}, "identifiers": {}, "consent": {}, "segments": []}


def profile_context(profile: Profile) -> dict[str, Any]:
    """The ``profile`` root for a stored profile."""
    identifiers: dict[str, str] = {}
    for identifier in profile.identifiers:
        identifiers.setdefault(identifier.type, identifier.value)
    return {
        "id": profile.id,
        "traits": {name: trait.value for name, trait in profile.traits.items()},
        "identifiers": identifiers,
        "consent": {name: consent.granted for name, consent in profile.consent.items()},
        "segments": sorted(profile.segments),
    }


def event_context(event: Event) -> dict[str, Any]:
    """The ``event`` root for the triggering event."""
    return {
        "name": event.event or event.name or event.type,
        "type": event.type,
        "properties": event.properties,
        "timestamp": event.timestamp.isoformat(),
        "message_id": event.message_id,
    }


def render_template(compiled: CompiledTemplate, context: RenderContext) -> Rendered | RenderFailure:
    """Every part rendered with ``context`` and the declared defaults, or why not."""
    roots: dict[str, Any] = {
        "profile": context.profile,
        "event": context.event,
        "journey": context.journey,
        "offer": {} if context.offer is None else context.offer,
        "codes": context.codes,
        "links": context.links,
    }
    used = _apply_defaults(roots, compiled.variables)
    # Added after the defaults: a declared path can never reach it.
    roots[NOW_GLOBAL] = context.now
    parts: dict[str, Any] = {}
    for part in compiled.parts:
        path = f"$.{part.name}"
        try:
            parts[part.name] = _render_value(part.template, roots, path)
        except _PartFailed as failed:
            return failed.failure
    return Rendered(parts=parts, defaults_used=tuple(sorted(used)))


class _PartFailed(Exception):
    def __init__(self, failure: RenderFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _render_value(template: Any, roots: Mapping[str, Any], path: str) -> Any:
    if isinstance(template, BoundTemplate):
        return _render_source(template, roots, path)
    if isinstance(template, dict):
        return {
            key: _render_value(item, roots, f"{path}[{key!r}]") for key, item in template.items()
        }
    if isinstance(template, list):
        return [_render_value(item, roots, f"{path}[{i}]") for i, item in enumerate(template)]
    return template


def _render_source(template: BoundTemplate, roots: Mapping[str, Any], path: str) -> str:
    try:
        return template.render(**roots)
    except LiquidError as error:
        line, column = source_position(error)
        code = (
            MISSING_VARIABLE
            if isinstance(error, UndefinedError)
            else LIMIT_EXCEEDED
            if isinstance(error, ResourceLimitError)
            else RENDER_ERROR
        )
        failure = RenderFailure(code, str(error.message), path, line, column)
        raise _PartFailed(failure) from None
    except (TypeError, ValueError, ArithmeticError, RecursionError) as error:
        # Filters are third-party code run on customer data of any shape; a
        # value they cannot handle must drop this message, not the sender.
        failure = RenderFailure(RENDER_ERROR, f"{type(error).__name__}: {error}", path)
        raise _PartFailed(failure) from None


def _apply_defaults(roots: dict[str, Any], variables: Mapping[str, Any]) -> list[str]:
    """Put each declared default where its value is missing or null; the paths used.

    Mappings on the way are copied before a change, so the caller's context
    (a cached profile, say) is never modified.
    """
    used: list[str] = []
    for path, default in variables.items():
        names = path.split(".")
        if names[0] not in ROOTS:
            continue
        if _fill(roots, names, default):
            used.append(path)
    return used


def _fill(container: dict[str, Any], names: list[str], default: Any) -> bool:
    head, rest = names[0], names[1:]
    value = container.get(head)
    if not rest:
        if value is None:
            container[head] = default
            return True
        return False
    if value is None:
        value = {}
    elif not isinstance(value, Mapping):
        return False  # a scalar where the path goes on: the template sees the scalar
    child = dict(value)
    if _fill(child, rest, default):
        container[head] = child
        return True
    return False
