"""Uploading the members of a static segment: ``POST /api/segments/{id}/members``.

The body adds and removes identifiers, JSON
(``{"add": [...], "remove": [...]}``, each entry ``{"type", "value"}`` or
``"type:value"``) or CSV (``Content-Type: text/csv``, one ``type,value`` per
line, an optional ``type,value`` header, ``?action=add|remove``). Every
entry is checked; bad ones are answered by position with the path of what
is wrong (``add[3].value``) while the good ones go on, as ingest does with a
batch.

Accepted means durable: each good entry becomes an internal event
(``rapport.core.static_segments``) appended to the event log before the
answer, and the processor applies it in the profile's order. The answer
therefore tells what was accepted, not what is applied yet: sizes and
members follow within milliseconds. The message ids derive from the upload
id, the request's ``Idempotency-Key`` when one is sent: a retried upload is
counted as ``duplicates`` and appends nothing twice.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from rapport.api.errors import ApiError
from rapport.api.ingest import read_body
from rapport.core.model import Event, Identifier
from rapport.core.segments import STATIC, SegmentDefinition
from rapport.core.static_segments import (
    ACTIONS,
    ADD,
    MAX_UPLOAD_ENTRIES,
    EntryError,
    StaticUpload,
    parse_entry,
    upload_event,
    upload_types,
)
from rapport.runtime.service import Rapport
from rapport.storage.base import ApiKey

MAX_UPLOAD_BYTES: Final = 8 * 1024 * 1024
"""A full upload of ``MAX_UPLOAD_ENTRIES`` long identifiers fits; gzip is inflated up to this."""
MAX_IDEMPOTENCY_KEY: Final = 99
UPLOAD_ID_PREFIX: Final = "upl"
_ENCODER = msgspec.json.Encoder()

UPLOAD_OPENAPI: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        action: {
                            "type": "array",
                            "items": {
                                "oneOf": [
                                    {
                                        "type": "object",
                                        "required": ["type", "value"],
                                        "properties": {
                                            "type": {"type": "string"},
                                            "value": {"type": ["string", "integer"]},
                                        },
                                        "additionalProperties": False,
                                    },
                                    {"type": "string", "description": "type:value"},
                                ]
                            },
                        }
                        for action in ACTIONS
                    },
                    "additionalProperties": False,
                },
                "example": {
                    "add": [{"type": "email", "value": "dana@example.com"}, "user_id:42"],
                    "remove": ["email:sam@example.com"],
                },
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": "type,value\nemail,dana@example.com\nuser_id,42\n",
            },
        },
    },
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY},
            "description": "Makes a retried upload append nothing twice",
        },
        {
            "name": "action",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": list(ACTIONS), "default": ADD},
            "description": "What the lines of a CSV body do (JSON bodies say it per list)",
        },
    ],
}


@dataclass
class _Entries:
    """The entries of a request, checked: identifiers to append, and what was refused."""

    good: list[tuple[str, int, Identifier]] = field(default_factory=list)
    """``(action, index, identifier)`` in request order."""
    rejected: list[dict[str, Any]] = field(default_factory=list)


async def accept_upload(
    rapport: Rapport, key: ApiKey, definition: SegmentDefinition, request: Request
) -> Response:
    """Check the upload, append one event per good entry, answer the counts."""
    if definition.kind != STATIC:
        raise ApiError(
            409,
            "segment_not_static",
            f"Segment {definition.id!r} is {definition.kind}: its members follow its condition;"
            " only static segments take uploaded members",
            field="id",
        )
    upload_id = _upload_id(rapport, request)
    raw = await read_body(request, MAX_UPLOAD_BYTES)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "text/csv":
        entries = _csv_entries(rapport, raw, request.query_params.get("action", ADD))
    else:
        entries = _json_entries(rapport, raw)
    if not entries.good:
        first = entries.rejected[0]
        raise ApiError(
            422,
            "invalid_members",
            f"No entry is usable: {first['message']}",
            field=first["field"],
            extra={"accepted": 0, "duplicates": 0, "rejected": entries.rejected},
        )
    now = rapport.clock.now()
    events: list[Event] = [
        upload_event(
            key.workspace_id,
            StaticUpload(
                segment_id=definition.id,
                version=definition.version,
                action=action,
                identifier=identifier,
                upload_id=upload_id,
            ),
            rapport.rules,
            now,
            uploaded_by=f"admin:{key.id}",
        )
        for action, _, identifier in entries.good
    ]
    # Accepted means durable: nothing is answered before the append returns.
    fresh = await rapport.event_log.append(events)
    rapport.processor.notify()
    accepted = sum(fresh)
    return Response(
        _ENCODER.encode(
            {
                "segment_id": definition.id,
                "version": definition.version,
                "upload_id": upload_id,
                "accepted": accepted,
                "duplicates": len(events) - accepted,
                "rejected": entries.rejected,
            }
        ),
        media_type="application/json",
    )


def _upload_id(rapport: Rapport, request: Request) -> str:
    given = request.headers.get("idempotency-key", "").strip()
    if len(given) > MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} characters",
            field="Idempotency-Key",
        )
    return given or rapport.ids.new_id(UPLOAD_ID_PREFIX)


def _json_entries(rapport: Rapport, raw: bytes) -> _Entries:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"Body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_upload", 'The body must be {"add": [...], "remove": [...]}')
    for name in sorted(body):
        if name not in ACTIONS:
            raise ApiError(
                422, "unknown_field", f"Unknown field {name!r}; use add and remove", field=name
            )
    lists: dict[str, list[Any]] = {}
    for action in ACTIONS:
        given = body.get(action)
        if given is None:
            continue
        if not isinstance(given, list):
            raise ApiError(
                422, "invalid_upload", f"{action} must be a list of identifiers", field=action
            )
        lists[action] = given
    _check_count(sum(len(given) for given in lists.values()), next(iter(lists), ADD))
    entries = _Entries()
    for action, given in lists.items():
        for index, item in enumerate(given):
            _take(entries, rapport, action, index, parse_entry(item, rapport.rules))
    _refuse_conflicts(entries)
    return entries


def _csv_entries(rapport: Rapport, raw: bytes, action: str) -> _Entries:
    if action not in ACTIONS:
        raise ApiError(422, "invalid_action", "action must be add or remove", field="action")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_csv", f"The CSV body is not UTF-8: {exc}") from None
    rows: list[tuple[int, list[str]]] = []
    """``(line number, cells)`` of the lines that are not blank."""
    reader = csv.reader(text.splitlines())
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise ApiError(400, "invalid_csv", f"The body is not CSV: {exc}") from None
    if rows and [cell.strip().lower() for cell in rows[0][1]] == ["type", "value"]:
        rows = rows[1:]
    _check_count(len(rows), action)
    entries = _Entries()
    for index, (line, row) in enumerate(rows):
        if len(row) == 2:
            parsed = parse_entry({"type": row[0].strip(), "value": row[1]}, rapport.rules)
        elif len(row) == 1:
            parsed = parse_entry(row[0].strip(), rapport.rules)
        else:
            parsed = EntryError(
                "", "invalid_entry", f"a line is type,value; found {len(row)} cells"
            )
        _take(entries, rapport, action, index, parsed, line=line)
    return entries


def _check_count(count: int, action: str) -> None:
    if count == 0:
        raise ApiError(
            422,
            "invalid_upload",
            "The upload holds no entry: add or remove identifiers",
            field=action,
        )
    if count > MAX_UPLOAD_ENTRIES:
        raise ApiError(
            413,
            "upload_too_large",
            f"{count} entries; at most {MAX_UPLOAD_ENTRIES} per request: split the list",
            field=action,
        )


def _take(
    entries: _Entries,
    rapport: Rapport,
    action: str,
    index: int,
    parsed: Identifier | EntryError,
    line: int | None = None,
) -> None:
    if isinstance(parsed, Identifier):
        entries.good.append((action, index, parsed))
        return
    rejected: dict[str, Any] = {
        "index": index,
        "field": f"{action}[{index}]{parsed.path}",
        "code": parsed.code,
        "message": parsed.message,
    }
    if line is not None:
        rejected["line"] = line
    if parsed.code == "unknown_identifier_type":
        rejected["types"] = upload_types(rapport.rules)
    entries.rejected.append(rejected)


def _refuse_conflicts(entries: _Entries) -> None:
    """An identifier both added and removed in one request says nothing: both are refused."""
    actions: dict[Identifier, set[str]] = {}
    for action, _, identifier in entries.good:
        actions.setdefault(identifier, set()).add(action)
    conflicting = {identifier for identifier, both in actions.items() if len(both) > 1}
    if not conflicting:
        return
    kept: list[tuple[str, int, Identifier]] = []
    for action, index, identifier in entries.good:
        if identifier in conflicting:
            entries.rejected.append(
                {
                    "index": index,
                    "field": f"{action}[{index}]",
                    "code": "conflicting_entry",
                    "message": f"{identifier} is both added and removed in this upload",
                }
            )
        else:
            kept.append((action, index, identifier))
    entries.good = kept
