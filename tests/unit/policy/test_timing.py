"""Quiet hours and cap windows in the customer's zone (real IANA zones, DST included)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.core.model import SentMessage
from rapport.core.policy.document import FrequencyCap, QuietHours
from rapport.core.policy.timing import count_for_cap, quiet_until

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
NIGHT = QuietHours(start="21:00", end="09:00", channels=("sms",))


def local(zone: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone)  # type: ignore[misc]


def test_quiet_hours_across_midnight_end_at_the_next_morning() -> None:
    assert quiet_until(NIGHT, PARIS, local(PARIS, 2026, 6, 10, 22, 30)) == local(
        PARIS, 2026, 6, 11, 9, 0
    )
    assert quiet_until(NIGHT, PARIS, local(PARIS, 2026, 6, 11, 2, 0)) == local(
        PARIS, 2026, 6, 11, 9, 0
    )
    assert quiet_until(NIGHT, PARIS, local(PARIS, 2026, 6, 11, 9, 0)) is None
    assert quiet_until(NIGHT, PARIS, local(PARIS, 2026, 6, 11, 20, 59)) is None
    assert quiet_until(NIGHT, PARIS, local(PARIS, 2026, 6, 11, 21, 0)) == local(
        PARIS, 2026, 6, 12, 9, 0
    )


def test_a_window_within_one_day() -> None:
    lunch = QuietHours(start="12:00", end="14:00")
    assert quiet_until(lunch, PARIS, local(PARIS, 2026, 6, 10, 13, 0)) == local(
        PARIS, 2026, 6, 10, 14, 0
    )
    assert quiet_until(lunch, PARIS, local(PARIS, 2026, 6, 10, 22, 0)) is None


def test_the_night_the_clocks_go_forward_ends_at_nine_local_seven_utc() -> None:
    # 29 March 2026: Paris goes from CET (UTC+1) to CEST (UTC+2) at 02:00.
    at = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)  # 00:30 CET
    until = quiet_until(NIGHT, PARIS, at)
    assert until == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    assert until.astimezone(PARIS).hour == 9


def test_the_night_the_clocks_go_back_ends_at_nine_local_eight_utc() -> None:
    # 25 October 2026: back from CEST to CET; the night is an hour longer.
    at = datetime(2026, 10, 24, 20, 0, tzinfo=UTC)  # 22:00 CEST
    assert quiet_until(NIGHT, PARIS, at) == datetime(2026, 10, 25, 8, 0, tzinfo=UTC)


def test_an_end_the_clock_jumps_over_ends_at_the_jump() -> None:
    # New York skips 02:00-03:00 on 8 March 2026; quiet until 02:30 ends at 03:00 EDT.
    early = QuietHours(start="01:00", end="02:30")
    at = local(NEW_YORK, 2026, 3, 8, 1, 15)
    until = quiet_until(early, NEW_YORK, at)
    assert until == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    assert until.astimezone(NEW_YORK).hour == 3


def test_a_promotional_sms_at_two_in_the_morning_waits_until_nine() -> None:
    # S6: 02:00 in her own zone, whatever the server's.
    at = local(NEW_YORK, 2026, 11, 20, 2, 0)
    assert quiet_until(NIGHT, NEW_YORK, at) == local(NEW_YORK, 2026, 11, 20, 9, 0)


def test_a_calendar_day_is_her_day_not_the_servers() -> None:
    cap = FrequencyCap(max=1, window="calendar_day")
    # 23:30 in New York on the 10th is 03:30 UTC on the 11th.
    evening = SentMessage(
        at=local(NEW_YORK, 2026, 6, 10, 23, 30), channel="email", category="promotional"
    )
    next_morning = local(NEW_YORK, 2026, 6, 11, 8, 0)
    assert count_for_cap(cap, [evening], next_morning, NEW_YORK) == 0
    assert count_for_cap(cap, [evening], next_morning, UTC) == 1


def test_a_calendar_week_runs_monday_to_sunday() -> None:
    cap = FrequencyCap(max=1, window="calendar_week")
    sunday = SentMessage(
        at=local(PARIS, 2026, 6, 14, 20, 0), channel="email", category="promotional"
    )
    assert count_for_cap(cap, [sunday], local(PARIS, 2026, 6, 15, 8, 0), PARIS) == 0
    assert count_for_cap(cap, [sunday], local(PARIS, 2026, 6, 8, 8, 0), PARIS) == 1


T0 = datetime(2026, 3, 20, tzinfo=UTC)
CHANNELS = ("email", "sms")
TOPICS = (None, "offers", "news")

sent_messages = st.builds(
    SentMessage,
    at=st.integers(0, 20 * 24 * 60).map(lambda m: T0 + timedelta(minutes=m)),
    channel=st.sampled_from(CHANNELS),
    category=st.sampled_from(("promotional", "transactional")),
    topic=st.sampled_from(TOPICS),
)
caps = st.builds(
    FrequencyCap,
    max=st.integers(0, 5),
    window=st.sampled_from(("24h", "7d", "90m", "calendar_day", "calendar_week")),
    category=st.sampled_from((None, "promotional", "transactional")),
    channel=st.sampled_from((None, *CHANNELS)),
    topic=st.sampled_from(TOPICS),
)


def brute_force(cap: FrequencyCap, sent: list[SentMessage], at: datetime, zone: ZoneInfo) -> int:
    """Counted the slow, obvious way: walk every message, compare local calendars by hand."""
    total = 0
    for s in sent:
        if cap.channel not in (None, s.channel) or cap.category not in (None, s.category):
            continue
        if cap.topic is not None and cap.topic != s.topic:
            continue
        mine, theirs = at.astimezone(zone), s.at.astimezone(zone)
        if cap.window == "calendar_day":
            hit = (mine.year, mine.month, mine.day) == (theirs.year, theirs.month, theirs.day)
        elif cap.window == "calendar_week":
            hit = mine.isocalendar()[:2] == theirs.isocalendar()[:2]
        else:
            seconds = {"24h": 86400, "7d": 7 * 86400, "90m": 5400}[cap.window]
            hit = (at - s.at).total_seconds() < seconds
        total += hit
    return total


@settings(max_examples=300, deadline=None)
@given(
    cap=caps,
    sent=st.lists(sent_messages, max_size=30),
    minute=st.integers(0, 20 * 24 * 60),
    zone=st.sampled_from((PARIS, NEW_YORK, ZoneInfo("Asia/Kolkata"), ZoneInfo("UTC"))),
)
def test_cap_counts_match_a_brute_force_count(
    cap: FrequencyCap, sent: list[SentMessage], minute: int, zone: ZoneInfo
) -> None:
    at = T0 + timedelta(minutes=minute)
    assert count_for_cap(cap, sent, at, zone) == brute_force(cap, sent, at, zone)
