"""The availability recorder: this process's run of the service and its breakers' history.

Every :data:`~tidings.availability.HEARTBEAT` seconds it refreshes the run's ``seen_at`` and
writes the circuit breakers' transitions since the last beat (one row each: they are rare);
every :data:`GAUGES` seconds it sets ``tidings_provider_availability{provider,window}`` from
the store (every process's runs), and once an hour forgets runs older than the widest window.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from tidings import availability
from tidings.clock import Clock
from tidings.delivery.breaker import Breaker
from tidings.ids import new_id
from tidings.metrics import Metrics
from tidings.store import Store, uptime

log = logging.getLogger(__name__)

GAUGES = 30.0
"""Seconds between refreshes of the availability gauges."""
PRUNE = 3600.0
KEEP = max(availability.WINDOWS.values()) + 86_400.0
"""Runs that ended longer ago than this are forgotten."""

Breakers = Callable[[], Sequence[tuple[str, str, Breaker]]]
"""The (channel, provider, breaker) of every provider this process sends through."""


def channel_providers(breakers: Breakers) -> dict[str, list[str]]:
    """channel → its providers in failover order (the inbox, written by the service itself,
    serves ``inapp``: it is up while the service is)."""
    found: dict[str, list[str]] = {"inapp": ["inbox"]}
    for channel, provider, _ in breakers():
        found.setdefault(channel, []).append(provider)
    return found


async def read_report(store: Store, breakers: Breakers, now: float) -> dict[str, Any]:
    """The availability report (``GET /v1/availability``) as of ``now``."""
    async with store.read() as conn:
        runs, transitions = await uptime.load(conn, now - max(availability.WINDOWS.values()))
        first = await uptime.first_start(conn)
    return availability.report(runs, transitions, channel_providers(breakers), now, first)


class UptimeRecorder:
    """Keeps this process's run and its breakers' transitions in the store."""

    def __init__(self, store: Store, clock: Clock, metrics: Metrics, breakers: Breakers) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.breakers = breakers
        self.run_id = new_id()

    async def start(self) -> None:
        """Record the run's start, and set the gauges (so ``/metrics`` has them from the start)."""
        now = self.clock.now()
        await self.store.write(lambda conn: uptime.start_run(conn, self.run_id, now))
        await self.refresh_gauges()

    async def run(self) -> None:
        """Beat until cancelled (then one last beat: the run was up until now)."""
        gauges_at = prune_at = 0.0
        try:
            while True:
                await asyncio.sleep(availability.HEARTBEAT)
                try:
                    await self.beat()
                    now = self.clock.now()
                    if now >= gauges_at:
                        gauges_at = now + GAUGES
                        await self.refresh_gauges()
                    if now >= prune_at:
                        prune_at = now + PRUNE
                        await self.store.write(partial(uptime.prune, before=now - KEEP))
                except Exception:  # noqa: BLE001 - the database may be away: next beat
                    log.warning("recording availability failed", exc_info=True)
        finally:
            try:
                await self.beat()
            except Exception:  # noqa: BLE001 - stopping anyway
                log.debug("last availability beat failed", exc_info=True)

    async def beat(self) -> None:
        """Refresh ``seen_at`` and write the transitions seen since the last beat."""
        now = self.clock.now()
        changes = self._changes()
        await self.store.write(lambda conn: uptime.heartbeat(conn, self.run_id, now, changes))

    async def refresh_gauges(self) -> None:
        """``tidings_provider_availability{provider,window}`` from every process's history."""
        found = await read_report(self.store, self.breakers, self.clock.now())
        gauge = self.metrics.provider_availability
        for (provider, window), value in availability.provider_availability(found).items():
            gauge.labels(provider, window).set(value)

    def _changes(self) -> list[availability.Transition]:
        served: dict[int, tuple[Breaker, list[tuple[str, str]]]] = {}
        for channel, provider, breaker in self.breakers():
            served.setdefault(id(breaker), (breaker, []))[1].append((channel, provider))
        changes = []
        for breaker, where in served.values():
            for state, at in breaker.take_changes():
                changes += [
                    availability.Transition(self.run_id, provider, channel, state, at)
                    for channel, provider in where
                ]
        return changes
