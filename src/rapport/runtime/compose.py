"""From an outbox message to a rendered message a channel can send.

The sender calls ``Composer`` on each message the policy gate let through.
The gate chose the channel and the address (``message.verdict``); the
composer does the rest, reading only stored facts, so composing the same
message again (a retry after a crash) gives the same message:

1. the profile, following merges (``profile`` in the template);
2. the event that triggered the journey, looked up in her timeline by
   message id (``Storage.find_profile_event``; ``event`` is empty when the
   step names none or it is no longer there);
3. the template: the step's ``template`` if it is written for the chosen
   channel, else ``<template>-<channel>`` (``delivery-alert`` for email and
   ``delivery-alert-sms`` for SMS let one step fall back across channels);
   its latest version, recorded as ``metadata["template_version"]``;
4. promo codes: one per pool the template reads (``codes.<pool>``, found by
   static analysis), claimed before rendering and the same for her on every
   message (``rapport.core.code_pools``);
5. signed links for the chosen channel and the step's topic
   (``rapport.channels.links.message_links``), made before the render so
   the template can show the unsubscribe link (``links.unsubscribe``, what
   an SMS carries instead of a ``List-Unsubscribe`` header);
6. the render of the template's parts.

The sender hands each claim's messages to ``Composer.prefetch`` first: 1-3
are then read for the whole claim in a few storage calls (one per kind and
workspace, one per template) rather than three per message.

Anything that cannot come right by retrying (no template for the channel, a
render failure, an exhausted or unknown pool) raises
``PermanentDeliveryError`` with a detail that says what to fix; the message
goes to the dead-letter list with it. A code claimed before a failed render
stays hers: the replayed message shows the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import msgspec

from rapport.channels.base import Category, OutgoingMessage, PermanentDeliveryError
from rapport.channels.links import LinkSigner, confirmation_link, message_links
from rapport.core.clock import Clock
from rapport.core.code_pools import (
    CodePoolNotFound,
    UnresolvablePoolReference,
    template_code_pools,
)
from rapport.core.journeys.effects import SendEffect
from rapport.core.model import Event, Profile, ProfileEvent
from rapport.core.templates import (
    CompiledTemplate,
    RenderContext,
    RenderFailure,
    TemplateCache,
    TemplateDefinition,
    event_context,
    profile_context,
    render_template,
)
from rapport.storage.base import Storage
from rapport.storage.journey_runs import OutboxMessage

CONFIRMATION_TEMPLATE = "contact-confirmation"
TEMPLATE_LINKS = ("unsubscribe",)
"""The message's links a template may show (``links.unsubscribe``); the open pixel,
click redirect and status callback are the channels' business."""
_BUILTIN_AT = datetime(2026, 1, 1, tzinfo=UTC)
POOLS_CACHED = 1024
"""Compiled templates whose pool analysis the composer keeps (all dropped when full)."""
PREFETCHED_KEPT = 4096
"""Prefetched messages kept for their compose (all dropped when full: a sender that
was stopped between a prefetch and its composes leaves entries no one takes)."""

_decode_event = msgspec.json.Decoder(Event).decode
_encode_json = msgspec.json.Encoder().encode
_CONTENT_NAMES = {("push", "deep_link"): "url"}
"""Template part -> ``OutgoingMessage.content`` key, where they differ."""


