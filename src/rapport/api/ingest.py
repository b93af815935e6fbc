"""Segment-compatible HTTP Tracking API: the routes existing SDKs post to unchanged.

``POST /v1/batch`` (also ``/v1/b``, ``/batch``, ``/b``) and the single calls
``/v1/{track,identify,page,screen,group,alias}`` with their one-letter forms
(``/v1/t`` ... as analytics.js posts them). ``GET /v1/projects/{writeKey}/settings``
is the settings document analytics.js boots from. ``GET /api/rejections`` lists
what ingest refused.

This is the hot path: bodies are decoded with msgspec, events are validated by
``rapport.core.tracking`` (no pydantic per event), and the answer is a plain 200
only once the event log has made the accepted events durable.
"""

from __future__ import annotations

import functools
import time
import zlib
from collections import Counter
from operator import attrgetter
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rapport.api.auth import basic_auth_user, get_rapport, require_secret_key
from rapport.api.errors import ApiError, error_response
from rapport.api.ingest_docs import (
    BATCH_BODY,
    DESCRIPTIONS,
    INGEST_RESPONSES,
    SINGLE_BODIES,
)
from rapport.api.ingest_priority import IngestActivity
from rapport.core.consent_gate import ConsentRules, apply_consent_rules
from rapport.core.model import Rejection
from rapport.core.tracking import (
    IngestRequest,
    Limits,
    Normalised,
    RequestRejected,
    bounded_payload,
    decode_batch,
    decode_single,
    normalise,
)
from rapport.runtime.service import Rapport
from rapport.settings import Settings
from rapport.storage.base import ApiKey

router = APIRouter(tags=["ingest"])

RETRY_AFTER_SECONDS = 5
"""What a throttled client is told to wait; SDKs back off and retry on 429."""

SETTINGS_MAX_AGE_SECONDS = 60

_ENCODER = msgspec.json.Encoder()
_GZIP_WBITS = zlib.MAX_WBITS | 16


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _ENCODER.encode(body), status_code=status, media_type="application/json", headers=headers
    )


# -- the request body ----------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, inflated if gzipped, refusing anything past ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return inflate_gzip(body, limit)
    raise ApiError(
        415,
        "unsupported_encoding",
        f"Content-Encoding {encoding[:40]!r} is not supported; send gzip or no encoding",
        field="Content-Encoding",
    )


