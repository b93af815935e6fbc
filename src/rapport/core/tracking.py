"""Segment HTTP Tracking API payloads: decode, validate and normalise into ``Event``s.

Two steps, because the write key may sit inside the body and the workspace is
only known once it is authenticated:

1. ``decode_batch`` / ``decode_single`` turn the request body into an
   ``IngestRequest``: the write key, the batch-level defaults and each event
   still as raw JSON bytes (so its size is known exactly and a rejected event
   can be kept as it was sent). Problems here refuse the whole request
   (``RequestRejected``).
2. ``normalise`` validates each event on its own and builds the ``Event``s.
   A bad event becomes a ``Rejection``; the good ones in the same batch go on.

Rules follow the Segment spec: every event needs ``userId`` or
``anonymousId`` (numbers are coerced to strings), ``track`` needs ``event``,
``alias`` needs ``previousId`` and ``userId``, ``group`` needs ``groupId``;
``timestamp`` is corrected for device clock skew with ``sentAt``; batch-level
``context`` and ``integrations`` are merged under each event's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from rapport.core.identity import JUNK_VALUES
from rapport.core.ids import IdGenerator
from rapport.core.model import EVENT_TYPES, Event, Rejection
from rapport.core.tracking_fields import (
    coerce_id,
    deep_merge,
    field_error,
    nesting_exceeds,
    parse_timestamp,
)

MAX_MESSAGE_ID_CHARS = 99
"""A messageId must be shorter than 100 characters (it is the dedup key)."""

MAX_NESTING = 64
"""Deepest nesting of objects/arrays accepted in an event (and in batch defaults).

Real events nest a handful of levels; a bound keeps every later encode, decode
and merge of the event far from the interpreter's recursion limit.
"""

MAX_REJECTED_PAYLOAD_CHARS = 4096
"""How much of a rejected event is kept for inspection."""

_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Limits:
    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    max_batch_events: int = 2500


class RequestRejected(Exception):
    """The request as a whole is unusable (bad JSON, too large, too many events)."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(slots=True)
class IngestRequest:
    """A decoded request whose events are still raw JSON."""

    write_key: str | None
    events: list[msgspec.Raw]
    event_type: str | None = None
    """The type a single call takes from its path; ``None`` for a batch."""
    sent_at: datetime | None = None
    context: dict[str, Any] = field(default_factory=dict)
    integrations: dict[str, Any] = field(default_factory=dict)
    may_contain_nul: bool = True
    """False once the whole body was seen to hold no ``\\u0000`` escape: then
    no event needs searching for one (one search per body instead of one per
    event)."""

    @property
    def is_batch(self) -> bool:
        return self.event_type is None


@dataclass(slots=True)
class Normalised:
    events: list[Event]
    rejections: list[Rejection]


# -- step 1: decode ------------------------------------------------------------


class _BatchEnvelope(msgspec.Struct):
    batch: list[msgspec.Raw] | None = None
    writeKey: Any = None
    sentAt: str | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


class _SingleEnvelope(msgspec.Struct):
    writeKey: Any = None


_EnvelopeT = TypeVar("_EnvelopeT", _BatchEnvelope, _SingleEnvelope)
_BATCH_DECODER = msgspec.json.Decoder(_BatchEnvelope)
_SINGLE_DECODER = msgspec.json.Decoder(_SingleEnvelope)


def decode_batch(body: bytes, limits: Limits) -> IngestRequest:
    """Decode a ``/v1/batch`` body: ``{"batch": [...], "context", "sentAt", ...}``."""
    envelope = _decode_envelope(_BATCH_DECODER, body, limits)
    if envelope.batch is None:
        raise RequestRejected("missing_field", "batch is required (an array of events)", "batch")
    if len(envelope.batch) > limits.max_batch_events:
        raise RequestRejected(
            "too_many_events",
            f"batch has {len(envelope.batch)} events; at most {limits.max_batch_events} "
            "are accepted per request",
            "batch",
        )
    for name, value in (("context", envelope.context), ("integrations", envelope.integrations)):
        if value and nesting_exceeds(value, MAX_NESTING - 1):
            raise RequestRejected(
                "too_deep", f"{name} nests deeper than {MAX_NESTING} levels", name
            )
    sent_at = None
    if envelope.sentAt is not None:
        sent_at = parse_timestamp(envelope.sentAt)
        if sent_at is None:
            raise RequestRejected(
                "invalid_timestamp", "sentAt is not an ISO-8601 date-time", "sentAt"
            )
    return IngestRequest(
        write_key=_write_key(envelope.writeKey),
        events=envelope.batch,
        sent_at=sent_at,
        context=envelope.context or {},
        integrations=envelope.integrations or {},
        may_contain_nul=contains_nul_escape(body),
    )


