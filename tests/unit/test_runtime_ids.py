from __future__ import annotations

import time

from rapport.runtime.clock import RandomIds


def test_ids_are_unique_prefixed_and_time_ordered() -> None:
    ids = RandomIds()
    first = [ids.new_id("prof") for _ in range(1000)]
    time.sleep(0.002)
    later = ids.new_id("prof")
    assert len(set(first)) == 1000
    assert all(i.startswith("prof_") and len(i) == len("prof_") + 28 for i in first)
    assert max(first) < later


def test_two_generators_do_not_repeat_each_other() -> None:
    a, b = RandomIds(), RandomIds()
    assert {a.new_id("x") for _ in range(100)}.isdisjoint({b.new_id("x") for _ in range(100)})