def inflate_gzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip ``data`` but never past ``limit`` bytes (a gzip bomb stops there).

    Concatenated gzip members are allowed, as RFC 1952 says.
    """
    out: list[bytes] = []
    produced = 0
    remaining = data
    while True:
        inflater = zlib.decompressobj(_GZIP_WBITS)
        try:
            chunk = inflater.decompress(remaining, limit - produced + 1)
        except zlib.error as exc:
            raise _bad_gzip(f"body is not valid gzip ({exc})") from None
        produced += len(chunk)
        if produced > limit:
            raise ApiError(
                400,
                "batch_too_large",
                f"request body inflates to more than {limit} bytes; at most {limit} are accepted",
            )
        out.append(chunk)
        if not inflater.eof:
            raise _bad_gzip("gzip body is truncated")
        remaining = inflater.unused_data
        if not remaining.strip(b"\x00"):
            return b"".join(out)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        400,
        "batch_too_large",
        f"request body is {size} bytes; at most {limit} are accepted per request",
    )


def _bad_gzip(message: str) -> ApiError:
    return ApiError(400, "invalid_gzip", message, field="Content-Encoding")


# -- who is sending ------------------------------------------------------------


def header_write_key(request: Request) -> str | None:
    """A key from ``Authorization`` (Basic ``key:``, or Bearer) or ``X-Write-Key``."""
    user = basic_auth_user(request)
    if user:
        return user
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    header = request.headers.get("x-write-key", "").strip()
    return header or None


async def authenticate_ingest(rapport: Rapport, key: str) -> ApiKey:
    found = await rapport.authenticate(key)
    if found is None:
        raise ApiError(401, "invalid_key", "Unknown or revoked write key", field="writeKey")
    return found


def source_of(key: ApiKey) -> str:
    return f"{'secret_key' if key.kind == 'secret' else 'write_key'}:{key.id}"


def limits_of(rapport: Rapport) -> Limits:
    settings = rapport.settings
    return Limits(
        max_event_bytes=settings.max_event_bytes,
        max_batch_bytes=settings.max_batch_bytes,
        max_batch_events=settings.max_batch_events,
    )


# -- ingest --------------------------------------------------------------------


async def ingest(request: Request, event_type: str | None) -> Response:
    """Accept a batch (``event_type`` None) or a single call of ``event_type``."""
    rapport = get_rapport(request)
    activity: IngestActivity = request.app.state.ingest_activity
    started = time.perf_counter()
    activity.begin()
    try:
        return await _ingest(rapport, request, event_type)
    finally:
        activity.end()
        rapport.metrics.ingest_seconds.observe(time.perf_counter() - started)


async def _ingest(rapport: Rapport, request: Request, event_type: str | None) -> Response:
    if rapport.lag > rapport.settings.max_processing_lag:
        rapport.metrics.requests_throttled.inc()
        raise ApiError(
            429,
            "throttled",
            f"Processing is {rapport.lag} events behind; retry in {RETRY_AFTER_SECONDS}s",
            # analytics.js reads X-RateLimit-Reset; the server SDKs read Retry-After.
            headers={
                "Retry-After": str(RETRY_AFTER_SECONDS),
                "X-RateLimit-Reset": str(RETRY_AFTER_SECONDS),
            },
        )
    limits = limits_of(rapport)
    # A key sent in a header is checked before the body is read, so an unknown
    # sender never costs a body's worth of work.
    header_key = header_write_key(request)
    key = await authenticate_ingest(rapport, header_key) if header_key else None
    body = b""
    try:
        body = await read_body(request, limits.max_batch_bytes)
        decoded = (
            decode_batch(body, limits)
            if event_type is None
            else decode_single(body, event_type, limits)
        )
    except RequestRejected as exc:
        error = ApiError(400, exc.code, exc.message, field=exc.field)
        await _record_refused_request(rapport, key, error, body)
        raise error from None
    except ApiError as error:
        await _record_refused_request(rapport, key, error, body)
        raise
    if key is None:
        if decoded.write_key is None:
            raise ApiError(
                401,
                "missing_write_key",
                "Send the write key as Basic auth user ('<writeKey>:'), in the body's "
                "writeKey, or in the X-Write-Key header",
                field="writeKey",
            )
        key = await authenticate_ingest(rapport, decoded.write_key)
    return await _accept(rapport, key, decoded, limits)


async def _accept(
    rapport: Rapport, key: ApiKey, decoded: IngestRequest, limits: Limits
) -> Response:
    result = normalise(
        decoded,
        workspace_id=key.workspace_id,
        source=source_of(key),
        received_at=rapport.clock.now(),
        ids=rapport.ids,
        limits=limits,
    )
    rules = consent_rules_of(rapport)
    if rules and result.events:
        result = _withhold_unconsented(result, rules, decoded.is_batch)
    accepted = duplicates = 0
    if result.events:
        # Accepted means durable: nothing is answered before the append returns.
        fresh = await rapport.event_log.append(result.events)
        rapport.processor.notify()
        kept = (
            result.events
            if all(fresh)
            else [event for event, is_new in zip(result.events, fresh, strict=True) if is_new]
        )
        by_type = Counter(map(_event_type, kept))
        accepted = sum(by_type.values())
        duplicates = len(result.events) - accepted
        for kind, count in by_type.items():
            rapport.metrics.events_accepted.labels(kind).inc(count)
        if duplicates:
            rapport.metrics.events_duplicate.inc(duplicates)
    rejected = [_rejection_body(r) for r in result.rejections]
    if result.rejections:
        await _record(rapport, result.rejections)
        if not result.events:
            first = result.rejections[0]
            raise ApiError(
                400,
                first.code,
                first.message,
                field=first.field,
                extra={"success": False, "accepted": 0, "duplicates": 0, "rejected": rejected},
            )
    return _json(
        {"success": True, "accepted": accepted, "duplicates": duplicates, "rejected": rejected}
    )


_event_type = attrgetter("type")


def consent_rules_of(rapport: Rapport) -> ConsentRules:
    return _consent_rules(rapport.settings)


@functools.lru_cache(maxsize=4)
def _consent_rules(settings: Settings) -> ConsentRules:
    return settings.consent_rules()  # parsed once per settings, not per request


def _withhold_unconsented(result: Normalised, rules: ConsentRules, batch: bool) -> Normalised:
    """``result`` without what needs a consent the events do not carry (core.consent_gate)."""
    indexes: list[int] | None = None
    if batch:
        refused = {r.index for r in result.rejections}
        positions = (i for i in range(len(result.events) + len(refused)) if i not in refused)
        indexes = [next(positions) for _ in result.events]
    kept, rejections = apply_consent_rules(result.events, rules, indexes=indexes)
    if not rejections and kept is result.events:
        return result
    return Normalised(kept, sorted([*result.rejections, *rejections], key=_by_index))


def _by_index(rejection: Rejection) -> int:
    return -1 if rejection.index is None else rejection.index


def _rejection_body(rejection: Rejection) -> dict[str, Any]:
    body: dict[str, Any] = {"code": rejection.code, "message": rejection.message}
    if rejection.index is not None:
        body["index"] = rejection.index
    if rejection.field is not None:
        body["field"] = rejection.field
    return body


async def _record(rapport: Rapport, rejections: list[Rejection]) -> None:
    await rapport.storage.record_rejections(rejections)
    for code, count in Counter(r.code for r in rejections).items():
        rapport.metrics.events_rejected.labels(code).inc(count)


async def _record_refused_request(
    rapport: Rapport, key: ApiKey | None, error: ApiError, body: bytes
) -> None:
    """Keep a refused request when we know whose it is; anonymous junk is only counted."""
    if key is None:
        rapport.metrics.events_rejected.labels(error.code).inc()
        return
    await _record(
        rapport,
        [
            Rejection(
                workspace_id=key.workspace_id,
                received_at=rapport.clock.now(),
                code=error.code,
                message=error.message,
                field=error.field,
                source=source_of(key),
                payload=bounded_payload(body),
            )
        ],
    )


async def serve_ingest(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI endpoint for a POST to any of ``INGEST_PATHS``.

    Answers exactly as the routes below do (``ApiError`` becomes the JSON error
    shape) without FastAPI's routing, dependency and exception layers, which
    cost as much per request as validating a whole batch.
    """
    request = Request(scope, receive)
    try:
        response = await ingest(request, INGEST_PATHS[scope["path"]])
    except ApiError as error:
        response = error_response(error)
    await response(scope, receive, send)


