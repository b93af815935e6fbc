"""Journeys as data: the definition language, its validation and schema, and versions.

A journey is a document (JSON, or YAML in git): triggers that let a
customer in, a graph of steps linked by id, and journey-wide rules (exit
criteria, goals, hold, re-entry, correlation, priority). It is validated
with every error named by its JSON path (``validate_journey``), published
as a JSON Schema (``JOURNEY_SCHEMA``), read into typed values for the
runtime (``parse_journey``) and stored as versions with a lifecycle
(``lifecycle``). The language reference is docs/journeys.md.

Running them is split in two: the pure engine here (``on_event`` and
``on_timer`` over ``JourneyInstance`` values and a ``CompiledJourney`` per
running version, returning an ``Outcome`` of effects), and the runtime,
which stores instances and timers and commits each outcome in one
transaction (docs/journeys.md, "How journeys run").
"""

from rapport.core.journeys.build import (
    assign_variant,
    conditions_of,
    parse_journey,
    referenced_segments,
)
from rapport.core.journeys.checks import REFERENCE, STRUCTURE, InvalidJourney, JourneyError
from rapport.core.journeys.compiled import CompiledJourney, compile_journey
from rapport.core.journeys.effects import (
    TIMER_EVENT,
    CancelTimer,
    Effect,
    MetricIncrement,
    Outcome,
    ScheduleTimer,
    SendEffect,
    TraitUpdateEffect,
    WebhookEffect,
)
from rapport.core.journeys.engine import on_event, on_timer
from rapport.core.journeys.instances import JourneyInstance, TraceEntry, WaitState, describe
from rapport.core.journeys.lifecycle import (
    ACTIONS,
    ARCHIVE,
    ARCHIVED,
    DRAFT,
    PAUSE,
    PAUSED,
    PUBLISH,
    PUBLISHED,
    RESUME,
    RUNNING,
    STATUSES,
    IllegalTransition,
    JourneyAlreadyExists,
    JourneyNotFound,
    JourneyVersion,
    entry_version,
    journey_state,
    save_draft,
    transition,
)
from rapport.core.journeys.model import Journey
from rapport.core.journeys.schema import JOURNEY_SCHEMA
from rapport.core.journeys.text import DocumentError, parse_document
from rapport.core.journeys.validate import check_journey, validate_journey

__all__ = [
    "ACTIONS",
    "ARCHIVE",
    "ARCHIVED",
    "DRAFT",
    "JOURNEY_SCHEMA",
    "PAUSE",
    "PAUSED",
    "PUBLISH",
    "PUBLISHED",
    "REFERENCE",
    "RESUME",
    "RUNNING",
    "STATUSES",
    "STRUCTURE",
    "TIMER_EVENT",
    "CancelTimer",
    "CompiledJourney",
    "DocumentError",
    "Effect",
    "IllegalTransition",
    "InvalidJourney",
    "Journey",
    "JourneyAlreadyExists",
    "JourneyError",
    "JourneyInstance",
    "JourneyNotFound",
    "JourneyVersion",
    "MetricIncrement",
    "Outcome",
    "ScheduleTimer",
    "SendEffect",
    "TraceEntry",
    "TraitUpdateEffect",
    "WaitState",
    "WebhookEffect",
    "assign_variant",
    "check_journey",
    "compile_journey",
    "conditions_of",
    "describe",
    "entry_version",
    "journey_state",
    "on_event",
    "on_timer",
    "parse_document",
    "parse_journey",
    "referenced_segments",
    "save_draft",
    "transition",
    "validate_journey",
]
