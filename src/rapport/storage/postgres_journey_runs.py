"""Journey runs on PostgreSQL (tables of ``0008_journey_runs.sql``).

``run_statements`` gives the statements a processing commit runs for the
batch's journey part (in its transaction, see
``postgres_processing.processing_statements``); every parameter is built, and every
encoding error raised, before a connection is taken. The other functions
are the reads (the outbox is ``postgres_outbox``). See ``rapport.storage.journey_runs``.

Concurrent commits are safe: instance upserts lock their rows; the metric
marker's ``ON CONFLICT DO NOTHING`` makes a second commit of the same
``(consumer, offset)`` wait for the first and then add nothing; so does an
outbox key inserted by two transactions at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

import asyncpg
import msgspec

from rapport.core.journeys.instances import LIVE_STATUSES, JourneyInstance
from rapport.storage.base import ProcessingBatch
from rapport.storage.journey_runs import (
    InstancePage,
    JourneyMetrics,
    MetricCount,
    check_page,
    latest_instances,
    summed_increments,
)
from rapport.storage.postgres_outbox import insert_statement

_Statement: TypeAlias = tuple[str, tuple[object, ...]]
_decode_instance = msgspec.json.Decoder(JourneyInstance).decode

_UPSERT_INSTANCES_SQL = """
INSERT INTO journey_instances (workspace_id, id, journey_id, version, profile_id,
    correlation_key, status, live, ended_at, doc)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[],
    $7::text[], $8::boolean[], $9::timestamptz[], $10::bytea[])
ON CONFLICT (workspace_id, id) DO UPDATE SET journey_id = excluded.journey_id,
    version = excluded.version, profile_id = excluded.profile_id,
    correlation_key = excluded.correlation_key, status = excluded.status,
    live = excluded.live, ended_at = excluded.ended_at, doc = excluded.doc
"""
_ADD_METRICS_SQL = """
WITH marker AS (
    INSERT INTO journey_metric_batches (consumer, log_offset) VALUES ($1, $2)
    ON CONFLICT DO NOTHING RETURNING 1
)
INSERT INTO journey_metrics (workspace_id, journey_id, version, step_id, metric, count)
SELECT * FROM unnest($3::text[], $4::text[], $5::int[], $6::text[], $7::text[], $8::bigint[])
WHERE EXISTS (SELECT 1 FROM marker)
ON CONFLICT (workspace_id, journey_id, version, step_id, metric)
DO UPDATE SET count = journey_metrics.count + excluded.count
"""
# Every live instance, and the latest ended one per (profile, journey, key).
_LOAD_SQL = """
SELECT doc FROM journey_instances
WHERE workspace_id = $1 AND profile_id = ANY($2::text[]) AND live
UNION ALL
SELECT doc FROM (
    SELECT doc, row_number() OVER (
        PARTITION BY profile_id, journey_id, correlation_key ORDER BY ended_at DESC, id DESC
    ) AS rank
    FROM journey_instances
    WHERE workspace_id = $1 AND profile_id = ANY($2::text[]) AND NOT live
) AS ended WHERE rank = 1
"""
_GET_SQL = "SELECT doc FROM journey_instances WHERE workspace_id = $1 AND id = $2"
_PAGE_SQL = """
SELECT id, doc FROM journey_instances
WHERE workspace_id = $1 AND journey_id = $2 AND ($3::text IS NULL OR status = $3)
  AND ($4::text IS NULL OR id > $4)
ORDER BY id LIMIT $5
"""
_COUNTS_SQL = """
SELECT status, count(*) FROM journey_instances
WHERE workspace_id = $1 AND journey_id = $2 GROUP BY status
"""
_METRICS_SQL = """
SELECT version, step_id, metric, count FROM journey_metrics
WHERE workspace_id = $1 AND journey_id = $2 ORDER BY version, step_id, metric
"""


def run_statements(batch: ProcessingBatch, encode: Callable[[object], bytes]) -> list[_Statement]:
    """Instances upserted, increments added once, new messages inserted."""
    statements: list[_Statement] = []
    instances = latest_instances(batch.journey_instances)
    if instances:
        statements.append(
            (
                _UPSERT_INSTANCES_SQL,
                (
                    [ws for ws, _ in instances],
                    [i.id for _, i in instances],
                    [i.journey_id for _, i in instances],
                    [i.version for _, i in instances],
                    [i.profile_id for _, i in instances],
                    [i.correlation_key for _, i in instances],
                    [i.status for _, i in instances],
                    [i.status in LIVE_STATUSES for _, i in instances],
                    [i.ended_at for _, i in instances],
                    [encode(i) for _, i in instances],
                ),
            )
        )
    sums = summed_increments(batch.journey_metrics)
    if sums:
        keys = list(sums)
        statements.append(
            (
                _ADD_METRICS_SQL,
                (
                    batch.consumer,
                    batch.offset,
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [k[2] for k in keys],
                    [k[3] for k in keys],
                    [k[4] for k in keys],
                    list(sums.values()),
                ),
            )
        )
    statements.extend(insert_statement(batch.outbox))  # rapport.storage.postgres_outbox
    return statements


async def load_instances(
    pool: asyncpg.Pool, workspace_id: str, profile_ids: Sequence[str]
) -> list[JourneyInstance]:
    rows = await pool.fetch(_LOAD_SQL, workspace_id, sorted(set(profile_ids)))
    found = [_decode_instance(row[0]) for row in rows]
    found.sort(key=lambda i: (i.profile_id, i.journey_id, i.id))
    return found


async def get_instance(
    pool: asyncpg.Pool, workspace_id: str, instance_id: str
) -> JourneyInstance | None:
    doc: bytes | None = await pool.fetchval(_GET_SQL, workspace_id, instance_id)
    return None if doc is None else _decode_instance(doc)


async def page_instances(
    pool: asyncpg.Pool,
    workspace_id: str,
    journey_id: str,
    limit: int,
    after: str | None,
    status: str | None,
) -> InstancePage:
    check_page(limit)
    rows = await pool.fetch(_PAGE_SQL, workspace_id, journey_id, status, after, limit + 1)
    chosen = rows[:limit]
    return InstancePage(
        [_decode_instance(row["doc"]) for row in chosen],
        chosen[-1]["id"] if len(rows) > limit else None,
    )


async def instance_counts(pool: asyncpg.Pool, workspace_id: str, journey_id: str) -> dict[str, int]:
    rows = await pool.fetch(_COUNTS_SQL, workspace_id, journey_id)
    return {row[0]: int(row[1]) for row in rows}


async def metrics(pool: asyncpg.Pool, workspace_id: str, journey_id: str) -> JourneyMetrics:
    rows = await pool.fetch(_METRICS_SQL, workspace_id, journey_id)
    return JourneyMetrics(
        journey_id, [MetricCount(row[0], row[1], row[2], int(row[3])) for row in rows]
    )
