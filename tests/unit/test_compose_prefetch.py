"""``Composer.prefetch``: a claim's profiles, trigger events and templates read together,
on a real SQLite-backed runtime. A prefetched message is the message composed
without it, its facts are not read again, and what is not found is left to the
compose, which says what is wrong."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from rapport.channels.base import PermanentDeliveryError
from rapport.runtime.compose import Composer
from tests.unit.test_compose import PUBLIC_URL, SIGNER, THANKS, Shop, shop

__all__ = ["shop"]  # the fixture, shared with test_compose

SIMPLE = {
    "id": "simple",
    "name": "Simple",
    "channel": "email",
    "subject": "{{ profile.traits.first_name }}, {{ event.properties.product | default: 'hi' }}",
    "text": "v1 {{ event.name | default: 'no event' }}",
}


def count_reads(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the composer reads each fact one message at a time, from here on."""
    storage = shop.api.rapport.storage
    counts = {"load_profiles": 0, "get_template": 0, "find_profile_event": 0}
    for name in counts:
        real = getattr(storage, name)

        async def counted(*args: Any, _name: str = name, _real: Any = real) -> Any:
            counts[_name] += 1
            return await _real(*args)

        monkeypatch.setattr(storage, name, counted)
    return counts


async def test_a_prefetched_claim_composes_the_same_messages_without_reading_each(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    dana = await shop.customer("dana", {"first_name": "Dana"})
    mia = await shop.customer("mia", {"first_name": "Mia"})
    await shop.send(
        {
            "type": "track",
            "userId": "dana",
            "event": "Order Completed",
            "messageId": "m-dana",
            "properties": {"product": "Boots"},
        },
        {"type": "track", "userId": "mia", "event": "Order Completed", "messageId": "m-mia"},
    )
    await shop.template(SIMPLE)
    claim = [
        shop.message(dana, "simple", key="k1", trigger="m-dana"),
        shop.message(mia, "simple", key="k2", trigger="m-mia"),
        shop.message(mia, "simple", key="k3", trigger="m-gone"),
        shop.message(dana, "simple", key="k4"),
    ]
    plain = Composer(shop.api.rapport.storage, SIGNER, PUBLIC_URL, shop.api.rapport.clock)
    expected = [await plain(message) for message in claim]

    counts = count_reads(shop, monkeypatch)
    await shop.composer.prefetch(claim)
    # One read of the profiles and one of the template for the whole claim.
    assert counts == {"load_profiles": 1, "get_template": 1, "find_profile_event": 0}
    composed = [await shop.composer(message) for message in claim]
    assert counts == {"load_profiles": 1, "get_template": 1, "find_profile_event": 0}
    assert [msgspec.to_builtins(m) for m in composed] == [msgspec.to_builtins(m) for m in expected]
    assert composed[0].content == {"subject": "Dana, Boots", "text": "v1 Order Completed"}
    assert composed[2].content["text"] == "v1 no event"

    # Taken once: composing a message again (a retry) reads its facts again, alike.
    again = await shop.composer(claim[0])
    assert counts["load_profiles"] == 2 and counts["find_profile_event"] == 1
    assert msgspec.to_builtins(again) == msgspec.to_builtins(expected[0])


async def test_the_next_claim_sees_a_new_template_version(shop: Shop) -> None:
    dana = await shop.customer("dana", {"first_name": "Dana"})
    await shop.template(SIMPLE)
    first = shop.message(dana, "simple", key="k1")
    await shop.composer.prefetch([first])
    assert (await shop.composer(first)).metadata["template_version"] == 1
    await shop.template({**SIMPLE, "text": "v2"})
    second = shop.message(dana, "simple", key="k2")
    await shop.composer.prefetch([second])
    composed = await shop.composer(second)
    assert (composed.metadata["template_version"], composed.content["text"]) == (2, "v2")


async def test_a_message_claimed_again_is_not_given_an_older_claims_facts(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    dana = await shop.customer("dana", {"first_name": "Dana"})
    await shop.template(SIMPLE)
    await shop.composer.prefetch([shop.message(dana, "simple", key="k1")])
    await shop.template({**SIMPLE, "text": "v2"})
    counts = count_reads(shop, monkeypatch)
    # Same key, another claim's object (its prefetched entry was never taken).
    composed = await shop.composer(shop.message(dana, "simple", key="k1"))
    assert counts["get_template"] == 1
    assert (composed.metadata["template_version"], composed.content["text"]) == (2, "v2")


async def test_what_prefetch_cannot_find_is_reported_by_the_compose(shop: Shop) -> None:
    dana = await shop.customer("dana", {"first_name": "Dana"})
    await shop.template(THANKS)
    claim = [
        shop.message("prof-unknown", "simple", key="k1"),
        shop.message(dana, "nope", key="k2"),
        shop.message(dana, "thanks", key="k3", data={"points": 1}),
    ]
    await shop.composer.prefetch(claim)
    with pytest.raises(PermanentDeliveryError, match="profile 'prof-unknown' no longer exists"):
        await shop.composer(claim[0])
    with pytest.raises(PermanentDeliveryError, match="template 'nope' does not exist"):
        await shop.composer(claim[1])
    with pytest.raises(PermanentDeliveryError, match="no code pool 'sorry-15'"):
        await shop.composer(claim[2])
