"""What becomes of a broadcast's deferred recipients (SPEC §10).

A recipient deferred by quiet hours, a mute or ``local_time`` is a ``scheduled`` notification
and a ``deferred`` decision. When :func:`tidings.store.schedule.fire_due` fires it (or
expires it, or cancels it) the decision moves on in the same transaction — ``sent``,
``expired``, ``cancelled`` — and so do the counts of the chunk it was decided in, so a
broadcast's progress ends with no recipient left ``deferred``. While the broadcast is
paused its due recipients wait (:func:`held`); once it is cancelled they are dropped.

The decisions themselves are written here too (:func:`insert_recipients`, one executemany a
chunk on SQLite) and looked up before a chunk is decided (:func:`decided`: none twice).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_, bindparam, false, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.db import bulk_insert, sqlite_many
from tidings.store.deliveries import rows_of
from tidings.store.tables import (
    broadcast_chunks,
    broadcast_recipients,
    notifications,
)

SENT_LATER = "sent when its time came"
"""How a fired recipient's reason begins (the deferral's reason follows)."""


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def rule_of(broadcast_id: str, rule_id: str | None) -> str:
    """The rule id a broadcast's notifications carry (its topic rule, or its own)."""
    return rule_id or f"broadcast:{broadcast_id}"


async def held(conn: AsyncConnection) -> Any:
    """A condition on ``notifications`` true for those of a paused broadcast (they wait).

    Paused broadcasts are few (the status index finds them); their ``(event_pk, rule_id)``
    pairs are what their notifications carry.
    """
    paused = await rows_of(
        conn, "SELECT id, event_pk, rule_id FROM broadcasts WHERE status = {}", "paused"
    )
    if not paused:
        return false()
    return or_(
        *(
            and_(
                notifications.c.event_pk == event_pk,
                notifications.c.rule_id == rule_of(broadcast_id, rule_id),
            )
            for broadcast_id, event_pk, rule_id in paused
        )
    )


async def of_notes(conn: AsyncConnection, notes: Sequence[Any]) -> dict[str, tuple[str, str]]:
    """Per notification id, the broadcast it belongs to and that broadcast's status."""
    if not notes:
        return {}
    found = await rows_of(
        conn,
        "SELECT id, event_pk, rule_id, status FROM broadcasts WHERE event_pk IN ({})",
        sorted({n.event_pk for n in notes}),
    )
    by_key = {(pk, rule_of(b, rule)): (b, status) for b, pk, rule, status in found}
    return {
        n.id: by_key[(n.event_pk, n.rule_id)] for n in notes if (n.event_pk, n.rule_id) in by_key
    }


async def settle(
    conn: AsyncConnection, broadcast_id: str, moves: Mapping[str, tuple[str, str]]
) -> Counter[str]:
    """Move recipients' decisions on (subscriber id → ``(outcome, reason)``); how many moved,
    by their new outcome.

    Each recipient's old outcome is taken off, and the new one added to, the counts of the
    chunk that decided it: the first whose ``upto_id`` is at or past its id (the database
    compares, as it did when it cut the chunks).
    """
    if not moves:
        return Counter()
    found = await rows_of(
        conn,
        "SELECT r.subscriber_id, r.outcome, r.reason, (SELECT min(c.seq) FROM broadcast_chunks c"
        " WHERE c.broadcast_id = r.broadcast_id"
        " AND (c.upto_id IS NULL OR c.upto_id >= r.subscriber_id))"
        " FROM broadcast_recipients r WHERE r.broadcast_id = {} AND r.subscriber_id IN ({})",
        broadcast_id,
        sorted(moves),
    )
    changes: list[dict[str, Any]] = []
    deltas: dict[int, Counter[str]] = defaultdict(Counter)
    for subscriber_id, old, old_reason, seq in found:
        outcome, reason = moves[subscriber_id]
        if old == outcome:
            continue
        if outcome == "sent":
            reason = f"{reason} ({old_reason})"
        changes.append({"b": broadcast_id, "s": subscriber_id, "o": outcome, "r": reason})
        if seq is not None:
            deltas[int(seq)][old] -= 1
            deltas[int(seq)][outcome] += 1
    if not changes:
        return Counter()
    await conn.execute(
        update(broadcast_recipients)
        .where(
            broadcast_recipients.c.broadcast_id == bindparam("b"),
            broadcast_recipients.c.subscriber_id == bindparam("s"),
        )
        .values(outcome=bindparam("o"), reason=bindparam("r"), until=None),
        changes,
    )
    await _recount(conn, broadcast_id, deltas)
    await _wake_when_settled(conn, broadcast_id)
    return Counter(change["o"] for change in changes)


