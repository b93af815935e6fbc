"""Prometheus metrics, one registry per running Rapport (tests open many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
