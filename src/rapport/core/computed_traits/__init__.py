"""Computed traits: profile traits the engine keeps up to date from the events.

``lifetime_revenue`` (sum of ``properties.revenue`` over ``Order Completed``),
``orders_90d``, ``views_1h_by_product`` (keyed: a map of product -> count),
an engagement score: each is a versioned definition (``definitions``),
validated with path-named errors (``validate``), compiled into a
``ComputedTraitCatalog`` per workspace, and maintained incrementally per
event by ``apply_computed_traits`` (``catalog``, ``update``); a definition
written later is brought to each profile's past by a backfill
(``rebuild_computed_trait``, run by ``rapport.runtime.backfill``). The reference is
docs/computed-traits.md.
"""

from rapport.core.computed_traits.catalog import (
    Computation,
    ComputedTraitCatalog,
    compile_computed_trait,
)
from rapport.core.computed_traits.definitions import (
    AGGREGATE,
    COMPUTED_SOURCE,
    ENGAGEMENT_SCORE,
    KINDS,
    MAX_DESCRIPTION_LENGTH,
    RESERVED_NAMES,
    STATE_PREFIX,
    TRAIT_ID_PATTERN,
    ComputedTraitAlreadyExists,
    ComputedTraitDefinition,
    ComputedTraitDraft,
    deleted_computed_trait,
    is_computed_state_id,
    is_trait_id,
    next_computed_trait,
)
from rapport.core.computed_traits.engagement import Engagement, EngagementSpec, EngagementState
from rapport.core.computed_traits.update import (
    apply_computed_traits,
    feeds,
    history_request,
    is_customer_event,
    merge_computed_traits,
    rebuild_computed_trait,
    refresh_computed_traits,
)
from rapport.core.computed_traits.validate import InvalidComputedTrait, validate_compute

__all__ = [
    "AGGREGATE",
    "COMPUTED_SOURCE",
    "ENGAGEMENT_SCORE",
    "KINDS",
    "MAX_DESCRIPTION_LENGTH",
    "RESERVED_NAMES",
    "STATE_PREFIX",
    "TRAIT_ID_PATTERN",
    "Computation",
    "ComputedTraitAlreadyExists",
    "ComputedTraitCatalog",
    "ComputedTraitDefinition",
    "ComputedTraitDraft",
    "Engagement",
    "EngagementSpec",
    "EngagementState",
    "InvalidComputedTrait",
    "apply_computed_traits",
    "compile_computed_trait",
    "deleted_computed_trait",
    "feeds",
    "history_request",
    "is_computed_state_id",
    "is_customer_event",
    "is_trait_id",
    "merge_computed_traits",
    "next_computed_trait",
    "rebuild_computed_trait",
    "refresh_computed_traits",
    "validate_compute",
]