def _batch_route() -> Any:
    async def ingest_batch(request: Request) -> Response:
        return await ingest(request, None)

    return ingest_batch


def _single_route(event_type: str) -> Any:
    async def ingest_single(request: Request) -> Response:
        return await ingest(request, event_type)

    ingest_single.__name__ = f"ingest_{event_type}"
    return ingest_single


BATCH_PATHS = ("/v1/batch", "/v1/b", "/batch", "/b")

INGEST_PATHS: dict[str, str | None] = dict.fromkeys(BATCH_PATHS)
"""Every ingest path and the event type it takes (``None``: a batch).

The app sends POSTs to these paths straight to ``ingest`` (see
``rapport.api.app``); the routes below describe them in the OpenAPI document
and answer everything else (other methods, a root path).
"""

for _index, _path in enumerate(BATCH_PATHS):
    router.add_api_route(
        _path,
        _batch_route(),
        methods=["POST"],
        summary="Send a batch of events",
        description=DESCRIPTIONS["batch"],
        openapi_extra=BATCH_BODY,
        responses=INGEST_RESPONSES,
        include_in_schema=_index == 0,
        name="ingest_batch" if _index == 0 else f"ingest_batch_{_index}",
    )

for _type, _body in SINGLE_BODIES.items():
    for _path, _short in ((f"/v1/{_type}", False), (f"/v1/{_type[0]}", True)):
        INGEST_PATHS[_path] = _type
        router.add_api_route(
            _path,
            _single_route(_type),
            methods=["POST"],
            summary=f"Send one {_type} call",
            description=DESCRIPTIONS[_type],
            openapi_extra=_body,
            responses=INGEST_RESPONSES,
            include_in_schema=not _short,
            name=f"ingest_{_type}_short" if _short else f"ingest_{_type}",
        )


# -- analytics.js settings -----------------------------------------------------


@router.get(
    "/v1/projects/{write_key}/settings",
    summary="Settings analytics.js boots from",
    description=(
        "The source settings document analytics.js (and analytics-next) fetches at "
        "start-up, pointing its Segment.io destination back at this server. Load "
        "analytics.js with `cdnURL` set to this server's URL. 404 for an unknown "
        "write key."
    ),
)
async def project_settings(write_key: str, request: Request) -> Response:
    key = await get_rapport(request).authenticate(write_key)
    # Only write keys: this document is fetched from web pages, where a secret
    # key must never be used.
    if key is None or key.kind != "write":
        raise ApiError(404, "not_found", "Unknown write key", field="writeKey")
    return _json(
        analytics_js_settings(write_key, host=request.url.netloc, scheme=request.url.scheme),
        headers={"Cache-Control": f"public, max-age={SETTINGS_MAX_AGE_SECONDS}"},
    )


def analytics_js_settings(write_key: str, *, host: str, scheme: str) -> dict[str, Any]:
    """Source settings with only the Segment.io destination, sending here."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": f"{host}/v1",
                "protocol": scheme,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
                "versionSettings": {"componentTypes": ["browser"]},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        # Sample rate 0: analytics.js sends no usage metrics anywhere.
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
        "consentSettings": {"allCategories": [], "hasUnmappedDestinations": False},
    }


# -- what was refused ----------------------------------------------------------


@router.get(
    "/api/rejections",
    tags=["rejections"],
    summary="Events and requests ingest refused, newest first",
    description=(
        "Every refused event (and every refused request whose key was known) with the "
        "reason, the field at fault and a bounded copy of what was sent. Page with "
        "`before=<next_before>`."
    ),
)
async def list_rejections(
    request: Request,
    key: Annotated[ApiKey, Depends(require_secret_key)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before: Annotated[
        int | None, Query(ge=1, description="`next_before` from the previous page")
    ] = None,
) -> Response:
    rows = await get_rapport(request).storage.list_rejections(key.workspace_id, limit, before)
    next_before = rows[-1].id if len(rows) == limit and rows else None
    return _json({"rejections": rows, "next_before": next_before})
