"""The policy gate in the processing step: verdicts into outbox rows, sends into profiles.

Every ``SendEffect`` a step's journeys produce for a profile goes through
``core.policy.gate_step`` with the profile as the step has it (after the
event) and the workspace's policy. Each message becomes an outbox row
carrying its verdict (status ``dropped`` when the gate said no, else
``pending``, with ``verdict.not_before`` for a deferred one); a
confirmation the gate asks for is one more row. The admitted messages are
recorded in the profile's ``sent`` history and the profile is marked
changed, so it is written in the same batch as the outbox rows: the next
message's caps see this one, even after a crash and a replay.

Policies are cached per workspace and reloaded when ``policies_revision``
moves (one cheap query per step, as for journeys).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from rapport.core.journeys.effects import SendEffect
from rapport.core.policy.document import DEFAULT_POLICY, PolicyDocument
from rapport.core.policy.gate import GateDecision, gate_step
from rapport.runtime.working_set import WorkspaceState
from rapport.storage.base import Storage
from rapport.storage.journey_runs import OutboxMessage


class PolicyCatalogs:
    """Each workspace's policy document, reloaded when any policy is written."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._revision: int | None = None
        self._policies: dict[str, PolicyDocument] = {}

    async def for_workspaces(self, workspace_ids: Iterable[str]) -> dict[str, PolicyDocument]:
        wanted = list(workspace_ids)
        if not wanted:
            return {}
        revision = await self._storage.policies_revision()
        if revision != self._revision:
            self._policies.clear()
            self._revision = revision
        found: dict[str, PolicyDocument] = {}
        for ws in wanted:
            policy = self._policies.get(ws)
            if policy is None:
                stored = await self._storage.get_policy(ws)
                policy = DEFAULT_POLICY if stored is None else stored.document
                self._policies[ws] = policy
            found[ws] = policy
        return found


def gate_sends(
    ws: str,
    policy: PolicyDocument,
    state: WorkspaceState | None,
    sends: Sequence[SendEffect],
    now: datetime,
) -> list[OutboxMessage]:
    """The outbox rows of ``sends`` (one event's), gated per profile; updates ``state``."""
    by_profile: dict[str, list[SendEffect]] = {}
    for effect in sends:
        pid = state.live(effect.profile_id) if state is not None else effect.profile_id
        by_profile.setdefault(pid, []).append(effect)
    rows: list[OutboxMessage] = []
    for pid, effects in by_profile.items():
        profile = state.profiles.get(pid) if state is not None else None
        result = gate_step(policy, profile, effects, now)
        if state is not None and result.profile is not None and result.profile is not profile:
            state.profiles[pid] = result.profile
            state.changed_profiles.add(pid)
        rows.extend(_row(ws, d, now) for d in (*result.decisions, *result.confirmations))
    return rows


def _row(ws: str, decision: GateDecision, now: datetime) -> OutboxMessage:
    effect = decision.effect
    return OutboxMessage(
        workspace_id=ws,
        idempotency_key=effect.idempotency_key,
        profile_id=effect.profile_id,
        effect=effect,
        created_at=now,
        status="pending" if decision.admitted else "dropped",
        verdict=decision.verdict,
    )
