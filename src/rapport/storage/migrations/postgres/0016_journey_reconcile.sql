-- Journeys published before the runtime set up schedule and date triggers
-- (or whose start-up signal was lost: it used to be logged after the
-- transition's commit) get their start-up once: the newest running
-- (published or paused) version of every journey gets a reconciling
-- "Journey Published" signal, delivered by the relay like the signal every
-- publish now stores with its transition (rapport.storage.journey_signals).
-- The journey-trigger consumer then gives each schedule trigger its next
-- run after now unless it has a timer already, and each profile holding a
-- date trait her timer (recomputed: a timer is replaced, never doubled).
-- The event is rapport.core.model.Event as msgspec JSON (camelCase names).
INSERT INTO scheduled_events
    (workspace_id, schedule_key, due_at, origin_offset, origin_index, message_id, event)
SELECT
    v.workspace_id,
    'journey-signal:' || v.journey_id || ':reconcile:v' || v.version,
    timestamptz '1970-01-01 00:00:00+00',
    v.revision,
    0,
    'journey-reconcile:' || v.journey_id || ':v' || v.version,
    convert_to(
        json_build_object(
            'workspaceId', v.workspace_id,
            'messageId', 'journey-reconcile:' || v.journey_id || ':v' || v.version,
            'type', 'track',
            'timestamp', '1970-01-01T00:00:00Z',
            'receivedAt', '1970-01-01T00:00:00Z',
            'source', 'rapport:journey-triggers',
            'event', 'Journey Published',
            'properties', json_build_object(
                'journey_id', v.journey_id, 'version', v.version, 'reconcile', true
            )
        )::text,
        'UTF8'
    )
FROM journey_versions AS v
WHERE v.status IN ('published', 'paused')
  AND v.version = (
      SELECT max(o.version) FROM journey_versions AS o
      WHERE o.workspace_id = v.workspace_id AND o.journey_id = v.journey_id
        AND o.status IN ('published', 'paused')
  )
ON CONFLICT (workspace_id, schedule_key) DO NOTHING;
