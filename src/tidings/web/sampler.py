"""A small in-memory ring of per-second rates and latencies, read off the Prometheus metrics.

The dashboard's charts need a time series; the metrics only hold running totals. Sampling the
totals once a second and keeping the differences gives the series without touching the store.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric

from tidings.metrics import Metrics

STAGES = ("produce", "queue", "deliver", "total")
_SUCCESS = frozenset({"sent", "delivered"})
_FAILURE = frozenset({"failed", "dead"})
_MAX_GAP = 5.0  # a longer pause between samples says nobody was sampling: no rate across it


@dataclass(slots=True)
class _Histogram:
    count: float = 0.0
    total: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound → cumulative count


@dataclass(slots=True)
class _Totals:
    at: float
    events: float
    delivered: float
    failed: float
    retried: float
    stages: dict[str, _Histogram]


def _samples(families: dict[str, Metric], name: str) -> list[Any]:
    family = families.get(name)
    return [] if family is None else list(family.samples)


def read_totals(metrics: Metrics, at: float) -> _Totals:
    """The running totals the series is made from (of every process of the service)."""
    families = metrics.families()
    events = sum(
        s.value
        for s in _samples(families, "tidings_events")
        if s.name.endswith("_total") and s.labels.get("outcome") == "accepted"
    )
    delivered = failed = retried = 0.0
    for s in _samples(families, "tidings_deliveries"):
        if not s.name.endswith("_total"):
            continue
        status = s.labels.get("status")
        if status in _SUCCESS:
            delivered += s.value
        elif status in _FAILURE:
            failed += s.value
        elif status == "pending":
            retried += s.value
    stages = {stage: _Histogram() for stage in STAGES}
    for s in _samples(families, "tidings_latency_seconds"):
        found = stages.get(s.labels.get("stage", ""))
        if found is None:
            continue
        if s.name.endswith("_count"):
            found.count += s.value
        elif s.name.endswith("_sum"):
            found.total += s.value
        elif s.name.endswith("_bucket"):
            bound = float(s.labels["le"])
            found.buckets[bound] = found.buckets.get(bound, 0.0) + s.value
    return _Totals(at, events, delivered, failed, retried, stages)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Estimate the ``q`` quantile from cumulative bucket counts (as Prometheus does)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    target = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= target:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (target - below) / (count - below)
        lower, below = bound, count
    return lower


def _stage_point(now: _Histogram, before: _Histogram) -> dict[str, float | None]:
    count = now.count - before.count
    if count <= 0:
        return {"count": 0, "mean": None, "p50": None, "p95": None}
    delta = {b: now.buckets[b] - before.buckets.get(b, 0.0) for b in now.buckets}
    return {
        "count": count,
        "mean": (now.total - before.total) / count,
        "p50": quantile(0.5, delta),
        "p95": quantile(0.95, delta),
    }


class Sampler:
    """Keeps the last ``size`` one-second points: events/s, deliveries/s, Tp/Tc/Td per stage."""

    def __init__(self, metrics: Metrics, size: int = 300) -> None:
        self.metrics = metrics
        self.points: deque[dict[str, Any]] = deque(maxlen=size)
        self._last: _Totals | None = None

    @property
    def last_at(self) -> float | None:
        """When the last sample was taken."""
        return None if self._last is None else self._last.at

    def sample(self, at: float) -> None:
        """Read the totals now and append the rates since the previous sample."""
        now = read_totals(self.metrics, at)
        before, self._last = self._last, now
        if before is None:
            return
        span = now.at - before.at
        if span <= 0:
            self._last = before
            return
        if span > _MAX_GAP:
            return
        self.points.append(
            {
                "t": round(now.at, 3),
                "events": (now.events - before.events) / span,
                "delivered": (now.delivered - before.delivered) / span,
                "failed": (now.failed - before.failed) / span,
                "retried": (now.retried - before.retried) / span,
                "latency": {s: _stage_point(now.stages[s], before.stages[s]) for s in STAGES},
            }
        )

    def series(self, since: float | None = None) -> list[dict[str, Any]]:
        """The points after ``since`` (all when ``None``), oldest first."""
        if since is None:
            return list(self.points)
        return [p for p in self.points if p["t"] > since]
