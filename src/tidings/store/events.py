"""Accepted events (idempotent on ``(source, id)``) and the decisions taken on them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.events.cloudevents import Event
from tidings.ids import new_id
from tidings.store.db import Prepared, bulk_insert, insert_prepared, prepare_insert
from tidings.store.statements import for_backend, rows_of
from tidings.store.tables import decisions, events
from tidings.strategy.model import Decision


@dataclass(frozen=True, slots=True)
class Accepted:
    """The outcome of offering one event: its row id, and whether it was seen before."""

    pk: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An accepted event as the processor reads it back."""

    pk: str
    event: Event
    received_at: float


@dataclass(frozen=True, slots=True)
class Offered:
    """A batch of events made ready to insert before the write transaction (:func:`offer`)."""

    results: list[Accepted]
    """Each event's outcome if none of them is stored yet (duplicates within the batch are)."""
    rows: list[dict[str, Any]]
    insert: Prepared


def offer(batch: Sequence[Event], now: float, *, sqlite: bool) -> Offered:
    """The rows of ``batch``: ids minted, envelopes encoded — work that need not hold the
    write lock, which every process of ``tidings serve --processes N`` takes turns on."""
    results, rows = _new_rows(batch, now, {})
    return Offered(results, rows, prepare_insert(events, rows, sqlite=sqlite, keep_first=True))


async def insert_events(
    conn: AsyncConnection, batch: Sequence[Event], now: float
) -> list[Accepted]:
    """:func:`offer` and :func:`insert_offered` at once."""
    return await insert_offered(conn, offer(batch, now, sqlite=conn.dialect.name == "sqlite"))


async def insert_offered(conn: AsyncConnection, offered: Offered) -> list[Accepted]:
    """Insert the events of ``offered`` not stored yet; duplicates (also within the batch) are
    reported with the row id of the event stored first.

    Insert first (``ON CONFLICT DO NOTHING``), then look up the keys only when a row was
    skipped — a retry, another writer's race: usually none. PostgreSQL's ``RETURNING id``
    names the skipped rows; SQLite's executemany has no ``RETURNING``, so a short count of
    inserted rows sends every key of the batch to the lookup. Looking up first cost a query
    per batch under the write lock and, on a young PostgreSQL table, far more: with the
    statistics of its first minutes the planner took the unique index ``(source, event_id)``
    for ``source = $1`` alone and filtered every event of that source (14 ms a batch at 6,000
    rows, growing with the table, in ``bench.scaleout``).
    """
    rows = offered.rows
    if not rows:
        return offered.results
    if conn.dialect.name == "postgresql":
        statement = pg_insert(events).on_conflict_do_nothing().returning(events.c.id)
        inserted = set((await conn.execute(statement, rows)).scalars())
        lost = [row for row in rows if row["id"] not in inserted]
    else:
        lost = rows if await insert_prepared(conn, offered.insert) != len(rows) else []
    if not lost:
        return offered.results
    stored = await _stored_keys(conn, [(row["source"], row["event_id"]) for row in lost])
    first = {
        row["id"]: pk
        for row in lost
        if (pk := stored[(row["source"], row["event_id"])]) != row["id"]
    }
    return [Accepted(first[r.pk], True) if r.pk in first else r for r in offered.results]


def _new_rows(
    batch: Sequence[Event], now: float, existing: dict[tuple[str, str], str]
) -> tuple[list[Accepted], list[dict[str, Any]]]:
    """Each event's outcome and the rows of those not in ``existing`` (nor earlier in ``batch``)."""
    results: list[Accepted] = []
    rows: list[dict[str, Any]] = []
    for event in batch:
        key = (event.source, event.id)
        if key in existing:
            results.append(Accepted(existing[key], True))
            continue
        pk = new_id()
        existing[key] = pk
        results.append(Accepted(pk, False))
        rows.append(
            {
                "id": pk,
                "source": event.source,
                "event_id": event.id,
                "type": event.type,
                "subject": event.subject,
                "time": event.time,
                "envelope": event.envelope(),
                "received_at": now,
                "processed_at": None,
            }
        )
    return results, rows


