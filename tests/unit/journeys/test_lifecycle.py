"""The version lifecycle as pure functions: which operations each state allows and
what they change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rapport.core.journeys import (
    ARCHIVE,
    ARCHIVED,
    DRAFT,
    PAUSE,
    PAUSED,
    PUBLISH,
    PUBLISHED,
    RESUME,
    IllegalTransition,
    JourneyVersion,
    entry_version,
    journey_state,
    save_draft,
    transition,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def version(number: int, status: str) -> JourneyVersion:
    return JourneyVersion(
        workspace_id="ws",
        journey_id="j",
        version=number,
        status=status,
        definition={"name": f"v{number}"},
        created_at=T0,
        updated_at=T0,
    )


def apply(versions: list[JourneyVersion], action: str) -> list[JourneyVersion]:
    changed = {v.version: v for v in transition(versions, action, T0 + timedelta(hours=1))}
    return [changed.get(v.version, v) for v in versions]


def statuses(versions: list[JourneyVersion]) -> list[str]:
    return [v.status for v in versions]


def test_saving_replaces_a_draft_or_adds_the_next_version() -> None:
    first = save_draft([], "ws", "j", {"name": "a"}, T0)
    assert (first.version, first.status, first.created_at) == (1, DRAFT, T0)
    later = T0 + timedelta(minutes=1)
    replaced = save_draft([first], "ws", "j", {"name": "b"}, later)
    assert (replaced.version, replaced.definition, replaced.created_at) == (1, {"name": "b"}, T0)
    assert replaced.updated_at == later
    after_publish = save_draft([version(1, PUBLISHED)], "ws", "j", {"name": "c"}, later)
    assert (after_publish.version, after_publish.status) == (2, DRAFT)
    after_archive = save_draft([version(1, ARCHIVED), version(2, ARCHIVED)], "ws", "j", {}, T0)
    assert after_archive.version == 3


@pytest.mark.parametrize(
    ("before", "action", "after"),
    [
        ([DRAFT], PUBLISH, [PUBLISHED]),
        ([PUBLISHED, DRAFT], PUBLISH, [PUBLISHED, PUBLISHED]),
        ([PUBLISHED, PUBLISHED, DRAFT], PAUSE, [PAUSED, PAUSED, DRAFT]),
        ([PAUSED, PAUSED, DRAFT], RESUME, [PUBLISHED, PUBLISHED, DRAFT]),
        ([PAUSED, DRAFT], ARCHIVE, [ARCHIVED, ARCHIVED]),
        ([DRAFT], ARCHIVE, [ARCHIVED]),
        ([ARCHIVED, DRAFT], PUBLISH, [ARCHIVED, PUBLISHED]),
    ],
)
def test_allowed_operations(before: list[str], action: str, after: list[str]) -> None:
    versions = [version(n, status) for n, status in enumerate(before, start=1)]
    assert statuses(apply(versions, action)) == after


@pytest.mark.parametrize(
    ("before", "action", "state"),
    [
        ([DRAFT], PAUSE, "draft"),
        ([DRAFT], RESUME, "draft"),
        ([PUBLISHED], PUBLISH, "live"),
        ([PUBLISHED], RESUME, "live"),
        ([PAUSED, DRAFT], PUBLISH, "paused"),
        ([PAUSED], PAUSE, "paused"),
        ([ARCHIVED], ARCHIVE, "archived"),
        ([ARCHIVED], PUBLISH, "archived"),
    ],
)
def test_refused_operations(before: list[str], action: str, state: str) -> None:
    versions = [version(n, status) for n, status in enumerate(before, start=1)]
    with pytest.raises(IllegalTransition) as raised:
        transition(versions, action, T0)
    assert (raised.value.action, raised.value.state) == (action, state)


def test_publishing_stamps_the_version_and_entries_take_the_newest() -> None:
    versions = apply([version(1, PUBLISHED), version(2, DRAFT)], PUBLISH)
    assert versions[1].published_at == T0 + timedelta(hours=1)
    assert versions[0].published_at is None  # untouched
    entry = entry_version(versions)
    assert entry is not None and entry.version == 2
    assert entry_version(apply(versions, PAUSE)) is None
    assert journey_state(versions) == "live"


def test_unknown_actions_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        transition([version(1, DRAFT)], "launch", T0)
    with pytest.raises(ValueError, match="at least one version"):
        transition([], PUBLISH, T0)
