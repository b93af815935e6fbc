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

Exclusion = tuple[frozenset[int], frozenset[str]]
"""Positions of segments ruled out, and their ids (``Guards.exclusion``)."""
NO_EXCLUSION: Exclusion = (frozenset(), frozenset())

MAX_GUARDING_TRAITS = 8
"""Traits looked up per evaluation at most: those that rule out the most segments."""
_MAX_COMBINATIONS = 4096
"""Combinations of guarding texts kept at most (``Guards._excluded``); then forgotten."""


class Guards:
    """Positions of segments (in a catalog's order) ruled out by a profile's trait values."""

    __slots__ = ("_excluded", "_ids", "_names", "_shared", "_traits")

    def __init__(
        self, requirements: Sequence[Mapping[str, frozenset[str]]], ids: Sequence[str]
    ) -> None:
        """``requirements[position]``: the segment's ``CompiledCondition.requirements``;
        ``ids[position]``: its id."""
        if len(ids) != len(requirements):
            raise ValueError("one id per segment")
        self._ids = tuple(ids)
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
        self._names = tuple(trait for trait, _, _ in traits)
        self._excluded: dict[tuple[str | None, ...], Exclusion] = {}
        """The guarding traits' texts (``None``: no text) -> every position they rule out
        and those segments' ids: a profile's look-up is one dict look-up (few
        combinations: cities, plans)."""
        self._shared: dict[frozenset[int], Exclusion] = {}
        """Each distinct answer in ``_excluded``, once (as many as texts segments name)."""

    def __bool__(self) -> bool:
        return bool(self._traits)

    def _ruling_out(self, texts: tuple[str | None, ...]) -> Exclusion:
        """What the guarding traits' ``texts`` rule out (kept for the next profile)."""
        excluded = self._excluded.get(texts)
        if excluded is None:
            positions: frozenset[int] = frozenset().union(
                *(
                    every if text is None else by_text.get(text, every)
                    for (_, by_text, every), text in zip(self._traits, texts, strict=True)
                )
            )
            if len(self._excluded) >= _MAX_COMBINATIONS:
                self._excluded.clear()
                self._shared.clear()
            # Texts no segment names rule out the same: one answer for all of them.
            excluded = self._shared.get(positions)
            if excluded is None:
                ids = frozenset(self._ids[p] for p in positions)
                excluded = self._shared[positions] = (positions, ids)
            self._excluded[texts] = excluded
        return excluded

    def exclusion(self, traits: Mapping[str, TraitValue]) -> Exclusion:
        """Every position ``traits`` rule out, members or not, and those segments' ids.

        With the ids, whether a profile is a member of one is a set operation
        on her memberships' keys (``frozenset.isdisjoint``).
        """
        texts: list[str | None] = []
        for trait in self._names:
            stored = traits.get(trait)
            if stored is None:
                texts.append(None)
            else:
                value = stored.value
                texts.append(value if type(value) is str else None)
        key = tuple(texts)
        found = self._excluded.get(key)
        return self._ruling_out(key) if found is None else found

    def excluded(self, traits: Mapping[str, TraitValue]) -> frozenset[int]:
        """Every position ``traits`` rule out, members or not."""
        return self.exclusion(traits)[0]

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
        out = self.excluded(traits) & among  # iterates the smaller of the two
        if not out or not members:
            return out
        kept = out.intersection(map(position.get, members))
        return out - kept if kept else out

    def allowed(
        self,
        among: AbstractSet[int],
        traits: Mapping[str, TraitValue],
        members: Mapping[str, Membership],
        position: Mapping[str, int],
    ) -> set[int]:
        """``among`` without the positions ``ruled_out``: a new set."""
        excluded = self.excluded(traits)
        rest = set(among) - excluded if type(among) is not set else among - excluded
        if members and len(rest) != len(among):
            back = excluded.intersection(map(position.get, members))
            if back:
                rest |= back & among
        return rest
