"""What ``rapport journeys`` does: validate files offline, apply them, move versions.

``validate`` needs no data directory or database: it reads the files and
checks them with the same validator as the API, printing every error with
its path. The other commands work on the data directory or database like
``rapport segments`` (beside a running ``serve`` or ``worker``), through
``rapport.runtime.journey_admin``, so they accept and refuse exactly what
the API does.

Every function returns ``(lines, ok)``: what to print and whether the
command succeeded (the CLI exits 1 otherwise).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rapport.core.journeys import (
    PUBLISH,
    DocumentError,
    IllegalTransition,
    InvalidJourney,
    JourneyNotFound,
    JourneyVersion,
    entry_version,
    journey_state,
    parse_document,
    validate_journey,
)
from rapport.core.journeys.lifecycle import draft_of
from rapport.core.journeys.text import JSON, YAML
from rapport.runtime.clock import SystemClock
from rapport.runtime.journey_admin import UnknownSegments, apply_action, save_definition
from rapport.runtime.service import open_backends
from rapport.settings import Settings
from rapport.storage.base import EventLog, Storage

Lines = tuple[list[str], bool]
T = TypeVar("T")

_FORMATS = {".json": JSON, ".yaml": YAML, ".yml": YAML}


def read_file(path: Path) -> Any:
    """The document in ``path`` (JSON or YAML by extension, else guessed); DocumentError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(f"cannot read {path}: {exc}") from None
    return parse_document(text, _FORMATS.get(path.suffix.lower()))


def validate_files(paths: Sequence[Path]) -> Lines:
    """Check each file; every error is printed as ``FILE: PATH: message``."""
    lines: list[str] = []
    ok = True
    for path in paths:
        try:
            document = read_file(path)
        except DocumentError as exc:
            lines.append(f"{path}: {exc}")
            ok = False
            continue
        errors = validate_journey(document)
        if errors:
            ok = False
            lines += [f"{path}: {error}" for error in errors]
            lines.append(f"{path}: {_count(len(errors), 'error')}")
        else:
            triggers = _count(len(document["triggers"]), "trigger")
            steps = _count(len(document["steps"]), "step")
            lines.append(f"{path}: valid journey {document['id']!r} ({triggers}, {steps})")
    return lines, ok


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def describe(versions: Sequence[JourneyVersion]) -> str:
    """One line: ``welcome-series  live  entry v2  draft v3  Welcome series``."""
    newest = versions[-1]
    entry = entry_version(versions)
    draft = draft_of(versions)
    parts = [newest.journey_id, journey_state(versions)]
    if entry is not None:
        parts.append(f"entry v{entry.version}")
    if draft is not None:
        parts.append(f"draft v{draft.version}")
    parts.append(newest.name)
    return "  ".join(parts)


async def _with_storage(
    settings: Settings, workspace: str, run: Callable[[Storage, str], Awaitable[Lines]]
) -> Lines:
    return await _with_backends(settings, workspace, lambda storage, _, ws: run(storage, ws))


async def _with_backends(
    settings: Settings,
    workspace: str,
    run: Callable[[Storage, EventLog, str], Awaitable[Lines]],
) -> Lines:
    storage, event_log = await open_backends(settings)
    try:
        found = await storage.find_workspace(workspace)
        if found is None:
            return [f"no workspace called {workspace!r}"], False
        return await run(storage, event_log, found.id)
    finally:
        await event_log.close()
        await storage.close()


async def apply_file(settings: Settings, workspace: str, path: Path, publish: bool) -> Lines:
    """Save the file as its journey's draft, then publish it if asked."""
    try:
        document = read_file(path)
    except DocumentError as exc:
        return [f"{path}: {exc}"], False

    async def run(storage: Storage, workspace_id: str) -> Lines:
        clock = SystemClock()
        try:
            stored, created = await save_definition(storage, workspace_id, document, clock.now())
        except InvalidJourney as exc:
            return [f"{path}: {error}" for error in exc.errors], False
        verb = "created" if created else "saved"
        lines = [f"{stored.journey_id}: {verb} draft v{stored.version}"]
        if not publish:
            return lines, True
        try:
            versions = await apply_action(
                storage, workspace_id, stored.journey_id, PUBLISH, clock.now()
            )
        except (IllegalTransition, UnknownSegments, InvalidJourney) as exc:
            return [*lines, f"{stored.journey_id}: not published: {exc}"], False
        others = [v.version for v in versions if v.status == "published" and v is not versions[-1]]
        note = f"; v{', v'.join(map(str, others))} keep their in-flight instances" if others else ""
        return [*lines, f"{stored.journey_id}: published v{stored.version}{note}"], True

    return await _with_storage(settings, workspace, run)


async def list_journeys(settings: Settings, workspace: str) -> Lines:
    async def run(storage: Storage, workspace_id: str) -> Lines:
        grouped: dict[str, list[JourneyVersion]] = {}
        for version in await storage.list_journey_versions(workspace_id):
            grouped.setdefault(version.journey_id, []).append(version)
        return [describe(versions) for versions in grouped.values()] or ["no journeys"], True

    return await _with_storage(settings, workspace, run)


async def show_journey(settings: Settings, workspace: str, journey_id: str) -> Lines:
    """The journey's line, its versions, then its newest definition as YAML."""

    async def run(storage: Storage, workspace_id: str) -> Lines:
        versions = await storage.journey_versions(workspace_id, journey_id)
        if not versions:
            return [f"no journey {journey_id!r}"], False
        lines = [describe(versions), "versions:"]
        for v in versions:
            published = (
                "" if v.published_at is None else f", published {v.published_at:%Y-%m-%d %H:%M}"
            )
            lines.append(
                f"  v{v.version}  {v.status}  (updated {v.updated_at:%Y-%m-%d %H:%M}{published})"
            )
        lines.append(f"definition (v{versions[-1].version}):")
        dumped = yaml.safe_dump(versions[-1].definition, sort_keys=False, allow_unicode=True)
        lines += ["  " + line for line in dumped.splitlines()]
        return lines, True

    return await _with_storage(settings, workspace, run)


async def change_journey(settings: Settings, workspace: str, journey_id: str, action: str) -> Lines:
    """publish, pause, resume or archive; the journey's line afterwards."""

    async def run(storage: Storage, workspace_id: str) -> Lines:
        try:
            versions = await apply_action(
                storage, workspace_id, journey_id, action, SystemClock().now()
            )
        except JourneyNotFound:
            return [f"no journey {journey_id!r}"], False
        except (IllegalTransition, UnknownSegments, InvalidJourney) as exc:
            return [str(exc)], False
        return [describe(versions)], True

    return await _with_storage(settings, workspace, run)
