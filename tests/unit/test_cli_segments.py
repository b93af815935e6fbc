"""``rapport segments list`` and ``rapport segments backfill`` over a real SQLite data dir."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from rapport.cli import main
from rapport.core.backfill import advance_backfill
from rapport.core.profiles import new_profile
from rapport.core.segments import SegmentDraft
from rapport.storage.base import ProcessingBatch
from rapport.storage.sqlite import open_sqlite

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def prepare(data_dir: Path) -> None:
    async def go() -> None:
        storage, log = await open_sqlite(data_dir)
        try:
            ws = await storage.ensure_workspace("default", "ws_1", T0)
            profiles = [new_profile(f"prof_{n}", ws.id, T0) for n in range(4)]
            await storage.commit_processing(
                ProcessingBatch(consumer="seed", offset=1, profiles=profiles)
            )
            for segment_id in ("gold", "silver"):
                draft = SegmentDraft(
                    workspace_id=ws.id,
                    id=segment_id,
                    name=segment_id,
                    kind="dynamic",
                    condition={"trait": "plan", "op": "equals", "value": segment_id},
                )
                await storage.put_segment(draft, T0)
            job = await storage.get_backfill(ws.id, "gold")
            assert job is not None
            await storage.put_backfill(
                advance_backfill(
                    job, cursor="prof_3", processed=4, entered=3, exited=0, finished=True, now=T0
                )
            )
        finally:
            await log.close()
            await storage.close()

    asyncio.run(go())


def test_list_and_backfill_show_progress(tmp_path: Path) -> None:
    prepare(tmp_path)
    runner = CliRunner()
    listed = runner.invoke(main, ["segments", "list", "--data-dir", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines() == [
        "gold  dynamic  v1  done (4 profiles in 0.0 s, 3 entered, 0 exited)",
        "silver  dynamic  v1  running 0% (0 of about 4 profiles, 0 entered, 0 exited)",
    ]
    shown = runner.invoke(main, ["segments", "backfill", "gold", "--data-dir", str(tmp_path)])
    assert shown.exit_code == 0
    assert shown.output.startswith("gold v1: done (4 profiles")


def test_unknown_segment_or_workspace_exits_non_zero(tmp_path: Path) -> None:
    prepare(tmp_path)
    runner = CliRunner()
    missing = runner.invoke(main, ["segments", "backfill", "bronze", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 1
    assert "has no backfill" in missing.output
    nowhere = runner.invoke(
        main, ["segments", "list", "--workspace", "initech", "--data-dir", str(tmp_path)]
    )
    assert nowhere.output.strip() == "no workspace called 'initech'"
