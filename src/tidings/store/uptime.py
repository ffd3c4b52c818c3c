"""Rows of availability (SPEC §13): service runs with their heartbeat, breaker transitions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.availability import Run, Transition
from tidings.ids import new_id
from tidings.store.tables import breaker_transitions, service_runs


async def start_run(conn: AsyncConnection, run_id: str, now: float) -> None:
    """A process of the service starts."""
    await conn.execute(insert(service_runs).values(id=run_id, started_at=now, seen_at=now))


async def heartbeat(
    conn: AsyncConnection, run_id: str, now: float, changes: Sequence[Transition] = ()
) -> None:
    """The run is still up at ``now``; record the breaker transitions seen since last time."""
    await conn.execute(update(service_runs).where(service_runs.c.id == run_id).values(seen_at=now))
    if changes:
        await conn.execute(
            insert(breaker_transitions),
            [
                {
                    "id": new_id(),
                    "run_id": c.run_id,
                    "provider": c.provider,
                    "channel": c.channel,
                    "state": c.state,
                    "at": c.at,
                }
                for c in changes
            ],
        )


async def load(conn: AsyncConnection, since: float) -> tuple[list[Run], list[Transition]]:
    """Every run up at some time after ``since``, and their transitions."""
    runs = [
        Run(r.id, r.started_at, r.seen_at)
        for r in await conn.execute(select(service_runs).where(service_runs.c.seen_at >= since))
    ]
    ids = [r.id for r in runs]
    transitions: list[Transition] = []
    for start in range(0, len(ids), 500):
        query = select(breaker_transitions).where(
            breaker_transitions.c.run_id.in_(ids[start : start + 500])
        )
        transitions += [
            Transition(t.run_id, t.provider, t.channel, t.state, t.at)
            for t in await conn.execute(query)
        ]
    return runs, transitions


async def first_start(conn: AsyncConnection) -> float | None:
    """When the service first started (of the runs kept)."""
    found = (await conn.execute(select(service_runs.c.started_at).order_by("started_at"))).first()
    return None if found is None else float(found[0])


async def prune(conn: AsyncConnection, before: float) -> None:
    """Forget runs (and their transitions) that ended before ``before``."""
    old = select(service_runs.c.id).where(service_runs.c.seen_at < before)
    await conn.execute(delete(breaker_transitions).where(breaker_transitions.c.run_id.in_(old)))
    await conn.execute(delete(service_runs).where(service_runs.c.seen_at < before))