class Composer:
    """``await composer(message)``: the ``OutgoingMessage`` for an outbox message."""

    def __init__(
        self,
        storage: Storage,
        signer: LinkSigner,
        public_url: str,
        clock: Clock,
        *,
        templates: TemplateCache | None = None,
    ) -> None:
        self._storage = storage
        self._signer = signer
        self._public_url = public_url
        self._clock = clock
        self._templates = templates or TemplateCache()
        self._pools: dict[int, tuple[CompiledTemplate, list[str] | UnresolvablePoolReference]] = {}
        self._prefetched: dict[tuple[str, str], _Prefetched] = {}

    async def prefetch(self, messages: Sequence[OutboxMessage]) -> None:
        """Read what composing ``messages`` needs, a few storage calls for them all.

        The sender calls it with the messages of one claim it is about to
        compose: per workspace, one read of their profiles, one of their
        trigger events and one of each template they name, instead of three
        reads per message (each a trip to SQLite's reader thread). Each
        message's compose then takes its facts from here (once: the entry is
        removed). They are the stored facts read at the start of composing the
        claim, so a retry composes the same message and a template version
        saved before the claim is the one used. Anything not found here (a
        merged profile, a missing template) is read by the compose itself,
        which says what is wrong.
        """
        by_workspace: dict[str, list[tuple[OutboxMessage, SendEffect, str]]] = {}
        for message in messages:
            effect, verdict = message.effect, message.verdict
            if isinstance(effect, SendEffect) and verdict is not None and verdict.channel:
                group = by_workspace.setdefault(message.workspace_id, [])
                group.append((message, effect, verdict.channel))
        if len(self._prefetched) + len(messages) > PREFETCHED_KEPT:
            self._prefetched.clear()
        for workspace_id, group in by_workspace.items():
            ids = list(dict.fromkeys(message.profile_id for message, _, _ in group))
            profiles = await self._storage.load_profiles(workspace_id, ids)
            wanted = [
                (message.profile_id, effect.trigger_message_id)
                for message, effect, _ in group
                if effect.trigger_message_id is not None and message.profile_id in profiles
            ]
            events = await self._storage.find_profile_events(workspace_id, wanted) if wanted else {}
            templates: dict[tuple[str, str], TemplateDefinition | None] = {}
            for message, effect, channel in group:
                profile = profiles.get(message.profile_id)
                if profile is None or profile.id != message.profile_id:
                    continue  # merged since, or gone: the compose follows or reports it
                named = (effect.template, channel)
                if named not in templates:
                    try:
                        templates[named] = await self._template(workspace_id, *named)
                    except PermanentDeliveryError:
                        templates[named] = None  # the compose raises it, for this message
                definition = templates[named]
                if definition is None:
                    continue
                trigger = effect.trigger_message_id
                event = None if trigger is None else events.get((profile.id, trigger))
                key = (workspace_id, message.idempotency_key)
                self._prefetched[key] = _Prefetched(message, profile, event, definition)

    async def __call__(self, message: OutboxMessage) -> OutgoingMessage:
        effect = message.effect
        if not isinstance(effect, SendEffect):
            raise PermanentDeliveryError(
                f"message {message.idempotency_key!r} is a webhook call, not a message to compose"
            )
        verdict = message.verdict
        if verdict is None or verdict.channel is None:
            raise PermanentDeliveryError(
                f"message {message.idempotency_key!r} has no channel: the policy gate chose none"
            )
        channel = verdict.channel
        workspace_id = message.workspace_id
        prefetched = self._prefetched.pop((workspace_id, message.idempotency_key), None)
        if prefetched is not None and prefetched.message is message:
            profile = prefetched.profile
            definition = prefetched.template
            stored = prefetched.event
            event = None if stored is None else _decode_event(stored.body)
            compiled = self._compiled(definition)
            codes = await self._claim_codes(compiled, profile.id, message)
        else:
            profile = await self._profile(workspace_id, message.profile_id)
            definition = await self._template(workspace_id, effect.template, channel)
            compiled = self._compiled(definition)
            codes = await self._claim_codes(compiled, profile.id, message)
            event = await self._trigger(workspace_id, profile.id, effect.trigger_message_id)
        links = message_links(
            self._signer,
            self._public_url,
            workspace_id=workspace_id,
            profile_id=profile.id,
            idempotency_key=message.idempotency_key,
            channel=channel,
            topic=effect.topic,
        )
        context = RenderContext(
            now=self._clock.now(),
            profile=profile_context(profile),
            event={} if event is None else event_context(event),
            journey=self._journey_data(effect, workspace_id, profile.id),
            codes=codes,
            links={name: links[name] for name in TEMPLATE_LINKS},
        )
        rendered = render_template(compiled, context)
        if isinstance(rendered, RenderFailure):
            raise PermanentDeliveryError(_render_detail(definition, rendered))
        return OutgoingMessage(
            idempotency_key=message.idempotency_key,
            workspace_id=workspace_id,
            profile_id=profile.id,
            channel=channel,
            to=verdict.address or profile.id,
            category=cast(Category, effect.category),
            topic=effect.topic,
            content=_content(channel, rendered.parts),
            links=links,
            metadata={
                "journey_id": effect.journey_id,
                "version": effect.version,
                "step_id": effect.step_id,
                "template": definition.id,
                "template_version": definition.version,
            },
        )

    def _journey_data(self, effect: SendEffect, workspace_id: str, profile_id: str) -> Any:
        """The step's data; a confirmation message (double opt-in) also gets its signed link."""
        confirmation = effect.data.get("confirmation")
        if not isinstance(confirmation, dict):
            return effect.data
        link = confirmation_link(
            self._signer,
            self._public_url,
            workspace_id=workspace_id,
            profile_id=profile_id,
            channel=str(confirmation.get("channel")),
            address=str(confirmation.get("address")),
        )
        return {**effect.data, "confirmation": {**confirmation, "link": link}}

    async def _profile(self, workspace_id: str, profile_id: str) -> Profile:
        # Stored profiles are the live ones: one read when she was not merged since.
        found = await self._storage.load_profiles(workspace_id, [profile_id])
        if profile_id in found:
            return found[profile_id]
        live = await self._storage.resolve_profile_id(workspace_id, profile_id)
        if live is not None:
            found = await self._storage.load_profiles(workspace_id, [live])
            if live in found:
                return found[live]
        raise PermanentDeliveryError(f"profile {profile_id!r} no longer exists")

    async def _template(
        self, workspace_id: str, template_id: str, channel: str
    ) -> TemplateDefinition:
        named = await self._storage.get_template(workspace_id, template_id)
        if named is not None and named.channel == channel:
            return named
        variant_id = f"{template_id}-{channel}"
        variant = await self._storage.get_template(workspace_id, variant_id)
        if variant is not None and variant.channel == channel:
            return variant
        builtin = builtin_template(workspace_id, template_id, channel)
        if builtin is not None and named is None:
            return builtin
        if named is None:
            raise PermanentDeliveryError(f"template {template_id!r} does not exist")
        raise PermanentDeliveryError(
            f"template {template_id!r} is for {named.channel}, the message goes by {channel}"
            f" and there is no {channel} template {variant_id!r}"
        )

    def _compiled(self, definition: TemplateDefinition) -> CompiledTemplate:
        compiled = self._templates.get(definition)
        if isinstance(compiled, list):
            errors = "; ".join(str(error) for error in compiled)
            raise PermanentDeliveryError(
                f"template {definition.id!r} version {definition.version} does not compile:"
                f" {errors}"
            )
        return compiled

    async def _claim_codes(
        self, compiled: CompiledTemplate, profile_id: str, message: OutboxMessage
    ) -> dict[str, str]:
        pools = self._pools_read(compiled)
        if isinstance(pools, UnresolvablePoolReference):
            raise PermanentDeliveryError(
                f"template {compiled.id!r} version {compiled.version}: {pools}"
            )
        codes: dict[str, str] = {}
        for pool_id in pools:
            try:
                code = await self._storage.code_pools.claim_code(
                    message.workspace_id,
                    pool_id,
                    profile_id,
                    message.idempotency_key,
                    now=self._clock.now(),
                )
            except CodePoolNotFound:
                raise PermanentDeliveryError(
                    f"template {compiled.id!r} reads codes.{pool_id} but there is no code pool"
                    f" {pool_id!r}"
                ) from None
            if code is None:
                raise PermanentDeliveryError(
                    f"code pool {pool_id!r} is exhausted: no code left for template"
                    f" {compiled.id!r} (add codes: POST /api/code-pools/{pool_id}/codes)"
                )
            codes[pool_id] = code
        return codes

    def _pools_read(self, compiled: CompiledTemplate) -> list[str] | UnresolvablePoolReference:
        """``template_code_pools``, once per compiled template.

        The static analysis walks every part's syntax tree: a third of a
        message's composing time when done for each message. A compiled
        template never changes, and the entry holds it, so its ``id`` cannot
        be reused by another object while the entry is here.
        """
        found = self._pools.get(id(compiled))
        if found is not None and found[0] is compiled:
            return found[1]
        try:
            pools: list[str] | UnresolvablePoolReference = template_code_pools(compiled)
        except UnresolvablePoolReference as error:
            pools = error
        if len(self._pools) >= POOLS_CACHED:
            self._pools.clear()
        self._pools[id(compiled)] = (compiled, pools)
        return pools

    async def _trigger(
        self, workspace_id: str, profile_id: str, message_id: str | None
    ) -> Event | None:
        if message_id is None:
            return None
        stored = await self._storage.find_profile_event(workspace_id, profile_id, message_id)
        return None if stored is None else _decode_event(stored.body)


