"""The sender hands each claim's messages to its composer's ``prefetch`` before composing them.

Only the messages it takes in hand (not the ones held back by a limit), once
per claim; a prefetch that fails costs nothing but the saving: every message
is still composed and sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from rapport.channels.base import OutgoingMessage
from rapport.runtime.sender import Sender
from rapport.runtime.sender_limits import SenderConfig
from rapport.storage.journey_runs import OutboxMessage
from tests.unit.sender_helpers import commit, compose, send_message
from tests.unit.test_sender import Setup


class PrefetchingComposer:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.prefetched: list[list[str]] = []
        self.composed: list[str] = []

    async def prefetch(self, messages: Sequence[OutboxMessage]) -> None:
        self.prefetched.append([m.idempotency_key for m in messages])
        if self.fail:
            raise OSError("storage went away")

    async def __call__(self, message: OutboxMessage) -> OutgoingMessage:
        # Composed only after the claim it belongs to was prefetched.
        assert any(message.idempotency_key in keys for keys in self.prefetched)
        self.composed.append(message.idempotency_key)
        return await compose(message)


def sender_with(s: Setup, composer: PrefetchingComposer, config: SenderConfig) -> Sender:
    return Sender(s.storage, s.channels, composer, s.clock, config=config, random=lambda: 0.5)


async def test_each_claim_is_prefetched_once_with_the_messages_taken_in_hand() -> None:
    config = SenderConfig(rate_per_second=2, burst=3)
    s = Setup(config)
    composer = PrefetchingComposer()
    s.sender = sender_with(s, composer, config)
    await commit(s.storage, *(send_message(f"i{n}") for n in range(5)))
    assert await s.sender.deliver_due() == 5
    # The rate limit let three go; the two held back were not prefetched.
    [keys] = composer.prefetched
    assert len(keys) == 3 and sorted(keys) == sorted(composer.composed)
    assert sorted(m.idempotency_key for m in s.email.calls) == sorted(keys)


async def test_a_failing_prefetch_still_sends_every_message() -> None:
    config = SenderConfig()
    s = Setup(config)
    composer = PrefetchingComposer(fail=True)
    s.sender = sender_with(s, composer, config)
    await commit(s.storage, *(send_message(f"i{n}") for n in range(4)))
    assert await s.sender.deliver_due() == 4
    assert len(composer.prefetched) == 1 and len(s.email.calls) == 4
    for n in range(4):
        stored = await s.storage.get_outbox("ws_a", f"journey:i{n}:hello:1")
        assert stored is not None and stored.status == "sent"
