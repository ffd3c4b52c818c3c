"""Prometheus metrics (SPEC §7), on a registry of their own per service instance."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The service's counters, gauges and latency histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "tidings_events",
            "Events offered, by type and outcome",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "tidings_deliveries",
            "Delivery attempts' results",
            ["channel", "provider", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tidings_latency_seconds",
            "Latency per stage (Tp produce, Tc queue, Td deliver, total)",
            ["stage", "channel"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "tidings_queue_depth", "Tickets waiting per lane", ["lane"], registry=self.registry
        )
        self.provider_up = Gauge(
            "tidings_provider_up",
            "1 while the provider's circuit breaker is closed",
            ["provider"],
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "tidings_dead_letters", "Dead letters waiting for replay", registry=self.registry
        )

        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: prometheus_client's own lookup showed in
        profiles at several calls per event and per delivery."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
