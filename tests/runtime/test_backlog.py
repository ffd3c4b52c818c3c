"""The backlog estimate and its admission, on a real SQLite store, refreshed by hand."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tidings.clock import OffsetClock
from tidings.crypto import Cipher
from tidings.events.cloudevents import Event
from tidings.metrics import Metrics
from tidings.runtime.backlog import RETRY_AFTER_MAX, Backlog
from tidings.store import Store
from tidings.store import events as event_rows

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = Store(f"sqlite:///{tmp_path / 't.db'}", Cipher(os.urandom(32)))
    await opened.start()
    try:
        yield opened
    finally:
        await opened.aclose()


async def accept(store: Store, clock: OffsetClock, count: int, prefix: str) -> list[str]:
    """Commit ``count`` events as the intake does; their row ids."""
    batch = [Event(f"{prefix}-{n}", "/shop", "order.paid", {}) for n in range(count)]
    now = clock.now()
    accepted = await store.write(lambda conn: event_rows.insert_events(conn, batch, now))
    return [result.pk for result in accepted]


async def decide(store: Store, clock: OffsetClock, pks: list[str]) -> None:
    """Mark events decided, as the processor's claim does."""
    now = clock.now()
    await store.write(lambda conn: event_rows.claim(conn, pks, now))


async def test_a_held_request_is_admitted_when_a_refresh_finds_room(store: Store) -> None:
    clock = OffsetClock()
    metrics = Metrics()
    backlog = Backlog(store, clock, metrics, limit=3, hold=30.0)
    pks = await accept(store, clock, 3, "full")
    await backlog.refresh()
    assert backlog.undecided == 3
    assert backlog.over()
    assert b"\ntidings_backlog_events 3.0\n" in metrics.render()

    held = asyncio.create_task(backlog.admit(1))
    await asyncio.sleep(0.01)
    assert not held.done()  # over the limit: waiting for a refresh, not refused

    await backlog.refresh()  # nothing decided yet: still held
    await asyncio.sleep(0.01)
    assert not held.done()

    await decide(store, clock, pks[:1])
    await backlog.refresh()
    assert await held is True
    assert backlog.estimate() == 3  # two undecided, one admitted and not committed yet


async def test_a_held_request_is_refused_when_nothing_drains(store: Store) -> None:
    clock = OffsetClock()
    backlog = Backlog(store, clock, Metrics(), limit=2, hold=0.05)
    await accept(store, clock, 2, "stuck")
    await backlog.refresh()
    assert await backlog.admit(1) is False
    assert backlog.estimate() == 2  # a refused request counts for nothing
    assert backlog.retry_after() == RETRY_AFTER_MAX  # nothing drains: the longest wait


async def test_admitted_events_count_until_a_count_includes_them(store: Store) -> None:
    clock = OffsetClock()
    backlog = Backlog(store, clock, Metrics(), limit=2)
    assert await backlog.admit(1)
    await backlog.refresh()  # the commit has not happened: still counted, in flight
    assert backlog.estimate() == 1
    await accept(store, clock, 1, "late")
    backlog.settle(1)
    assert backlog.estimate() == 1
    await backlog.refresh()
    assert (backlog.undecided, backlog.estimate()) == (1, 1)
    assert await backlog.admit(1)
    assert backlog.over()


async def test_retry_after_follows_the_drain_rate(store: Store) -> None:
    clock = OffsetClock()
    backlog = Backlog(store, clock, Metrics(), limit=3)
    pks = await accept(store, clock, 10, "drain")
    await backlog.refresh()
    clock.advance(1.0)
    await decide(store, clock, pks[:5])
    await backlog.refresh()
    assert backlog.undecided == 5
    assert backlog.drain_rate > 0
    assert 1 <= backlog.retry_after() < RETRY_AFTER_MAX
    assert backlog.age() >= 1.0
