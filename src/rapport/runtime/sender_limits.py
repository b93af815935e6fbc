"""What the sender holds per provider: a rate limit, a circuit breaker, and how long to back off.

All of it reads time from the injected ``Clock`` (passed in as ``now``) and
randomness from an injected source, so tests drive it with a virtual clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal


@dataclass(frozen=True)
class SenderConfig:
    """The sender's knobs; the defaults suit a mid-size brand on one machine."""

    max_attempts: int = 8
    """Attempts before a message goes to the dead-letter list."""
    backoff_base: float = 30.0
    """Seconds before the first retry; doubled for each further attempt."""
    backoff_max: float = 6 * 3600.0
    concurrency: int = 8
    """Sends in flight at once, per provider."""
    rate_per_second: float = 50.0
    """Sends started per second, per provider (a token bucket)."""
    burst: float = 50.0
    """Sends a provider may take at once after a quiet spell (the bucket's size)."""
    breaker_failures: int = 5
    """Consecutive transient failures that open a provider's circuit."""
    breaker_cooldown: float = 60.0
    """Seconds an open circuit waits before letting one probe through."""
    send_timeout: float = 30.0
    """Seconds one provider call may take before it counts as a transient failure."""
    lease: float = 300.0
    """Seconds a claimed message stays invisible to other claims (see ``claim_due``)."""
    batch_size: int = 200
    """Messages claimed at a time, and in hand at most (claimed, not yet recorded):
    the sender claims only what it has room for, the rest stays due in the outbox."""
    idle_poll: float = 0.25
    """Seconds an idle sender waits before looking for due messages again."""
    queue: int = 64
    """Messages handed to one provider and not answered yet beyond which more are held
    (``queue / concurrency * send_timeout`` must stay well under ``lease``)."""
    saturated_delay: float = 1.0
    """Seconds a message waits when its provider's queue is full."""

    def __post_init__(self) -> None:
        for name in ("max_attempts", "concurrency", "breaker_failures", "batch_size", "queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("backoff_base", "rate_per_second", "burst", "send_timeout", "lease"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


def backoff(
    attempts: int, config: SenderConfig, random: Callable[[], float], retry_after: float | None
) -> float:
    """Seconds to wait after ``attempts`` failed attempts: exponential, with jitter.

    "Equal jitter": half the delay is fixed, half random, so retries of
    messages that failed together spread out without ever retrying at once.
    A provider's ``Retry-After`` is a floor.
    """
    delay = min(config.backoff_max, config.backoff_base * 2.0 ** max(0, attempts - 1))
    jittered = delay / 2 + random() * delay / 2
    if retry_after is not None and retry_after > jittered:
        return retry_after
    return jittered


class TokenBucket:
    """``rate`` sends per second, ``burst`` at most at once."""

    def __init__(self, rate: float, burst: float, now: datetime) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def take(self, now: datetime) -> float:
        """Take a token: 0.0, or the seconds until one is there (nothing taken)."""
        elapsed = max(0.0, (now - self._at).total_seconds())
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._at = max(self._at, now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Stops calling a provider that keeps failing, and probes it once in a while.

    ``closed``: calls go through; ``failures`` consecutive transient failures
    open it. ``open``: nothing goes through until ``cooldown`` has passed,
    then one probe (``half_open``): its success closes the circuit, its
    failure opens it for another cooldown. A permanent error (a rejected
    address) means the provider answered: it counts as a success here.
    """

    def __init__(self, failures: int, cooldown: float) -> None:
        self.threshold = failures
        self.cooldown = timedelta(seconds=cooldown)
        self.state: BreakerState = "closed"
        self.failures = 0
        self.opened_at: datetime | None = None

    def blocked_until(self, now: datetime) -> datetime | None:
        """None if a call may go now (taking the probe when half-open), else when to retry."""
        until = self.open_until(now)
        if until is None and self.state != "closed":
            self.state = "half_open"  # this caller is the probe
        return until

    def open_until(self, now: datetime) -> datetime | None:
        """Like ``blocked_until``, but changes nothing (no probe is taken)."""
        if self.state == "closed":
            return None
        assert self.opened_at is not None
        reopen = self.opened_at + self.cooldown
        if (self.state == "open" and now >= reopen) or (
            # A probe that never answered (its sender stopped): another may go.
            self.state == "half_open" and now >= reopen + self.cooldown
        ):
            return None
        # Open, or half-open with the probe still out.
        return max(reopen, now + self.cooldown / 10)

    def succeeded(self) -> None:
        self.state = "closed"
        self.failures = 0
        self.opened_at = None

    def failed(self, now: datetime) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.threshold:
            self.state = "open"
            self.opened_at = now