async def _stored_keys(
    conn: AsyncConnection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """``(source, id) → row id`` of those of ``keys`` that are stored already.

    The lookup is ``source = ? AND event_id IN (…)`` per source: SQLite answers a row-value
    ``(source, event_id) IN (…)`` with a scan of the whole table (its planner does not take
    the unique index for it), which made every accept slower as the table grew.
    """
    by_source: dict[str, set[str]] = {}
    for source, event_id in keys:
        by_source.setdefault(source, set()).add(event_id)
    existing: dict[tuple[str, str], str] = {}
    for source, wanted in by_source.items():
        ids = list(wanted)
        for start in range(0, len(ids), _CHUNK):
            found = await rows_of(conn, _STORED, source, ids[start : start + _CHUNK])
            existing.update({(source, event_id): pk for event_id, pk in found})
    return existing


_CHUNK = 500
"""Ids per statement at most (SQLite's limit of parameters is far above it)."""
_STORED = "SELECT event_id, id FROM events WHERE source = {} AND event_id IN ({})"
"""The duplicate lookup (:func:`~tidings.store.statements.rows_of`: both backends)."""
_CLAIM = (
    "UPDATE events SET processed_at = {} WHERE id IN ({}) AND +processed_at IS NULL RETURNING id"
)
"""The claim of a batch. ``+processed_at``: without the unary + SQLite plans this over
ix_events_unprocessed (processed_at IS NULL) rather than the primary key, and walks the whole
unprocessed backlog per batch (7 ms for 64 ids behind 30,000); PostgreSQL gets it without
(:func:`~tidings.store.statements.for_backend`)."""


async def claim(conn: AsyncConnection, pks: Sequence[str], now: float) -> set[str]:
    """Mark the events ``pks`` processed at ``now``; the ids that were not processed yet.

    The processor claims its batch in its write transaction, so an event handed over twice
    (a recovered hand-off) is decided once.
    """
    sql = for_backend(conn, _CLAIM)
    claimed: set[str] = set()
    for start in range(0, len(pks), _CHUNK):
        rows = await rows_of(conn, sql, now, list(pks[start : start + _CHUNK]))
        claimed.update(pk for (pk,) in rows)
    return claimed


def _stored(row: Any) -> StoredEvent:
    from tidings.events.cloudevents import parse_structured

    return StoredEvent(row.id, parse_structured(row.envelope), row.received_at)


async def unprocessed(
    conn: AsyncConnection, limit: int, older_than: float, *, newest: bool = False
) -> list[StoredEvent]:
    """Accepted events not processed yet (after a crash or a lost hand-off): the oldest, or
    with ``newest`` the latest of those received by ``older_than`` (what a process with
    nothing to do takes from another's backlog, whose owner works from the oldest)."""
    order = (events.c.received_at, events.c.id)
    rows = await conn.execute(
        select(events)
        .where(events.c.processed_at.is_(None), events.c.received_at <= older_than)
        .order_by(*(column.desc() for column in order) if newest else order)
        .limit(limit)
    )
    return [_stored(row) for row in rows]


def decision_rows(
    event_pk: str, made: Sequence[tuple[Decision, list[str]]], now: float
) -> list[dict[str, Any]]:
    """Rows for each decision on one event, with the notifications it created."""
    return [
        {
            "id": new_id(),
            "event_pk": event_pk,
            "rule_id": decision.rule_id,
            "recipient_id": decision.recipient_id,
            "outcome": decision.outcome,
            "reason": decision.reason,
            "until": decision.until,
            "notification_ids": notification_ids,
            "created_at": now,
        }
        for decision, notification_ids in made
    ]


async def insert_decision_rows(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Store decision rows (see :func:`decision_rows`) in one statement."""
    if rows:
        await bulk_insert(conn, decisions, rows)


async def find(conn: AsyncConnection, event_id: str, source: str | None) -> list[Any]:
    """Event rows with CloudEvents id ``event_id`` (and ``source`` when given), or a row id."""
    condition = events.c.event_id == event_id
    if source is not None:
        condition = and_(condition, events.c.source == source)
    else:
        condition = or_(condition, events.c.id == event_id)
    return list((await conn.execute(select(events).where(condition).limit(5))).all())


async def decisions_of(conn: AsyncConnection, event_pk: str) -> list[Any]:
    """The decisions taken on one event, in order."""
    rows = await conn.execute(
        select(decisions).where(decisions.c.event_pk == event_pk).order_by(decisions.c.id)
    )
    return list(rows.all())


async def listed(
    conn: AsyncConnection,
    *,
    type: str | None,
    subject: str | None,
    since: float | None,
    after: str | None,
    limit: int,
) -> list[Any]:
    """Events matching the filters, in the order they were received, after the cursor."""
    query = select(events).order_by(events.c.id).limit(limit)
    if type:
        query = query.where(events.c.type == type)
    if subject:
        query = query.where(events.c.subject == subject)
    if since is not None:
        query = query.where(events.c.received_at >= since)
    if after:
        query = query.where(events.c.id > after)
    return list((await conn.execute(query)).all())