async def _wake_when_settled(conn: AsyncConnection, broadcast_id: str) -> None:
    """A decided broadcast whose last deferred recipient moved on: the broadcaster's next
    round finishes it (``next_at`` cleared)."""
    found = await rows_of(
        conn,
        "SELECT counts FROM broadcast_chunks WHERE broadcast_id = {} AND counts IS NOT NULL",
        broadcast_id,
    )
    if sum(int((_json(value) or {}).get("deferred", 0)) for (value,) in found) > 0:
        return
    await rows_of(
        conn,
        "UPDATE broadcasts SET next_at = NULL WHERE id = {} AND status = 'running'"
        " AND planned = {} AND NOT EXISTS (SELECT 1 FROM broadcast_chunks c"
        " WHERE c.broadcast_id = broadcasts.id AND c.status = 'pending')",
        broadcast_id,
        True,
    )


async def _recount(
    conn: AsyncConnection, broadcast_id: str, deltas: Mapping[int, Counter[str]]
) -> None:
    """Add ``deltas`` to the chunks' counts (locked in ``seq`` order on PostgreSQL)."""
    query = (
        select(broadcast_chunks.c.seq, broadcast_chunks.c.counts)
        .where(
            broadcast_chunks.c.broadcast_id == broadcast_id,
            broadcast_chunks.c.seq.in_(sorted(deltas)),
        )
        .order_by(broadcast_chunks.c.seq)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    for seq, counts in (await conn.execute(query)).all():
        total = Counter(_json(counts) or {})
        for outcome, change in deltas[seq].items():
            total[outcome] += change
        kept = {outcome: n for outcome, n in total.items() if n}
        await conn.execute(
            update(broadcast_chunks)
            .where(broadcast_chunks.c.broadcast_id == broadcast_id, broadcast_chunks.c.seq == seq)
            .values(counts=kept)
        )


async def settle_notes(
    conn: AsyncConnection,
    notes: Sequence[Any],
    owners: Mapping[str, tuple[str, str]],
    outcome: str,
    reason: str,
) -> Counter[str]:
    """:func:`settle` the broadcasts' recipients of ``notes`` (others are not broadcasts');
    how many moved, by their new outcome."""
    by_broadcast: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    for note in notes:
        owner = owners.get(note.id)
        if owner is not None:
            by_broadcast[owner[0]][note.subscriber_id] = (outcome, reason)
    settled: Counter[str] = Counter()
    for broadcast_id, moves in by_broadcast.items():
        settled += await settle(conn, broadcast_id, moves)
    return settled


async def decided(conn: AsyncConnection, broadcast_id: str, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` this broadcast has decided for already."""
    if not ids:
        return set()
    rows = await rows_of(
        conn,
        "SELECT subscriber_id FROM broadcast_recipients"
        " WHERE broadcast_id = {} AND subscriber_id IN ({})",
        broadcast_id,
        list(ids),
    )
    return {r[0] for r in rows}


RECIPIENT_COLUMNS = (
    "broadcast_id",
    "subscriber_id",
    "outcome",
    "reason",
    "until",
    "notification_id",
    "created_at",
)
"""A decision's values in :func:`insert_recipients`' rows, in this order."""
_INSERT_RECIPIENTS = (
    f"INSERT INTO broadcast_recipients ({', '.join(RECIPIENT_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(RECIPIENT_COLUMNS))})"
)


async def insert_recipients(conn: AsyncConnection, rows: Sequence[Sequence[Any]]) -> None:
    """Store recipients' decisions (each row's values as :data:`RECIPIENT_COLUMNS`)."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        await sqlite_many(conn, _INSERT_RECIPIENTS, rows)
    else:
        await bulk_insert(
            conn, broadcast_recipients, [dict(zip(RECIPIENT_COLUMNS, r, strict=True)) for r in rows]
        )
