"""One condition language for segments, journey branches, offers and policies.

A condition is a declarative tree (JSON/YAML) validated with path-named
errors (``validate_condition``), compiled once into closures
(``compile_condition``) and evaluated against an ``EvaluationContext``.
Event aggregates over time windows are maintained incrementally per profile
by an ``Aggregator``. The language reference is docs/conditions.md; the JSON
Schema is ``CONDITION_SCHEMA``.
"""

from rapport.core.conditions.aggregates import (
    AggregateReading,
    AggregateSpec,
    AggregateState,
    Aggregator,
)
from rapport.core.conditions.compile import CompiledCondition, aggregate_spec, compile_condition
from rapport.core.conditions.context import EvaluationContext, ProfileContext, SnapshotContext
from rapport.core.conditions.schema import CONDITION_SCHEMA
from rapport.core.conditions.validate import ConditionError, InvalidCondition, validate_condition

__all__ = [
    "CONDITION_SCHEMA",
    "AggregateReading",
    "AggregateSpec",
    "AggregateState",
    "Aggregator",
    "CompiledCondition",
    "ConditionError",
    "EvaluationContext",
    "InvalidCondition",
    "ProfileContext",
    "SnapshotContext",
    "aggregate_spec",
    "compile_condition",
    "validate_condition",
]