def decode_single(body: bytes, event_type: str, limits: Limits) -> IngestRequest:
    """Decode a single call (``/v1/track`` ...): the body is the event itself."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    envelope = _decode_envelope(_SINGLE_DECODER, body, limits)
    body = _strip_bom(body)
    return IngestRequest(
        write_key=_write_key(envelope.writeKey),
        events=[msgspec.Raw(body)],
        event_type=event_type,
        may_contain_nul=contains_nul_escape(body),
    )


def _decode_envelope(
    decoder: msgspec.json.Decoder[_EnvelopeT], body: bytes, limits: Limits
) -> _EnvelopeT:
    if len(body) > limits.max_batch_bytes:
        raise RequestRejected(
            "batch_too_large",
            f"request body is {len(body)} bytes; at most {limits.max_batch_bytes} are accepted",
        )
    body = _strip_bom(body)
    if not body.strip():
        raise RequestRejected("invalid_json", "request body is empty")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        path, message = field_error(exc)
        if not path:
            raise RequestRejected("invalid_json", "request body must be a JSON object") from None
        raise RequestRejected("invalid_field", message, path) from None
    except msgspec.DecodeError as exc:
        raise RequestRejected("invalid_json", f"request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise RequestRejected("invalid_json", "request body is not valid UTF-8") from None
    except RecursionError:
        raise RequestRejected("invalid_json", "request body is nested too deeply") from None


def _strip_bom(body: bytes) -> bytes:
    # Some HTTP clients on Windows prefix UTF-8 text with a byte-order mark.
    return body[3:] if body.startswith(_UTF8_BOM) else body


def _write_key(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# -- step 2: normalise ---------------------------------------------------------


class _IncomingEvent(msgspec.Struct, gc=False):
    """One event as a client sends it; unknown fields are ignored.

    ``gc=False``: it lives only while its ``Event`` is built and holds no
    cycles, so the cyclic collector need not track one per event.
    """

    type: str | None = None
    messageId: str | None = None
    userId: str | int | float | None = None
    anonymousId: str | int | float | None = None
    previousId: str | int | float | None = None
    groupId: str | int | float | None = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    timestamp: str | None = None
    sentAt: str | None = None
    traits: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


_EVENT_DECODER = msgspec.json.Decoder(_IncomingEvent)


class _Invalid(Exception):
    """One event is refused; ``field`` is relative to the event (``""``: all of it)."""

    def __init__(self, code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def normalise(
    request: IngestRequest,
    *,
    workspace_id: str,
    source: str,
    received_at: datetime,
    ids: IdGenerator,
    limits: Limits,
) -> Normalised:
    """Validate every event of ``request``; build ``Event``s and ``Rejection``s."""
    events: list[Event] = []
    rejections: list[Rejection] = []
    batch = request.is_batch
    for index, raw in enumerate(request.events):
        try:
            events.append(
                _normalise_event(raw, request, workspace_id, source, received_at, ids, limits)
            )
        except _Invalid as invalid:
            # Fields are named as a path into the request: ``batch.3.userId``.
            path = [f"batch.{index}"] if batch else []
            if invalid.field:
                path.append(invalid.field)
            rejections.append(
                Rejection(
                    workspace_id=workspace_id,
                    received_at=received_at,
                    code=invalid.code,
                    message=invalid.message,
                    field=".".join(path) or None,
                    index=index if batch else None,
                    message_id=_message_id_of(raw),
                    source=source,
                    payload=bounded_payload(bytes(raw)),
                )
            )
    return Normalised(events, rejections)


def _is_junk(value: str | None) -> bool:
    return value is None or value.strip().casefold() in JUNK_VALUES


def contains_nul_escape(data: bytes) -> bool:
    """Whether JSON text has a ``\\u0000`` escape (not an escaped backslash + "u0000")."""
    start = data.find(b"\\u0000")
    while start != -1:
        backslashes = 0
        while start - backslashes - 1 >= 0 and data[start - backslashes - 1] == 0x5C:
            backslashes += 1
        if backslashes % 2 == 0:
            return True
        start = data.find(b"\\u0000", start + 1)
    return False


def _normalise_event(
    raw: msgspec.Raw,
    request: IngestRequest,
    workspace_id: str,
    source: str,
    received_at: datetime,
    ids: IdGenerator,
    limits: Limits,
) -> Event:
    # Written for speed (ingest's hot path, once per event): one copy of the
    # raw bytes, cheap checks first, and an ``Event`` built without the keyword
    # arguments it rarely needs (see the end).
    data = bytes(raw)
    size = len(data)
    if size > limits.max_event_bytes:
        raise _Invalid(
            "event_too_large",
            f"event is {size} bytes; at most {limits.max_event_bytes} are accepted per event",
        )
    if request.may_contain_nul and contains_nul_escape(data):
        # PostgreSQL text and JSONB cannot hold U+0000; refusing it here keeps
        # the event from failing later, in storage, on one backend only.
        raise _Invalid("invalid_character", "strings must not contain the NUL character (\\u0000)")
    try:
        incoming = _EVENT_DECODER.decode(data)
    except msgspec.ValidationError as exc:
        path, message = field_error(exc)
        if not path:
            raise _Invalid("invalid_event", "an event must be a JSON object") from None
        raise _Invalid("invalid_field", message, path) from None
    except UnicodeDecodeError:
        raise _Invalid("invalid_event", "event is not valid UTF-8") from None
    except RecursionError:
        raise _Invalid("invalid_event", "event is nested too deeply") from None

    # Counting brackets is cheap and bounds the depth; only an event with many
    # of them is walked to measure its real depth.
    if data.count(b"{") + data.count(b"[") > MAX_NESTING and nesting_exceeds(
        [incoming.traits, incoming.properties, incoming.context, incoming.integrations],
        MAX_NESTING,
    ):
        raise _Invalid("too_deep", f"event nests deeper than {MAX_NESTING} levels")

    event_type = request.event_type or incoming.type
    if event_type not in EVENT_TYPES:
        if event_type is None:
            raise _Invalid("missing_field", "type is required", "type")
        raise _Invalid(
            "invalid_type",
            f"type {event_type[:64]!r} is not one of " + ", ".join(sorted(EVENT_TYPES)),
            "type",
        )

    user_id = coerce_id(incoming.userId)
    anonymous_id = coerce_id(incoming.anonymousId)
    if user_id is None and anonymous_id is None:
        raise _Invalid("missing_identity", "userId or anonymousId is required", "userId")
    if _is_junk(user_id) and _is_junk(anonymous_id):
        # Values like "undefined" are sent by many different people; an event
        # carrying only those cannot be attached to anyone.
        shown = user_id if user_id is not None else anonymous_id
        raise _Invalid(
            "missing_identity",
            f"{shown!r} is a placeholder, not an identifier; send a real userId or anonymousId",
            "userId" if user_id is not None else "anonymousId",
        )
    previous_id = coerce_id(incoming.previousId)
    group_id = coerce_id(incoming.groupId)
    if event_type == "track":
        if incoming.event is None or not incoming.event.strip():
            raise _Invalid("missing_field", "track needs event (the event's name)", "event")
    elif event_type == "alias":
        if previous_id is None:
            raise _Invalid("missing_field", "alias needs previousId", "previousId")
        if user_id is None:
            raise _Invalid("missing_field", "alias needs userId", "userId")
    elif event_type == "group" and group_id is None:
        raise _Invalid("missing_field", "group needs groupId", "groupId")

    message_id = incoming.messageId
    if not message_id:
        message_id = ids.new_id("msg")
    elif len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise _Invalid(
            "invalid_message_id",
            f"messageId must be shorter than {MAX_MESSAGE_ID_CHARS + 1} characters",
            "messageId",
        )

    sent_at = request.sent_at
    if incoming.sentAt is not None:
        sent_at = _timestamp(incoming.sentAt, "sentAt")
    original = None
    timestamp = received_at
    if incoming.timestamp is not None:
        original = _timestamp(incoming.timestamp, "timestamp")
        try:
            # The device's clock may be off; the delay between the call and
            # sending it (sentAt - timestamp) is what can be trusted.
            timestamp = (
                received_at - (sent_at - original)
                if sent_at is not None
                else original.astimezone(UTC)
            )
        except OverflowError:
            raise _Invalid("invalid_timestamp", "timestamp is out of range", "timestamp") from None

    context = incoming.context or {}
    if request.context:
        context = deep_merge(request.context, context)
    integrations = incoming.integrations or {}
    if request.integrations:
        integrations = deep_merge(request.integrations, integrations)

    # msgspec takes more than 15 keyword arguments on a much slower path
    # (measured: 0.5 us for 15, 1.5 us for 16), so the fields most events
    # leave empty are set afterwards, and only when they have a value.
    event = Event(
        workspace_id=workspace_id,
        message_id=message_id,
        type=event_type,
        timestamp=timestamp,
        received_at=received_at,
        source=source,
        user_id=user_id,
        anonymous_id=anonymous_id,
        event=incoming.event,
        traits=incoming.traits or {},
        properties=incoming.properties or {},
        context=context,
        integrations=integrations,
        original_timestamp=original,
        sent_at=sent_at,
    )
    if previous_id is not None:
        event.previous_id = previous_id
    if group_id is not None:
        event.group_id = group_id
    if incoming.name is not None:
        event.name = incoming.name
    if incoming.category is not None:
        event.category = incoming.category
    return event


def _timestamp(value: str, name: str) -> datetime:
    parsed = parse_timestamp(value)
    if parsed is None:
        raise _Invalid(
            "invalid_timestamp", f"{name} is not an ISO-8601 date-time: {value[:64]!r}", name
        )
    return parsed


_MESSAGE_ID_PATTERN = re.compile(rb'"messageId"\s*:\s*"([^"\\]{1,99})"')


def _message_id_of(raw: msgspec.Raw) -> str | None:
    """The messageId of a rejected event, if one can be read without trusting it."""
    found = _MESSAGE_ID_PATTERN.search(bytes(raw)[: MAX_REJECTED_PAYLOAD_CHARS * 4])
    return found.group(1).decode("utf-8", "replace") if found else None


def bounded_payload(raw: bytes) -> str:
    """A rejected request or event as text, cut to ``MAX_REJECTED_PAYLOAD_CHARS``."""
    text = raw[: MAX_REJECTED_PAYLOAD_CHARS * 4].decode("utf-8", "replace")
    return text[:MAX_REJECTED_PAYLOAD_CHARS]
