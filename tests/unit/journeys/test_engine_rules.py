"""Entry, re-entry, versions, steps and timers of the journey engine, one rule at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from rapport.core.ids import SequentialIds
from rapport.core.journeys.build import assign_variant
from rapport.core.journeys.effects import ScheduleTimer, TraitUpdateEffect
from rapport.core.journeys.engine import on_event, on_timer
from rapport.core.journeys.instances import TRACE_LIMIT, describe
from rapport.core.journeys.model import SplitStep
from tests.unit.journeys.engine_harness import Harness, compile_doc, days, hours

MESSAGE = {"channel": "email", "template": "hello", "category": "transactional"}


def journey(steps: dict[str, Any] | None = None, **rules: Any) -> dict[str, Any]:
    return {
        "id": rules.pop("id", "j"),
        "name": "J",
        "triggers": rules.pop("triggers", [{"event": "Go"}]),
        "start": rules.pop("start", "hello"),
        "steps": steps or {"hello": {"message": MESSAGE}},
        **rules,
    }


def test_reentry_never_lets_her_in_once() -> None:
    h = Harness(compile_doc(journey()))
    h.track("Go")
    h.track("Go")
    assert h.sent == ["hello"]
    assert len(h.instances) == 1


def test_reentry_always_but_one_live_instance_at_a_time() -> None:
    steps = {"w": {"wait": {"for": "1d"}, "next": "hello"}, "hello": {"message": MESSAGE}}
    h = Harness(compile_doc(journey(steps, start="w", reentry="always")))
    h.track("Go")
    h.track("Go")  # ignored: one is live
    assert len(h.instances) == 1
    h.advance(days(1))
    h.track("Go")
    assert len(h.instances) == 2
    assert len(h.live()) == 1


def test_reentry_cooldown_counts_from_the_last_entry() -> None:
    h = Harness(compile_doc(journey(reentry={"after": "2h"})))
    h.track("Go")
    h.advance(hours(2) - timedelta(seconds=1))
    h.track("Go")
    assert len(h.instances) == 1
    h.advance(timedelta(seconds=1))
    h.track("Go")
    assert len(h.instances) == 2


def test_trigger_where_and_condition() -> None:
    triggers = [
        {
            "event": "Go",
            "where": [{"field": "properties.size", "op": "gte", "value": 10}],
            "condition": {"trait": "plan", "op": "equals", "value": "gold"},
        }
    ]
    h = Harness(compile_doc(journey(triggers=triggers, reentry="always")))
    h.track("Go", size=20)
    h.set_traits(plan="gold")
    h.track("Go", size=5)
    assert h.instances == {}
    h.track("Go", size=10)
    assert h.sent == ["hello"]


def test_no_entry_while_an_exit_condition_holds_and_exit_mid_wait() -> None:
    steps = {"w": {"wait": {"for": "1d"}, "next": "hello"}, "hello": {"message": MESSAGE}}
    rules = {
        "exit_when": [{"condition": {"trait": "do_not_contact", "op": "equals", "value": True}}]
    }
    h = Harness(compile_doc(journey(steps, start="w", reentry="always", **rules)))
    h.set_traits(do_not_contact=True)
    h.track("Go")
    assert h.instances == {}
    h.set_traits(do_not_contact=False)
    h.track("Go")
    h.set_traits(do_not_contact=True)
    instance = h.only()
    assert instance.status == "exited"
    assert instance.end_reason == "exit criterion 0: condition $.exit_when[0].condition true"
    h.advance(days(2))
    assert h.sent == []


def test_a_time_dependent_exit_condition_gets_a_timer() -> None:
    steps = {"w": {"wait": {"for": "30d"}, "next": "hello"}, "hello": {"message": MESSAGE}}
    ends = {"trait": "trial_ends_at", "op": "before", "value": {"ago": "1m"}}
    h = Harness(compile_doc(journey(steps, start="w", exit_when=[{"condition": ends}])))
    h.set_traits(trial_ends_at="2026-03-05T09:00:00Z")
    h.track("Go")
    (timer,) = h.timers.values()
    assert timer.due_at == datetime(2026, 3, 5, 9, 1, tzinfo=UTC)
    h.advance(days(4))
    assert h.only().status == "exited"
    assert h.sent == []


def test_the_triggering_event_is_not_matched_by_the_instance() -> None:
    steps = {
        "w": {"wait": {"event": "Go", "timeout": "1h", "on_timeout": "late"}, "next": "hello"},
        "hello": {"message": MESSAGE},
        "late": {"message": {**MESSAGE, "template": "late"}},
    }
    h = Harness(compile_doc(journey(steps, start="w", exit_when=[{"event": "Go"}])))
    h.track("Go")
    assert h.only().status == "waiting"
    h.advance(hours(2))
    assert h.sent == ["late"]


def test_idempotency_keys_and_timers_are_stable_across_a_replay() -> None:
    compiled = compile_doc(
        journey(
            {"w": {"wait": {"for": "1h"}, "next": "hello"}, "hello": {"message": MESSAGE}},
            start="w",
        )
    )
    first, second = Harness(compiled), Harness(compiled)
    for h in (first, second):
        h.track("Go")
        h.advance(hours(2))
    encode = msgspec.json.encode
    assert [encode(o) for o in first.outcomes] == [encode(o) for o in second.outcomes]
    assert list(first.outbox) == ["journey:jrn_000001:hello:1"]
    # A worker that crashed before committing processes the same event on the same state.
    h = Harness(compiled)
    h.track("Go")
    state = list(h.instances.values())
    (timer,) = h.timers.values()
    h.now += hours(1)
    replays = [
        on_timer([compiled], state, h.profile, timer.instance_id, timer.seq, h.now, SequentialIds())
        for _ in range(2)
    ]
    assert encode(replays[0]) == encode(replays[1])
    assert replays[0].sends[0].idempotency_key == "journey:jrn_000001:hello:1"


def test_a_timer_delivered_twice_or_stale_fires_nothing() -> None:
    compiled = compile_doc(
        journey(
            {"w": {"wait": {"for": "1h"}, "next": "hello"}, "hello": {"message": MESSAGE}},
            start="w",
        )
    )
    h = Harness(compiled)
    h.track("Go")
    (timer,) = h.timers.values()
    h.advance(hours(1))
    assert h.sent == ["hello"]
    again = h.fire(timer)
    assert again.instances == () and again.effects == ()
    stale = msgspec.structs.replace(timer, seq=timer.seq - 1)
    assert h.fire(stale).effects == ()
    assert h.sent == ["hello"]


def test_a_loop_through_a_wait_sends_one_message_per_visit_and_bounds_the_trace() -> None:
    steps = {
        "hello": {"message": {**MESSAGE, "template": "weekly"}, "next": "week"},
        "week": {"wait": {"for": "7d"}, "next": "hello"},
    }
    h = Harness(compile_doc(journey(steps)))
    h.track("Go")
    (first_timer,) = h.timers.values()
    h.advance(days(7))
    assert h.fire(first_timer).effects == ()  # delivered again while she waits anew
    h.advance(days(7 * 79))
    assert len(h.outbox) == 81
    assert "journey:jrn_000001:hello:81" in h.outbox
    instance = h.only()
    assert len(instance.trace) == TRACE_LIMIT
    assert instance.trace_dropped > 0
    assert describe(instance)[0] == f"... {instance.trace_dropped} earlier entries dropped"


def test_update_webhook_goal_and_exit_steps() -> None:
    steps = {
        "points": {
            "update": {"increment": {"loyalty_points": 500}, "add_tags": ["fb"]},
            "next": "crm",
        },
        "crm": {"webhook": {"url": "https://crm.example.com/h"}, "next": "done"},
        "done": {"goal": "rewarded", "next": "bye"},
        "bye": {"exit": "all done"},
    }
    h = Harness(compile_doc(journey(steps, start="points", correlation_key="properties.order_id")))
    h.track("Go", order_id="o-9")
    (update,) = h.updates
    assert isinstance(update, TraitUpdateEffect)
    assert update.increment == {"loyalty_points": 500} and update.add_tags == ("fb",)
    assert update.source == "journey:j:v1:points"
    (hook,) = h.webhooks.values()
    assert hook.body == {
        "journey_id": "j",
        "version": 1,
        "step_id": "crm",
        "profile_id": "prof_1",
        "correlation_key": "o-9",
    }
    assert hook.idempotency_key == "journey:jrn_000001:crm:1"
    instance = h.only()
    assert (instance.status, instance.end_reason) == ("exited", "exit step: all done")
    assert instance.goals_reached == ["rewarded"]
    assert h.metrics[("j", "done", "converted")] == 1


SPLIT = {
    "split": [
        {"name": "a", "weight": 1, "next": "hello"},
        {"name": "control", "weight": 1, "holdout": True},
    ]
}


def _profile_in(variant: str, split: SplitStep) -> str:
    for n in range(100):
        if assign_variant(split, "j", f"prof_{n}").name == variant:
            return f"prof_{n}"
    raise AssertionError("no profile found")


def test_split_holdout_stays_silent_until_the_goal_window_ends() -> None:
    goals = [{"name": "buy", "event": "Buy", "within": "3d"}]
    compiled = compile_doc(
        journey({"ab": SPLIT, "hello": {"message": MESSAGE}}, start="ab", goals=goals)
    )
    split = compiled.journey.steps["ab"]
    assert isinstance(split, SplitStep)
    treated, held_out = Harness(compiled), Harness(compiled)
    treated.profile.id = _profile_in("a", split)
    held_out.profile.id = _profile_in("control", split)
    for h in (treated, held_out):
        h.track("Go")
    assert treated.sent == ["hello"] and held_out.sent == []
    assert held_out.only().variables == {"variant:ab": "control"}
    held_out.track("Buy")
    assert held_out.only().status == "converted"
    h = Harness(compiled)
    h.profile.id = held_out.profile.id
    h.track("Go")
    h.advance(days(3))
    assert (h.only().status, h.only().end_reason) == ("completed", "held-out: goal window over")


def test_archived_versions_exit_and_new_entries_take_the_entry_version() -> None:
    steps = {"w": {"wait": {"for": "1d"}, "next": "hello"}, "hello": {"message": MESSAGE}}
    v1 = compile_doc(journey(steps, start="w", reentry="always"), 1)
    h = Harness(v1)
    h.track("Go")
    v2 = compile_doc(journey(steps, start="w", reentry="always"), 2)
    h.journeys = [compile_doc(journey(steps, start="w", reentry="always"), 1, entry=False), v2]
    h.advance(days(1))
    assert h.only().version == 1 and h.only().status == "completed"
    h.track("Go")
    assert {i.version for i in h.live()} == {2}
    h.journeys = [compile_doc(journey(steps, start="w"), 2, entry=False, status="archived")]
    h.track("Other")
    assert h.live() == []
    assert any(
        i.end_reason == "archived: the journey version was archived" for i in h.instances.values()
    )


def test_wait_until_a_date_follows_the_trait_and_misses_when_past() -> None:
    steps = {
        "before": {
            "wait": {"until_date": "reservation_at", "before": "2h", "missed": "late"},
            "next": "remind",
        },
        "remind": {"message": {**MESSAGE, "template": "remind"}},
        "late": {"exit": "too late"},
    }
    h = Harness(compile_doc(journey(steps, start="before", reentry="always")))
    h.set_traits(reservation_at="2026-03-04T20:00:00+01:00")
    h.track("Go")
    (timer,) = h.timers.values()
    assert timer.due_at == datetime(2026, 3, 4, 17, 0, tzinfo=UTC)
    h.set_traits(reservation_at="2026-03-05T20:00:00+01:00")  # moved a day
    (timer,) = h.timers.values()
    assert timer.due_at == datetime(2026, 3, 5, 17, 0, tzinfo=UTC)
    moved_from = msgspec.structs.replace(timer, seq=timer.seq - 1)
    h.now = datetime(2026, 3, 4, 17, 0, tzinfo=UTC)
    stale = h.fire(moved_from)
    assert stale.instances == () and stale.effects == ()
    assert h.sent == []
    h.advance(days(3))
    assert h.sent == ["remind"]
    h.set_traits(reservation_at="2026-03-06T10:00:00Z")  # already past
    h.track("Go")
    latest = max(h.instances.values(), key=lambda i: i.id)
    assert (latest.status, latest.end_reason) == ("exited", "exit step: too late")


def test_scheduled_timers_carry_stable_message_ids() -> None:
    steps = {"w": {"wait": {"for": "1h"}, "next": "hello"}, "hello": {"message": MESSAGE}}
    h = Harness(compile_doc(journey(steps, start="w")))
    outcome = h.track("Go")
    (timer,) = [e for e in outcome.effects if isinstance(e, ScheduleTimer)]
    assert (timer.key, timer.seq, timer.message_id) == (
        "journey:jrn_000001",
        1,
        "journey:jrn_000001:1",
    )


def test_on_event_with_no_journeys_is_empty() -> None:
    h = Harness()
    event = h.make_event("Go", {})
    assert on_event([], [], h.profile, event, h.now, SequentialIds()).effects == ()


PAUSABLE = journey(
    {
        "w": {"wait": {"for": "1h"}, "next": "promo"},
        "promo": {
            "message": {**MESSAGE, "template": "promo", "topic": "t", "category": "promotional"}
        },
    },
    start="w",
    hold={"while": {"trait": "never", "op": "exists"}, "max_age": "2d"},
)


def _paused_then_resumed(after: timedelta) -> Harness:
    h = Harness(compile_doc(PAUSABLE))
    h.track("Go")
    h.journeys = [compile_doc(PAUSABLE, status="paused", entry=False)]
    h.advance(hours(3))
    assert h.sent == [] and h.timers == {}
    assert h.only().paused_since is not None
    h.track("Go")  # no entry while paused
    assert len(h.instances) == 1
    h.advance(after)
    h.journeys = [compile_doc(PAUSABLE)]
    h.resume()
    h.advance(timedelta(0))
    return h


def test_a_paused_journey_goes_on_after_resume() -> None:
    h = _paused_then_resumed(days(1))
    assert h.sent == ["promo"]
    assert h.only().status == "completed"


def test_a_message_that_came_due_long_before_resume_is_stale() -> None:
    h = _paused_then_resumed(days(3))
    assert h.sent == []
    lines = describe(h.only())
    assert any("[promo] dropped: stale: came due 3 days, 2:00:00 ago" in line for line in lines)
    assert any("resumed" in line for line in lines)
