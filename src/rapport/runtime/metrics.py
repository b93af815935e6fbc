"""Prometheus metrics, one registry per running Rapport (tests open many).

Most are updated where things happen; the sender's counters are read when
``/metrics`` is scraped (``SenderCollector``), so the sender keeps plain
integers on its hot path and knows nothing of Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


class SenderCounts(Protocol):
    """What the collector reads of a ``rapport.runtime.sender.Sender``."""

    @property
    def sent_total(self) -> int: ...
    @property
    def failed_total(self) -> int: ...
    @property
    def dead_total(self) -> int: ...


SENDER_METRICS = (
    ("rapport_messages_sent", "sent_total", "Messages a channel accepted (recorded sent)"),
    (
        "rapport_messages_failed",
        "failed_total",
        "Delivery attempts that failed and were scheduled for a retry",
    ),
    (
        "rapport_messages_dead",
        "dead_total",
        "Messages given up on: moved to the dead-letter list (permanent error or retries spent)",
    ),
)
"""Metric name (``_total`` is added on exposition), the sender's counter, help."""


class SenderCollector(Collector):
    """The running sender's counters, read at scrape time.

    ``sender`` returns the current sender, or None when none runs (``sender =
    off``, or before ``start``): the counters then read 0. They count since the
    sender started, so a restart resets them, as Prometheus expects of counters.
    """

    def __init__(self, sender: Callable[[], SenderCounts | None]) -> None:
        self._sender = sender

    def collect(self) -> Iterator[Metric]:
        sender = self._sender()
        for name, attribute, help_text in SENDER_METRICS:
            value = 0 if sender is None else getattr(sender, attribute)
            yield CounterMetricFamily(name, help_text, value=value)


class Metrics:
    def __init__(self, *, sender: Callable[[], SenderCounts | None] | None = None) -> None:
        """``sender``: how to find the running sender (the runtime's ``lambda: self.sender``)."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_accepted = Counter(
            "rapport_events_accepted", "Events accepted into the event log", ["type"], registry=r
        )
        self.events_duplicate = Counter(
            "rapport_events_duplicate", "Events dropped as replays of a known messageId", registry=r
        )
        self.events_rejected = Counter(
            "rapport_events_rejected", "Events refused at ingest", ["code"], registry=r
        )
        self.requests_throttled = Counter(
            "rapport_ingest_throttled", "Ingest requests answered 429", registry=r
        )
        self.ingest_seconds = Histogram(
            "rapport_ingest_request_seconds",
            "Time to accept one ingest request (including the durable append)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.events_processed = Counter(
            "rapport_events_processed", "Events processed into profiles", registry=r
        )
        self.processing_failures = Counter(
            "rapport_processing_failures", "Events whose processing failed", registry=r
        )
        self.log_end_offset = Gauge(
            "rapport_log_end_offset", "Offset of the newest event in the log", registry=r
        )
        self.processed_offset = Gauge(
            "rapport_processed_offset", "Offset up to which events are processed", registry=r
        )
        self.processing_lag = Gauge(
            "rapport_processing_lag", "Accepted events not yet processed", registry=r
        )

        if sender is not None:
            r.register(SenderCollector(sender))

    def render(self) -> bytes:
        return generate_latest(self.registry)
