"""``Sender.settled`` is not fooled by a claim that happens while it reads the outbox."""

from __future__ import annotations

from datetime import datetime

from tests.unit.sender_helpers import commit, send_message
from tests.unit.test_sender import Setup


async def test_a_claim_during_the_read_is_not_settled() -> None:
    s = Setup()
    s.email.delay = 0.2  # the send is still in flight when the read answers
    await commit(s.storage, send_message("i1"))
    read = s.storage.next_outbox_at

    async def claim_then_read() -> datetime | None:
        # The sender's loop claims the message between the check of what it
        # holds and the read: the lease moves its next attempt past now.
        assert await s.sender.run_once() == 1
        return await read()

    s.storage.next_outbox_at = claim_then_read  # type: ignore[method-assign]
    assert not await s.sender.settled()
    s.storage.next_outbox_at = read  # type: ignore[method-assign]
    await s.sender.drain()
    assert await s.status("i1") == "sent"
    assert await s.sender.settled()
