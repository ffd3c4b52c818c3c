"""Broadcasts in the store: rows, status changes, chunks of the audience, recipients' decisions.

A running broadcast's audience (a topic's followers, a segment of the subscribers, or all of
them) is cut into *chunks*: ranges ``(after_id, upto_id]`` of subscriber ids, about
:data:`~tidings.store.audiences.CHUNK` each, planned a few at a time by keyset pagination
(never the whole audience in memory). A chunk is claimed, decided and written in one
transaction — its recipients' rows and its own progress (``after_id`` moved on, or
``done``) commit together, so a crash at any instant leaves it exactly where the last
commit put it. On PostgreSQL chunks are claimed ``FOR UPDATE SKIP LOCKED`` (workers take
different chunks at once); on SQLite every write transaction holds the database's one
write lock, so a claim is atomic across the processes sharing the file.
``broadcast_recipients``' primary key (broadcast, subscriber) is the last guard against a
second message.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.events.cloudevents import Event
from tidings.ids import new_id
from tidings.store.audiences import audience_size, boundary
from tidings.store.broadcast_recipients import rule_of as _rule_of
from tidings.store.db import bulk_insert
from tidings.store.deliveries import rows_of
from tidings.store.tables import (
    broadcast_chunks,
    broadcast_recipients,
    broadcasts,
    events,
    notifications,
)
from tidings.strategy.model import Decision

PLAN_AHEAD = 50
"""Chunks planned per planning transaction."""
ACTIVE = ("scheduled", "running", "paused")
RECHECK = 60.0
"""Seconds between looks at a decided broadcast whose deferred recipients still wait."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """A claimed chunk: which broadcast, which range of subscriber ids."""

    broadcast_id: str
    seq: int
    after_id: str
    upto_id: str | None
    counts: Any = None
    """Its counts so far, as claimed (the row is the claiming transaction's); ``None`` until
    a transaction that wrote some of its recipients' decisions recorded them (:func:`advance`),
    so none of its range is decided yet."""


@dataclass(frozen=True, slots=True)
class Work:
    """What the broadcaster has to do now (:func:`work`)."""

    due: bool
    """A scheduled broadcast's ``send_at`` came (:func:`promote`)."""
    unplanned: bool
    """A running broadcast has chunks to plan (:func:`plan`)."""
    ready: bool
    """A running broadcast is not held until ``next_at`` (chunks to decide, or to finish)."""

    def __bool__(self) -> bool:
        return self.due or self.ready


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _locking(conn: AsyncConnection, clause: str) -> str:
    return f" {clause}" if conn.dialect.name == "postgresql" else ""


async def create(conn: AsyncConnection, row: dict[str, Any], event: Event) -> Any | None:
    """Store a new broadcast and the event its recipients are decided on; ``None`` when
    stored, else the broadcast that already has this id (idempotent on it)."""
    found = await get(conn, row["id"])
    if found is not None:
        return found
    now = row["created_at"]
    event_row = {
        "id": row["event_pk"],
        "source": event.source,
        "event_id": event.id,
        "type": event.type,
        "subject": None,
        "time": None,
        "envelope": event.envelope(),
        "received_at": now,
        "processed_at": now,  # decided by the broadcast, not by the processor
    }
    await bulk_insert(conn, events, [event_row])
    await bulk_insert(conn, broadcasts, [row])
    return None


def rule_of(row: Any) -> str:
    """The rule id a broadcast's notifications carry."""
    return _rule_of(str(row.id), row.rule_id)


def new_row(
    broadcast_id: str,
    event_pk: str,
    audience: dict[str, Any],
    message: dict[str, Any],
    now: float,
    *,
    send_at: float | None = None,
    rate: float | None = None,
    rule_id: str | None = None,
) -> dict[str, Any]:
    """A broadcast row, ``scheduled`` until ``send_at`` (running at once without one)."""
    start = now if send_at is None else send_at
    running = start <= now
    return {
        "id": broadcast_id,
        "event_pk": event_pk,
        "rule_id": rule_id,
        "status": "running" if running else "scheduled",
        "audience": audience,
        "message": message,
        "send_at": start,
        "rate": rate,
        "audience_size": None,
        "planned_to": None,
        "planned": False,
        "next_at": None,
        "created_at": now,
        "started_at": now if running else None,
        "finished_at": None,
    }


async def fan_out_topics(
    conn: AsyncConnection, decisions: Mapping[str, list[tuple[Decision, list[str]]]], now: float
) -> None:
    """A broadcast for each topic rule's decision, in the processor's transaction.

    The event is then processed exactly when its broadcasts exist; each decision's reason
    names its broadcast.
    """
    rows = []
    for event_pk, made in decisions.items():
        for index, (decision, ids) in enumerate(made):
            if decision.fanout is None:
                continue
            broadcast_id = new_id()
            rows.append(
                new_row(
                    broadcast_id,
                    event_pk,
                    {"topic": decision.fanout},
                    {"rule_id": decision.rule_id},
                    now,
                    rule_id=decision.rule_id,
                )
            )
            reason = f"{decision.reason} (broadcast {broadcast_id})"
            made[index] = (
                Decision(decision.rule_id, None, decision.outcome, reason, fanout=decision.fanout),
                ids,
            )
    if rows:
        await bulk_insert(conn, broadcasts, rows)


async def get(conn: AsyncConnection, broadcast_id: str) -> Any | None:
    """The broadcast's row, or ``None``."""
    return (await conn.execute(select(broadcasts).where(broadcasts.c.id == broadcast_id))).first()


async def list_rows(conn: AsyncConnection, after: str | None, limit: int) -> list[Any]:
    """Broadcasts, newest id first, after the cursor."""
    query = select(broadcasts).order_by(broadcasts.c.id.desc()).limit(limit)
    if after:
        query = query.where(broadcasts.c.id < after)
    return list(await conn.execute(query))


async def counts(conn: AsyncConnection, broadcast_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Recipients decided so far per broadcast, by outcome (summed over its chunks)."""
    found: dict[str, Counter[str]] = {b: Counter() for b in broadcast_ids}
    if not broadcast_ids:
        return {}
    rows = await rows_of(
        conn,
        "SELECT broadcast_id, counts FROM broadcast_chunks"
        " WHERE broadcast_id IN ({}) AND counts IS NOT NULL",
        list(broadcast_ids),
    )
    for broadcast_id, value in rows:
        found[broadcast_id].update(_json(value) or {})
    return {b: dict(c) for b, c in found.items()}


async def failed(conn: AsyncConnection, event_pk: str, rule_id: str) -> int:
    """The broadcast's deliveries that failed for good (``failed`` or ``dead``).

    Driven from the deliveries' status index (few rows fail), each checked against its
    notification: cheap enough for a live progress view whatever the audience.
    """
    # CROSS JOIN: SQLite joins in the written order (PostgreSQL plans it as any inner join)
    rows = await rows_of(
        conn,
        "SELECT count(*) FROM deliveries d CROSS JOIN notifications n"
        " WHERE d.status IN ('failed', 'dead') AND n.id = d.notification_id"
        " AND n.event_pk = {} AND n.rule_id = {}",
        event_pk,
        rule_id,
    )
    return int(rows[0][0])


async def change_status(
    conn: AsyncConnection, broadcast_id: str, action: str, now: float
) -> tuple[Any | None, str | None]:
    """Pause, resume or cancel; ``(row after, problem)`` (``row`` ``None``: no such id).

    On PostgreSQL the row is locked ``FOR UPDATE``: a chunk being written holds it ``FOR KEY
    SHARE``, so the change waits for it, and no chunk starts after it.
    """
    locked = select(broadcasts).where(broadcasts.c.id == broadcast_id)
    if conn.dialect.name == "postgresql":
        locked = locked.with_for_update()
    row = (await conn.execute(locked)).first()
    if row is None:
        return None, None
    allowed = {
        "pause": ("scheduled", "running"),
        "resume": ("paused",),
        "cancel": ACTIVE,
    }[action]
    if row.status not in allowed:
        return row, f"a {row.status} broadcast cannot be {action}d"
    values: dict[str, Any]
    if action == "pause":
        values = {"status": "paused"}
    elif action == "resume":
        running = row.send_at <= now
        values = {"status": "running" if running else "scheduled"}
        if running and row.started_at is None:
            values["started_at"] = now
    else:
        values = {"status": "cancelled", "finished_at": now}
    await conn.execute(update(broadcasts).where(broadcasts.c.id == broadcast_id).values(**values))
    return await get(conn, broadcast_id), None


async def scheduled_notifications(
    conn: AsyncConnection, event_pk: str, rule_id: str, limit: int
) -> list[Any]:
    """Deferred notifications of a broadcast not fired yet (what cancelling it cancels)."""
    rows = await conn.execute(
        select(notifications.c.id, notifications.c.subscriber_id)
        .where(
            notifications.c.event_pk == event_pk,
            notifications.c.rule_id == rule_id,
            notifications.c.status == "scheduled",
        )
        .limit(limit)
    )
    return list(rows)


async def work(conn: AsyncConnection, now: float) -> Work:
    """What there is to do now: one read (``ix_broadcasts_status``), so an idle round, and
    a busy round's promote and plan steps that would find nothing, write nothing."""
    rows = await rows_of(
        conn,
        "SELECT EXISTS (SELECT 1 FROM broadcasts WHERE status = 'scheduled' AND send_at <= {}),"
        " EXISTS (SELECT 1 FROM broadcasts WHERE status = 'running' AND planned = {}),"
        " EXISTS (SELECT 1 FROM broadcasts WHERE status = 'running'"
        " AND (next_at IS NULL OR next_at <= {}))",
        now,
        False,
        now,
    )
    due, unplanned, ready = rows[0]
    return Work(bool(due), bool(unplanned), bool(ready))


async def promote(conn: AsyncConnection, now: float) -> int:
    """Scheduled broadcasts whose ``send_at`` came start running; how many."""
    result = await conn.execute(
        update(broadcasts)
        .where(broadcasts.c.status == "scheduled", broadcasts.c.send_at <= now)
        .values(status="running", started_at=func.coalesce(broadcasts.c.started_at, now))
    )
    return int(result.rowcount or 0)


async def plan(conn: AsyncConnection, now: float) -> bool:
    """Cut the next :data:`PLAN_AHEAD` chunks of one running broadcast; whether it did.

    Each boundary is one index seek (``OFFSET CHUNK - 1`` past the last one); the last chunk
    is open-ended (``upto_id`` null), so subscribers added meanwhile are reached too.
    """
    sql = (
        "SELECT id, audience, planned_to FROM broadcasts"
        " WHERE status = 'running' AND planned = {} ORDER BY created_at LIMIT 1"
        + _locking(conn, "FOR NO KEY UPDATE SKIP LOCKED")
    )
    rows = await rows_of(conn, sql, False)
    if not rows:
        return False
    broadcast_id, audience, planned_to = rows[0]
    audience = _json(audience)
    seq = int(
        (
            await conn.execute(
                select(func.coalesce(func.max(broadcast_chunks.c.seq), -1)).where(
                    broadcast_chunks.c.broadcast_id == broadcast_id
                )
            )
        ).scalar_one()
    )
    values: dict[str, Any] = {}
    if seq < 0:
        values["audience_size"] = await audience_size(conn, audience)
    after = planned_to or ""
    chunks: list[dict[str, Any]] = []
    done = False
    for _ in range(PLAN_AHEAD):
        upto = await boundary(conn, audience, after)
        seq += 1
        chunks.append(
            {
                "broadcast_id": broadcast_id,
                "seq": seq,
                "after_id": after,
                "upto_id": upto,
                "status": "pending",
                "counts": None,
                "done_at": None,
            }
        )
        if upto is None:
            done = True
            break
        after = upto
    await bulk_insert(conn, broadcast_chunks, chunks)
    values.update(planned=done, planned_to=after)
    await conn.execute(update(broadcasts).where(broadcasts.c.id == broadcast_id).values(**values))
    return True


async def claim(conn: AsyncConnection, now: float) -> Chunk | None:
    """A pending chunk of a running broadcast (none of another worker's).

    On PostgreSQL the broadcast is then read ``FOR KEY SHARE``: a pause or cancel waits for
    this transaction, and one committed before it is seen here (no chunk then). SQLite's
    one writer saw its status in the same transaction.
    """
    sql = (
        "SELECT c.broadcast_id, c.seq, c.after_id, c.upto_id, c.counts FROM broadcast_chunks c"
        " JOIN broadcasts b ON b.id = c.broadcast_id"
        " WHERE c.status = 'pending' AND b.status = 'running'"
        " AND (b.next_at IS NULL OR b.next_at <= {})"
        " ORDER BY b.created_at, c.broadcast_id, c.seq LIMIT 1"
        + _locking(conn, "FOR UPDATE OF c SKIP LOCKED")
    )
    rows = await rows_of(conn, sql, now)
    if not rows:
        return None
    chunk = Chunk(*rows[0])
    if conn.dialect.name == "postgresql":
        running = await rows_of(
            conn,
            "SELECT id FROM broadcasts WHERE id = {} AND status = 'running' FOR KEY SHARE",
            chunk.broadcast_id,
        )
        if not running:
            return None
    return chunk


async def advance(
    conn: AsyncConnection,
    chunk: Chunk,
    last: str | None,
    finished: bool,
    outcomes: Mapping[str, int],
    now: float,
) -> None:
    """Record a chunk's progress in the transaction that claimed it and wrote its
    recipients (its counts as :func:`claim` read them, plus ``outcomes``)."""
    total = Counter(_json(chunk.counts) or {})
    total.update(outcomes)
    sets = "counts = {}"
    values: list[Any] = [json.dumps(dict(total))]
    if finished:
        sets += ", status = 'done', done_at = {}"
        values.append(now)
    elif last is not None:
        sets += ", after_id = {}"
        values.append(last)
    await rows_of(
        conn,
        f"UPDATE broadcast_chunks SET {sets} WHERE broadcast_id = {{}} AND seq = {{}}",
        *values,
        chunk.broadcast_id,
        chunk.seq,
    )


async def pace(conn: AsyncConnection, broadcast_id: str, next_at: float) -> None:
    """Hold a rate-limited broadcast's next chunk until ``next_at``."""
    await conn.execute(
        update(broadcasts).where(broadcasts.c.id == broadcast_id).values(next_at=next_at)
    )


async def finish(conn: AsyncConnection, now: float) -> list[str]:
    """Running broadcasts fully decided with no recipient left deferred: ``done``; their ids.

    One whose deferred recipients are still waiting (quiet hours, ``local_time``) stays
    ``running`` — it can still be paused or cancelled — and is looked at again when the last
    of them fires (:func:`tidings.store.broadcast_recipients.settle`), or in a minute.
    """
    rows = await rows_of(
        conn,
        "SELECT b.id FROM broadcasts b WHERE b.status = 'running' AND b.planned = {}"
        " AND NOT EXISTS (SELECT 1 FROM broadcast_chunks c"
        " WHERE c.broadcast_id = b.id AND c.status = 'pending')",
        True,
    )
    ids = [r[0] for r in rows]
    if not ids:
        return []
    totals = await counts(conn, ids)
    done = []
    for broadcast_id in ids:
        total = totals[broadcast_id]
        values: dict[str, Any] = {"next_at": now + RECHECK}
        if total.get("deferred", 0) <= 0:
            done.append(broadcast_id)
            values = {"status": "done", "finished_at": now, "audience_size": sum(total.values())}
        await conn.execute(
            update(broadcasts)
            .where(broadcasts.c.id == broadcast_id, broadcasts.c.status == "running")
            .values(**values)
        )
    return done


async def recipient(conn: AsyncConnection, broadcast_id: str, subscriber_id: str) -> Any | None:
    """One recipient's decision, or ``None``."""
    return (
        await conn.execute(
            select(broadcast_recipients).where(
                broadcast_recipients.c.broadcast_id == broadcast_id,
                broadcast_recipients.c.subscriber_id == subscriber_id,
            )
        )
    ).first()
