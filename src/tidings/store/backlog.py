"""The undecided backlog as the database sees it: every process's accepted events at once."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.tables import events

# Both walk ix_events_unprocessed (processed_at, received_at) and nothing else: the first the
# NULL range (count and oldest in one pass), the second the events decided since ``since``.
_UNDECIDED = select(func.count(), func.min(events.c.received_at)).where(
    events.c.processed_at.is_(None)
)


@dataclass(frozen=True, slots=True)
class BacklogFigures:
    """How many accepted events wait for a decision, since when, and how many were decided."""

    undecided: int
    oldest_received_at: float | None
    decided_since: int


async def figures(conn: AsyncConnection, since: float) -> BacklogFigures:
    """The undecided events (count, oldest ``received_at``) and those decided after ``since``."""
    count, oldest = (await conn.execute(_UNDECIDED)).one()
    decided = (
        await conn.execute(select(func.count()).where(events.c.processed_at > since))
    ).scalar_one()
    return BacklogFigures(int(count), None if oldest is None else float(oldest), int(decided))