class _Prefetched:
    """What ``Composer.prefetch`` read for one message (``message``: that very claim)."""

    __slots__ = ("event", "message", "profile", "template")

    def __init__(
        self,
        message: OutboxMessage,
        profile: Profile,
        event: ProfileEvent | None,
        template: TemplateDefinition,
    ) -> None:
        self.message = message
        self.profile = profile
        self.event = event
        self.template = template


_BUILTIN_PARTS: dict[tuple[str, str], dict[str, str]] = {
    (CONFIRMATION_TEMPLATE, "email"): {
        "subject": "Please confirm your email address",
        "text": "Someone (we hope you) gave this address. Confirm it to receive our news:\n"
        "{{ journey.confirmation.link }}\n\nIf it was not you, ignore this message: you will"
        " hear nothing more from us.",
    },
    (CONFIRMATION_TEMPLATE, "sms"): {
        "body": "Confirm this number to receive our messages: {{ journey.confirmation.link }}"
        " (not you? ignore this text)",
    },
}
"""Templates Rapport brings itself, used when the workspace defines none of that id."""


def builtin_template(
    workspace_id: str, template_id: str, channel: str
) -> TemplateDefinition | None:
    """A built-in template (the double opt-in confirmation), or None."""
    parts = _BUILTIN_PARTS.get((template_id, channel))
    if parts is None:
        return None
    return TemplateDefinition(
        workspace_id=workspace_id,
        id=template_id,
        name="Contact confirmation (built in)",
        channel=channel,
        parts=parts,
        variables={},
        version=0,
        status="active",
        created_at=_BUILTIN_AT,
        updated_at=_BUILTIN_AT,
    )


def _content(channel: str, parts: dict[str, Any]) -> dict[str, str]:
    """Rendered parts as ``OutgoingMessage.content``: text, a webhook body as JSON text."""
    content: dict[str, str] = {}
    for name, value in parts.items():
        key = _CONTENT_NAMES.get((channel, name), name)
        content[key] = value if isinstance(value, str) else _encode_json(value).decode()
    return content


def _render_detail(definition: TemplateDefinition, failure: RenderFailure) -> str:
    where = failure.path if failure.line is None else f"{failure.path} line {failure.line}"
    return (
        f"template {definition.id!r} version {definition.version} failed to render"
        f" ({failure.code}) at {where}: {failure.message}"
    )
