"""``rapport journeys``: offline validation of files, and apply / list / show / publish /
pause / resume / archive over a real SQLite data dir."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from rapport.cli import main
from rapport.core.segments import SegmentDraft
from rapport.storage.sqlite import open_sqlite

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "journeys"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def run(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["journeys", *args])
    return result.exit_code, result.output.splitlines()


def prepare(data_dir: Path, *segments: str) -> None:
    async def go() -> None:
        storage, log = await open_sqlite(data_dir)
        try:
            ws = await storage.ensure_workspace("default", "ws_1", T0)
            for segment_id in segments:
                await storage.put_segment(
                    SegmentDraft(
                        workspace_id=ws.id,
                        id=segment_id,
                        name=segment_id,
                        kind="dynamic",
                        condition={"trait": "tags", "op": "contains", "value": segment_id},
                    ),
                    T0,
                )
        finally:
            await log.close()
            await storage.close()

    asyncio.run(go())


def test_validate_needs_no_data_dir_and_names_every_error(tmp_path: Path) -> None:
    good = EXAMPLES / "s5-welcome-series.yaml"
    code, lines = run("validate", str(good), str(EXAMPLES / "s8-basket-reminder.yaml"))
    assert code == 0
    assert lines[0] == f"{good}: valid journey 'welcome-series' (1 trigger, 6 steps)"
    broken = tmp_path / "broken.json"
    broken.write_text(
        json.dumps(
            {
                "id": "Broken",
                "name": "x",
                "triggers": [{"event": "Signed Up"}],
                "start": "a",
                "steps": {"a": {"wait": {"for": "2 days"}, "next": "b"}},
            }
        )
    )
    code, lines = run("validate", str(good), str(broken))
    assert code == 1
    assert lines[1:] == [
        f"{broken}: $.id: must be an id: 1-100 lowercase letters, digits, '-' or '_',"
        " starting and ending with a letter or digit",
        f"{broken}: $.steps.a.wait.for: must be a duration such as '30s', '15m', '1h', '30d'"
        " or '2w'",
        f"{broken}: $.steps.a.next: no step 'b' in this journey (steps: a)",
        f"{broken}: 3 errors",
    ]
    unreadable = tmp_path / "dup.yaml"
    unreadable.write_text("id: a\nid: b\n")
    code, lines = run("validate", str(unreadable), str(tmp_path / "missing.yaml"))
    assert code == 1
    assert "duplicate key 'id'" in lines[0]
    assert lines[1].startswith(f"{tmp_path / 'missing.yaml'}: cannot read")


def test_apply_publish_pause_resume_archive(tmp_path: Path) -> None:
    prepare(tmp_path)
    data = ["--data-dir", str(tmp_path)]
    welcome = str(EXAMPLES / "s5-welcome-series.yaml")
    assert run("apply", welcome, *data) == (0, ["welcome-series: created draft v1"])
    assert run("apply", welcome, "--publish", *data) == (
        0,
        ["welcome-series: saved draft v1", "welcome-series: published v1"],
    )
    assert run("apply", welcome, "--publish", *data) == (
        0,
        [
            "welcome-series: saved draft v2",
            "welcome-series: published v2; v1 keep their in-flight instances",
        ],
    )
    assert run("list", *data) == (0, ["welcome-series  live  entry v2  Welcome series"])
    assert run("pause", "welcome-series", *data) == (0, ["welcome-series  paused  Welcome series"])
    code, lines = run("pause", "welcome-series", *data)
    assert code == 1
    assert "only a published journey can be paused" in lines[0]
    assert run("resume", "welcome-series", *data)[0] == 0
    code, lines = run("show", "welcome-series", *data)
    assert code == 0
    assert lines[0] == "welcome-series  live  entry v2  Welcome series"
    assert lines[2].startswith("  v1  published  (updated ")
    assert "definition (v2):" in lines
    assert "  id: welcome-series" in lines
    assert run("archive", "welcome-series", *data)[1] == [
        "welcome-series  archived  Welcome series"
    ]
    assert run("publish", "welcome-series", *data)[0] == 1
    assert run("show", "nope", *data) == (1, ["no journey 'nope'"])
    assert run("resume", "nope", *data) == (1, ["no journey 'nope'"])


def test_apply_refuses_invalid_files_and_publishing_without_segments(tmp_path: Path) -> None:
    prepare(tmp_path)
    data = ["--data-dir", str(tmp_path)]
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: x\nname: x\ntriggers: []\nstart: a\nsteps: {a: {exit: done}}\n")
    code, lines = run("apply", str(broken), *data)
    assert code == 1
    assert lines == [f"{broken}: $.triggers: must hold at least 1 triggers"]
    sms = str(EXAMPLES / "s1-inconvenience-sms.yaml")
    code, lines = run("apply", sms, "--publish", *data)
    assert code == 1
    assert lines[0] == "inconvenience-sms: created draft v1"
    assert "reads segments that do not exist: inconvenienced" in lines[1]
    prepare(tmp_path, "inconvenienced")
    assert run("publish", "inconvenience-sms", *data)[0] == 0
    code, lines = run("list", "--workspace", "initech", *data)
    assert (code, lines) == (1, ["no workspace called 'initech'"])
