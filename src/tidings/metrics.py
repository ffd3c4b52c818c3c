"""Prometheus metrics (SPEC §7), on a registry of their own per service instance.

One process: the values live in this process, as prometheus_client keeps them by default.

Several processes (``tidings serve --processes N``): the supervisor gives its children an empty
directory in ``PROMETHEUS_MULTIPROC_DIR``; each child's values then live in memory-mapped files
there (prometheus_client's multiprocess mode), and :meth:`Metrics.render` and
:meth:`Metrics.families` (what the dashboard's sampler reads) add up every process's files, so
whichever process answers shows the whole service. Counters and histograms sum over every
process that ever ran (a dead child's deliveries still happened); each gauge says how its
processes' values combine (``multiprocess_mode`` below), and the ``live*`` ones forget a child
once the supervisor reports it dead (:func:`process_died`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import Metric

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The shared directory of a multi-process service, or ``None`` in a single process."""
    return os.environ.get(MULTIPROC_ENV) or None


def process_died(pid: int, directory: str | os.PathLike[str] | None = None) -> None:
    """Forget the ``live*`` gauges of a child process that exited (the supervisor calls this).

    ``directory`` is the children's ``PROMETHEUS_MULTIPROC_DIR`` (by default this process's
    own, for a supervisor that set it in its own environment). Its counters and histograms
    stay: what it did still counts. A no-op in a single process.
    """
    path = os.fspath(directory) if directory is not None else multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _value_class_for_environment() -> None:
    """Store values where the environment says, whenever prometheus_client was imported.

    prometheus_client picks its value class (in-process or memory-mapped files) once, when it
    is first imported; a supervisor that imported it before setting ``PROMETHEUS_MULTIPROC_DIR``
    for its children, or a child forked from it, would otherwise keep in-process values and
    its figures would never reach the shared directory. Metrics built after this call use the
    class that matches the environment now.
    """
    path = multiprocess_dir()
    shared = bool(getattr(values.ValueClass, "_multiprocess", False))
    if path is not None and not shared:
        os.makedirs(path, exist_ok=True)
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    elif path is None and shared:
        values.ValueClass = values.MutexValue


class Metrics:
    """The service's counters, gauges and latency histograms."""

    def __init__(self) -> None:
        _value_class_for_environment()
        self.shared_dir = multiprocess_dir()
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
        # A broadcast recipient is counted when decided, and again when a deferred decision
        # settles (fired: sent, expired, cancelled): "deferred" counts deferrals, and each
        # later outcome the recipients that reached it.
        self.broadcast_recipients = Counter(
            "tidings_broadcast_recipients",
            "Broadcast recipients decided, and deferred ones settled, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tidings_latency_seconds",
            "Latency per stage (Tp produce, Tc queue, Td deliver, total)",
            ["stage", "channel"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        # Each process holds its own lanes: the service's depth is the sum over the live ones.
        self.queue_depth = Gauge(
            "tidings_queue_depth",
            "Tickets waiting per lane",
            ["lane"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        # A provider is down for the service while any live process's breaker holds it open.
        self.provider_up = Gauge(
            "tidings_provider_up",
            "1 while the provider's circuit breaker is closed",
            ["provider"],
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        # The next three are counted in the shared database by whichever process refreshes
        # them: every process holds the same figure, only some fresher than others. The most
        # recent one is the truth (a maximum would keep a stale count after replays or a drain).
        self.dead_letters = Gauge(
            "tidings_dead_letters",
            "Dead letters waiting for replay",
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.backlog_events = Gauge(
            "tidings_backlog_events",
            "Accepted events not decided yet (all processes)",
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.provider_availability = Gauge(
            "tidings_provider_availability",
            "MTBF / (MTBF + MTTR) of the provider over a window (1h, 24h, 7d), from its breaker",
            ["provider", "window"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.backlog_age = Gauge(
            "tidings_backlog_age_seconds",
            "Age of the oldest accepted event not decided yet (0 when none waits)",
            registry=self.registry,
            multiprocess_mode="livemostrecent",
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

    def count_recipients(self, outcomes: Mapping[str, int]) -> None:
        """Count broadcast recipients by outcome (decided, or settled later)."""
        for outcome, count in outcomes.items():
            if count:
                self.child(self.broadcast_recipients, outcome).inc(count)

    def _source(self) -> CollectorRegistry:
        if self.shared_dir is None:
            return self.registry
        # read afresh each time: other processes write on, start and die meanwhile
        aggregate = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(aggregate, self.shared_dir)  # type: ignore[no-untyped-call]
        return aggregate

    def families(self) -> dict[str, Metric]:
        """Every metric family by name (``tidings_events`` …), of every process."""
        return {family.name: family for family in self._source().collect()}

    def render(self) -> bytes:
        """The Prometheus text exposition (of every process of the service)."""
        return generate_latest(self._source())
