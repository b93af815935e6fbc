"""What the processor records about events it could not process, or would not.

The policy is the processor's (its module docstring, "Failures"); this module
makes the records:

* an event whose processing raised becomes a rejection with code
  ``processing_failed`` (``failed``), logged at error level with its offset;
  the event stays in the log, so it can be replayed once the cause is fixed;
* an event whose commit alone keeps failing is recorded the same way and
  moved past (``skip_next``), but only once the rejection is stored: an
  unreachable storage skips nothing;
* identifiers identity resolution refused are logged (``log_refusals``), not
  recorded: the event itself went through.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import structlog

from rapport.core.identity import Refusal
from rapport.core.model import Event, LogEntry, Rejection, dump_json
from rapport.storage.base import EventLog, ProcessingBatch, Storage

log = structlog.get_logger("rapport.processor")

MAX_FAILURE_PAYLOAD = 16 * 1024
FAILURE_CODE = "processing_failed"


def failed(entry: LogEntry, exc: Exception) -> Rejection:
    """Log the exception processing ``entry`` raised and make its rejection."""
    log.error(
        "processing.event_failed",
        offset=entry.offset,
        message_id=entry.event.message_id,
        workspace_id=entry.event.workspace_id,
        exc_info=exc,
    )
    return failure(entry, f"{type(exc).__name__}: {exc}")


def failure(entry: LogEntry, reason: str) -> Rejection:
    event = entry.event
    return Rejection(
        workspace_id=event.workspace_id,
        received_at=event.received_at,
        code=FAILURE_CODE,
        message=f"event at log offset {entry.offset} could not be processed: {reason}"[:2000],
        message_id=event.message_id,
        source=event.source,
        payload=_payload(event),
    )


def _payload(event: Event) -> str:
    try:
        raw = dump_json(event)[:MAX_FAILURE_PAYLOAD].decode(errors="replace")
    except (msgspec.EncodeError, TypeError, ValueError, OverflowError):
        # The event may be what broke processing; keep a readable trace of it.
        raw = repr(event)[:MAX_FAILURE_PAYLOAD]
    return raw


async def skip_next(
    storage: Storage,
    events: EventLog,
    consumer: str,
    after: int,
    error: Exception,
    recorded: int,
) -> tuple[LogEntry | None, int]:
    """Record the event after ``after`` as failed and commit ``consumer`` past it.

    Called when that event alone keeps failing to commit. The rejection is
    written first: if the storage is down that fails too and nothing is
    skipped. ``recorded`` is the offset of the last event recorded as skipped,
    so a retried skip records it once. Returns the skipped entry (None when
    nothing was skipped) and the new ``recorded``.
    """
    reason = f"commit kept failing: {type(error).__name__}: {error}"
    try:
        entries = await events.read(after, 1)
        if not entries:
            return None, recorded
        entry = entries[0]
        if recorded != entry.offset:
            await storage.record_rejections([failure(entry, reason)])
            recorded = entry.offset
        await storage.commit_processing(ProcessingBatch(consumer=consumer, offset=entry.offset))
    except Exception as exc:  # the storage itself is failing: logged, nothing skipped
        log.error("processing.skip_failed", after_offset=after, exc_info=exc)
        return None, recorded
    log.error(
        "processing.event_skipped",
        offset=entry.offset,
        message_id=entry.event.message_id,
        workspace_id=entry.event.workspace_id,
        error=reason,
    )
    return entry, recorded


def log_refusals(event: Event, refusals: Sequence[Refusal]) -> None:
    for refusal in refusals:
        # Junk ids are routine noise from broken SDK setups; conflicts and
        # caps are worth seeing (shared devices, shared mailboxes).
        emit = log.debug if refusal.reason in ("junk", "invalid") else log.info
        emit(
            "identity.refused",
            workspace_id=event.workspace_id,
            message_id=event.message_id,
            identifier=str(refusal.identifier),
            reason=refusal.reason,
            owner=refusal.owner,
        )
