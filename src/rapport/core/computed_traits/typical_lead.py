"""The typical lead: how long before a moment a customer engages, learned from her reactions.

``typical_lead`` answers "how early should we remind her?" (S7). Each event
named ``event`` (passing ``where``) that carries an instant at ``reference``
(for a reminder's open or click: the appointment it was about) is one
observation: ``reference - event time``, how long before the appointment she
engaged. The value is the median of her newest observations within
``window``, rounded to ``round`` (5 minutes by default), as duration text
(``"45m"``, ``"1h"``) that a journey reads as a per-customer offset
(``wait: {until_date: appointment_at, before: {trait: reminder_lead,
default: 1h}}``): newcomers get the default. Engaging at or after the
moment counts as the smallest lead, one ``round``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from rapport.core.conditions.comparisons import compile_comparison
from rapport.core.conditions.fields import event_field
from rapport.core.conditions.instants import UNIT_MICROS, instant_of, parse_duration
from rapport.core.model import Event

DEFAULT_WINDOW: Final = "180d"
DEFAULT_ROUND: Final = "5m"
DEFAULT_KEEP: Final = 9
MAX_KEEP: Final = 100


class TypicalLeadSpec(msgspec.Struct, frozen=True, kw_only=True):
    event: str
    where: tuple[Any, ...]
    reference: str
    window_us: int
    round_us: int
    keep: int

    @property
    def id(self) -> str:
        digest = hashlib.sha256(msgspec.json.encode(self)).hexdigest()[:16]
        return f"ct_lead_{digest}"


def typical_lead_spec(compute: Mapping[str, Any]) -> TypicalLeadSpec:
    """The spec of a validated ``compute`` object."""
    return TypicalLeadSpec(
        event=compute["event"],
        where=tuple(compute.get("where", ())),
        reference=compute["reference"],
        window_us=parse_duration(compute.get("window", DEFAULT_WINDOW)),
        round_us=parse_duration(compute.get("round", DEFAULT_ROUND)),
        keep=compute.get("keep", DEFAULT_KEEP),
    )


class TypicalLeadState(msgspec.Struct, kw_only=True, omit_defaults=True, array_like=True):
    """``samples``: ``[event time µs, lead µs]`` pairs, oldest first."""

    samples: list[tuple[int, int]] = []
    next_expiry: int | None = None


def duration_text(micros: int) -> str:
    """The shortest exact duration text for a whole number of seconds (``"1h30m"``)."""
    parts = []
    rest = micros // UNIT_MICROS["s"]
    for unit in ("d", "h", "m", "s"):
        size = UNIT_MICROS[unit] // UNIT_MICROS["s"]
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


class TypicalLead:
    def __init__(self, spec: TypicalLeadSpec) -> None:
        self.spec = spec
        self._reference = event_field(spec.reference)
        tests: list[tuple[Callable[[Event], Any], Callable[[Any], bool]]] = []
        for node in spec.where:
            test = compile_comparison(node["op"], node.get("value")).test
            if test is None:
                raise ValueError("event filters compare against fixed values only")
            tests.append((event_field(node["field"]), test))
        self._tests = tests

    def counts(self, event: Event) -> bool:
        return (
            event.type == "track"
            and event.event == self.spec.event
            and all(test(read(event)) for read, test in self._tests)
        )

    def observe(self, state: TypicalLeadState, event: Event, at: int, now: int) -> TypicalLeadState:
        state = self.expire(state, now)
        if at <= now - self.spec.window_us or not self.counts(event):
            return state
        reference = instant_of(self._reference(event))
        if reference is None:
            return state
        samples = sorted([*state.samples, (at, reference - at)])[-self.spec.keep :]
        return self._state(samples)

    def expire(self, state: TypicalLeadState, now: int) -> TypicalLeadState:
        if state.next_expiry is None or now < state.next_expiry:
            return state
        cutoff = now - self.spec.window_us
        return self._state([s for s in state.samples if s[0] > cutoff])

    def merge(self, a: TypicalLeadState, b: TypicalLeadState, now: int) -> TypicalLeadState:
        a, b = self.expire(a, now), self.expire(b, now)
        if not b.samples:
            return a
        if not a.samples:
            return b
        return self._state(sorted({*a.samples, *b.samples})[-self.spec.keep :])

    def _state(self, samples: list[tuple[int, int]]) -> TypicalLeadState:
        if not samples:
            return TypicalLeadState()
        return TypicalLeadState(samples=samples, next_expiry=samples[0][0] + self.spec.window_us)

    def value(self, state: TypicalLeadState, now: int) -> str | None:
        cutoff = now - self.spec.window_us
        leads = sorted(lead for at, lead in state.samples if at > cutoff)
        if not leads:
            return None
        middle = len(leads) // 2
        median = leads[middle] if len(leads) % 2 else (leads[middle - 1] + leads[middle]) // 2
        step = self.spec.round_us
        rounded = max(step, (median + step // 2) // step * step)
        return duration_text(rounded)
