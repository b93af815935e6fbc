"""Which segments a profile cannot match because of one of its traits, in a lookup or two.

Workspaces with many segments repeat rules per market, plan or brand: "gold
customers in Lyon who viewed 3 times", then the same in Berlin, in Osaka...
Each such condition *requires* a trait to be one of a few texts
(``CompiledCondition.requirements``). For a customer in Austin, every
segment requiring another city is false whatever her events and whatever
the time, and stays false until her city changes -- which the segments
reading ``city`` are re-evaluated for anyway. So instead of evaluating
them one by one after each event, and looking at them again for timers,
the catalog looks her city up once and leaves them all out.

A member of such a segment is never left out: she must be evaluated to
leave it (her city changed, or the definition did).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet

from rapport.core.model import Membership, TraitValue

MAX_GUARDING_TRAITS = 8
"""Traits looked up per evaluation at most: those that rule out the most segments."""
_NONE: frozenset[int] = frozenset()


class Guards:
    """Positions of segments (in a catalog's order) ruled out by a profile's trait values."""

    __slots__ = ("_traits",)

    def __init__(self, requirements: Sequence[Mapping[str, frozenset[str]]]) -> None:
        """``requirements[position]``: the segment's ``CompiledCondition.requirements``."""
        required: dict[str, dict[int, frozenset[str]]] = {}
        for position, needs in enumerate(requirements):
            for trait, texts in needs.items():
                required.setdefault(trait, {})[position] = texts
        # A trait guarding one segment saves no more than evaluating it costs.
        guarding = sorted(
            (trait for trait, positions in required.items() if len(positions) > 1),
            key=lambda trait: (-len(required[trait]), trait),
        )[:MAX_GUARDING_TRAITS]
        traits: list[tuple[str, dict[str, frozenset[int]], frozenset[int]]] = []
        for trait in guarding:
            positions = required[trait]
            every = frozenset(positions)
            named: set[str] = set().union(*positions.values())
            ruled_out = {
                text: frozenset(p for p, allowed in positions.items() if text not in allowed)
                for text in named
            }
            traits.append((trait, ruled_out, every))
        self._traits: tuple[tuple[str, dict[str, frozenset[int]], frozenset[int]], ...] = tuple(
            traits
        )
        """``(trait, text -> positions it rules out, positions any other value rules out)``."""

    def __bool__(self) -> bool:
        return bool(self._traits)

    def ruled_out(
        self,
        among: AbstractSet[int],
        traits: Mapping[str, TraitValue],
        members: Mapping[str, Membership],
        position: Mapping[str, int],
    ) -> AbstractSet[int]:
        """The positions in ``among`` that ``traits`` rule out, except those in ``members``.

        ``position`` maps segment ids to positions (``SegmentCatalog.position``).
        """
        out: AbstractSet[int] = _NONE
        for trait, by_text, every in self._traits:
            stored = traits.get(trait)
            value = None if stored is None else stored.value
            excluded = by_text.get(value, every) if type(value) is str else every
            hit = excluded & among  # iterates the smaller of the two
            if hit:
                out = hit if not out else out | hit
        if not out or not members:
            return out
        kept = [p for p in map(position.get, members) if p is not None and p in out]
        return out - set(kept) if kept else out
