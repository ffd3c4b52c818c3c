"""Availability (SPEC §13, seed §3.4): MTBF, MTTR and MTBF / (MTBF + MTTR).

Measured from what the store keeps (:mod:`tidings.store.uptime`): each process's *run* of
the service (from its start to its last heartbeat) and each provider's circuit breaker
transitions within a run. Over a window (1 h, 24 h, 7 d):

- the **service** was observed from its first start (or the window's start) until now, and
  up while any of its processes ran; each gap between runs is a failure;
- a **provider** was up while the service was and its breaker was closed in every process
  (open in one of them: down; a run that ended with it open: down until the run's end);
- a **channel** was down only while every one of its providers was (failover keeps it up).

``MTBF = up time / failures``, ``MTTR = down time / failures``, and availability
``MTBF / (MTBF + MTTR)`` = up / (up + down). With no failure in a window, MTBF and MTTR are
``None`` and availability 1. Pure: the rows and ``now`` are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WINDOWS: dict[str, float] = {"1h": 3600.0, "24h": 86_400.0, "7d": 7 * 86_400.0}
"""The windows reported, by name."""
HEARTBEAT = 2.0
"""Seconds between a process's ``seen_at`` refreshes."""
LIVE = 3 * HEARTBEAT
"""A run seen this recently is still up now."""

Interval = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Run:
    """One process's run of the service."""

    id: str
    started_at: float
    seen_at: float


@dataclass(frozen=True, slots=True)
class Transition:
    """A breaker transition of one provider on one channel, in one run."""

    run_id: str
    provider: str
    channel: str
    state: str
    """``open`` or ``closed``."""
    at: float


@dataclass(frozen=True, slots=True)
class Figures:
    """Up time, down time and failures over one window."""

    up: float
    down: float
    failures: int

    def json(self) -> dict[str, Any]:
        """The API form: seconds, and availability as a fraction."""
        total = self.up + self.down
        return {
            "availability": None if total <= 0 else round(self.up / total, 6),
            "mtbf_seconds": round(self.up / self.failures, 3) if self.failures else None,
            "mttr_seconds": round(self.down / self.failures, 3) if self.failures else None,
            "failures": self.failures,
            "up_seconds": round(self.up, 3),
            "down_seconds": round(self.down, 3),
        }


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping intervals covering the same time."""
    merged: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """The time covered by both (each merged)."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _length(intervals: Iterable[Interval]) -> float:
    return sum(end - start for start, end in intervals)


def figures(observed: Sequence[Interval], down: Sequence[Interval], start: float) -> Figures:
    """Up, down and failures within ``observed`` from ``start`` on (both merged)."""
    seen = intersect(observed, [(start, float("inf"))])
    lost = intersect(merge(down), seen)
    return Figures(_length(seen) - _length(lost), _length(lost), len(merge(lost)))


def _run_end(run: Run, now: float) -> float:
    return now if run.seen_at >= now - LIVE else run.seen_at


def service(
    runs: Sequence[Run], now: float, first: float | None = None
) -> tuple[list[Interval], list[Interval]]:
    """The service's observed time (its ``first`` start → now) and its down time (gaps)."""
    if not runs:
        return ([(first, now)], [(first, now)]) if first is not None else ([], [])
    up = merge((r.started_at, _run_end(r, now)) for r in runs)
    began = min(r.started_at for r in runs) if first is None else min(first, up[0][0])
    gaps = [(began, up[0][0])] if began < up[0][0] else []
    gaps += [(a[1], b[0]) for a, b in zip(up, up[1:], strict=False)]
    if up[-1][1] < now:
        gaps.append((up[-1][1], now))
    return [(began, now)], gaps


def provider_down(
    transitions: Sequence[Transition], runs: Mapping[str, Run], now: float
) -> dict[tuple[str, str], list[Interval]]:
    """(provider, channel) → the time its breaker was open in any process."""
    down: dict[tuple[str, str], list[Interval]] = {}
    opened: dict[tuple[str, str, str], float] = {}
    for t in sorted(transitions, key=lambda t: t.at):
        key = (t.run_id, t.provider, t.channel)
        if t.state == "open":
            opened.setdefault(key, t.at)
        elif key in opened:
            down.setdefault((t.provider, t.channel), []).append((opened.pop(key), t.at))
    for (run_id, provider, channel), since in opened.items():
        run = runs.get(run_id)
        end = now if run is None else _run_end(run, now)
        down.setdefault((provider, channel), []).append((since, max(since, end)))
    return {key: merge(spans) for key, spans in down.items()}


def report(
    runs: Sequence[Run],
    transitions: Sequence[Transition],
    channels: Mapping[str, Sequence[str]],
    now: float,
    first: float | None = None,
) -> dict[str, Any]:
    """``GET /v1/availability``: the service, each provider and each channel, per window.

    ``channels`` maps each channel to its providers in failover order (from the config);
    ``first`` is the service's first start kept (runs before the oldest window are not read).
    """
    observed, gaps = service(runs, now, first)
    up = _minus(observed, gaps)
    down = provider_down(transitions, {r.id: r for r in runs}, now)

    def windows(lost: Sequence[Interval], seen: Sequence[Interval]) -> dict[str, Any]:
        return {name: figures(seen, lost, now - span).json() for name, span in WINDOWS.items()}

    providers = []
    for channel, names in channels.items():
        for name in names:
            lost = down.get((name, channel), [])
            providers.append({"provider": name, "channel": channel, "windows": windows(lost, up)})
    by_channel = []
    for channel, names in channels.items():
        every: list[Interval] = [(-float("inf"), float("inf"))]
        for name in names:
            every = intersect(every, down.get((name, channel), []))
        by_channel.append({"channel": channel, "windows": windows(every, up)})
    return {
        "windows": list(WINDOWS),
        "service": {"windows": windows(gaps, observed)},
        "providers": providers,
        "channels": by_channel,
    }


def _minus(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """``a`` without the time in ``b`` (both merged)."""
    out: list[Interval] = []
    for start, end in a:
        cursor = start
        for cut_start, cut_end in b:
            if cut_end <= cursor or cut_start >= end:
                continue
            if cut_start > cursor:
                out.append((cursor, cut_start))
            cursor = max(cursor, cut_end)
        if cursor < end:
            out.append((cursor, end))
    return out


def provider_availability(found: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """(provider, window) → availability, the lowest over the channels a provider serves."""
    out: dict[tuple[str, str], float] = {}
    for entry in found["providers"]:
        for window, numbers in entry["windows"].items():
            value = numbers["availability"]
            if value is None:
                continue
            key = (entry["provider"], window)
            out[key] = min(out.get(key, 1.0), value)
    return out
