"""Notifications, their per-channel deliveries, attempts and dead letters.

Delivery status life cycle::

    pending ──claim──▶ sending ──▶ sent | delivered
       ▲              ▲   │
       │     (born)───┘   │  (decided due, first of its subject: leased to this process's
       │                  │   dispatcher in the deciding transaction, see open_order_keys)
       └──── retry ◀──────┤ (transient, budget left: pending again with a later due_at)
                          ├──▶ failed   (permanent)
                          └──▶ dead     (budget spent) ──replay──▶ pending
    scheduled ──fire──▶ pending (or delivered, in-app)        (deferred: delay, digest, quiet hours)
    scheduled ──▶ cancelled | expired | suppressed (a timed fallback whose item was read)
    cancelled / expired / suppressed are set by the strategy and the scheduler.
"""

from __future__ import annotations

import json
import os
import socket
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Table,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.db import bulk_insert, placeholders, sqlite_many, sqlite_rows
from tidings.store.tables import attempts, dead_letters, deliveries, events, notifications

FINAL = frozenset({"sent", "delivered", "failed", "dead", "cancelled", "expired", "suppressed"})


async def rows_of(conn: AsyncConnection, sql: str, *parameters: Any) -> list[Any]:
    """Rows (as tuples) of ``sql``, each of whose ``{}`` stands for one of ``parameters``:
    a value, or a list or tuple of them (``x IN ({})``; not empty).

    One statement for both backends, only the executor differs: on SQLite it runs on the plain
    ``sqlite3`` connection (:func:`~tidings.store.db.sqlite_rows`: a few µs where SQLAlchemy's
    statement building, compiling of expanding ``IN`` lists and result processing cost
    ~100-300 µs a query); on PostgreSQL as the driver's own statement (:func:`_postgres`).
    """
    if conn.dialect.name != "sqlite":
        statement, values = _postgres(sql, parameters)
        return list(await conn.exec_driver_sql(statement, values))
    marks: list[str] = []
    flat: list[Any] = []
    for parameter in parameters:
        many = list(parameter) if isinstance(parameter, list | tuple) else [parameter]
        marks.append(placeholders(len(many)))
        flat += many
    return await sqlite_rows(conn, sql.format(*marks), flat)


_PG_PLANS: dict[str, tuple[list[str], list[bool]]] = {}


def _postgres(sql: str, parameters: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
    """``sql`` with ``$n`` parameters for PostgreSQL; a list in ``x IN ({})`` as one array.

    ``x IN ({})`` becomes ``x = ANY($n)`` (``NOT IN``: ``<> ALL``): the statement's text no
    longer depends on how many values the list holds, so the driver prepares it once per
    connection instead of once per list length. A list anywhere else is spread out.
    """
    plan = _PG_PLANS.get(sql)
    if plan is None:
        literals: list[str] = []
        arrays: list[bool] = []
        for literal, field, _, _ in string.Formatter().parse(sql):
            literals.append(literal)
            if field is not None:
                arrays.append(False)
        literals += [""] * (len(arrays) + 1 - len(literals))
        for i in range(len(arrays)):
            before, after = literals[i], literals[i + 1]
            head = before.rstrip()
            if head.upper().endswith("IN (") and after.lstrip().startswith(")"):
                negated = head[:-4].rstrip().upper().endswith("NOT")
                cut = head[:-4].rstrip()[:-3] if negated else head[:-4]
                literals[i] = cut.rstrip() + (" <> ALL(" if negated else " = ANY(")
                arrays[i] = True
        plan = _PG_PLANS[sql] = (literals, arrays)
    literals, arrays = plan
    parts = [literals[0]]
    values: list[Any] = []
    for parameter, array, literal in zip(parameters, arrays, literals[1:], strict=True):
        listed = isinstance(parameter, list | tuple)
        if array:
            values.append(list(parameter) if listed else [parameter])
            parts.append(f"${len(values)}")
        else:
            many = list(parameter) if listed else [parameter]
            parts.append(", ".join(f"${len(values) + i + 1}" for i in range(len(many))))
            values += many
        parts.append(literal)
    return "".join(parts), tuple(values)


async def existing_dedup_keys(conn: AsyncConnection, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` already have a notification."""
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        found.update(key for (key,) in await rows_of(conn, _DEDUP_KEYS, chunk))
    return found


_DEDUP_KEYS = "SELECT dedup_key FROM notifications WHERE dedup_key IN ({})"


@dataclass(slots=True)  # not frozen: a frozen init costs ~1 µs more a row, and no one mutates it
class Claimed:
    """A delivery row the dispatcher now owns, with what sending it needs."""

    id: str
    notification_id: str
    channel: str
    destination_kind: str
    device_id: str | None
    lane: str
    attempts: int
    accepted_at: float
    created_at: float
    due_at: float
    enqueued_at: float | None
    is_fallback: bool
    provider: str | None = None
    """The provider of the last attempt (a retry starts with the next one)."""


ORDER_WAIT = 0.2
"""How long a delivery waits behind an earlier one of its subject before it is tried again."""


_OPEN_ORDER_KEYS = (
    "SELECT order_key, channel, coalesce(device_id, '') FROM deliveries"
    " WHERE order_key IN ({}) AND status IN ('pending', 'sending')"
)


async def open_order_keys(
    conn: AsyncConnection, order_keys: Sequence[str]
) -> set[tuple[str, str, str]]:
    """``(order_key, channel, device_id or '')`` of the open (``pending`` or ``sending``)
    deliveries with one of ``order_keys``.

    A delivery with one of these ahead of it must wait its turn (see :func:`claim`): it is
    not born leased. Looked up through ``ix_deliveries_order`` (order_key, status).
    """
    found: set[tuple[str, str, str]] = set()
    keys = list(dict.fromkeys(order_keys))
    for start in range(0, len(keys), 500):
        for key, channel, device in await rows_of(
            conn, _OPEN_ORDER_KEYS, keys[start : start + 500]
        ):
            found.add((key, channel, device))
    return found


async def claim(
    conn: AsyncConnection, ids: Sequence[str], now: float, lease: float, owner: str | None = None
) -> list[Claimed]:
    """``pending`` → ``sending`` for the due ones of ``ids``; a duplicate ticket claims nothing.

    Deliveries of one subject to one subscriber's destination leave in event order: one with
    an earlier delivery still open is not claimed but handed back to the scheduler, which
    offers it again after :data:`ORDER_WAIT`. ``owner`` names the claiming process (see
    :func:`release_leases_of`).
    """
    if conn.dialect.name == "sqlite":
        return await _claim_sqlite(conn, list(dict.fromkeys(ids)), now, lease, owner)
    result = await conn.exec_driver_sql(
        _CLAIM_POSTGRES, (now + lease, owner, now, list(ids), now + 0.001)
    )
    claimed = [Claimed(*row) for row in result]
    if len(claimed) < len(ids):
        taken = {c.id for c in claimed}
        waiting = [i for i in ids if i not in taken]
        await conn.exec_driver_sql(_WAIT_POSTGRES, (now + ORDER_WAIT, waiting, now + 0.001))
    return claimed


_CLAIMED = (
    "id, notification_id, channel, destination_kind, device_id, lane, attempts, accepted_at,"
    " created_at, due_at, enqueued_at, is_fallback, provider"
)
_EARLIER_IN_FLIGHT = (
    "EXISTS (SELECT 1 FROM deliveries AS earlier"
    " WHERE earlier.order_key = deliveries.order_key AND earlier.channel = deliveries.channel"
    " AND coalesce(earlier.device_id, '') = coalesce(deliveries.device_id, '')"
    " AND earlier.status IN ('pending', 'sending')"
    " AND (earlier.seq < deliveries.seq"
    " OR (earlier.seq = deliveries.seq AND earlier.id < deliveries.id)))"
)
_CLAIM_POSTGRES = (
    "UPDATE deliveries SET status = 'sending', lease_until = $1, leased_by = $2, started_at = $3"
    " WHERE id = ANY($4::text[]) AND status = 'pending' AND due_at <= $5"
    f" AND (order_key IS NULL OR NOT {_EARLIER_IN_FLIGHT}) RETURNING {_CLAIMED}"
)
"""The claim on PostgreSQL as the driver's own statement: the ids as one array, so the text is
the same for every batch (prepared once per connection, nothing compiled per call)."""
_WAIT_POSTGRES = (
    "UPDATE deliveries SET enqueued_at = NULL, due_at = $1"
    " WHERE id = ANY($2::text[]) AND status = 'pending' AND order_key IS NOT NULL"
    " AND due_at <= $3"
)


async def _claim_sqlite(
    conn: AsyncConnection, ids: list[str], now: float, lease: float, owner: str | None
) -> list[Claimed]:
    """:func:`claim` as plain SQL: the same statements without SQLAlchemy's per-statement
    and per-row work (compiling an expanding ``IN``, a cache key over the whole statement,
    result processors), which cost more here than SQLite's own update of the rows."""
    # "+status": SQLite's planner would otherwise take ix_deliveries_due (status, due_at) over
    # the primary key for "id IN (…) AND status = 'pending' AND due_at <= …" and scan every due
    # pending row (the whole backlog) per batch; a unary + keeps a term out of index selection
    # (https://sqlite.org/optoverview.html#disqualifying_where_clause_terms_using_unary_)
    result = await sqlite_rows(
        conn,
        f"UPDATE deliveries SET status = 'sending', lease_until = ?, leased_by = ?, started_at = ?"
        f" WHERE id IN ({placeholders(len(ids))}) AND +status = 'pending' AND due_at <= ?"
        f" AND (order_key IS NULL OR NOT {_EARLIER_IN_FLIGHT}) RETURNING {_CLAIMED}",
        (now + lease, owner, now, *ids, now + 0.001),
    )
    claimed = [
        Claimed(
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], bool(r[11]), r[12]
        )
        for r in result
    ]
    if len(claimed) < len(ids):
        taken = {c.id for c in claimed}
        waiting = [i for i in ids if i not in taken]
        await sqlite_rows(
            conn,
            f"UPDATE deliveries SET enqueued_at = NULL, due_at = ?"
            f" WHERE id IN ({placeholders(len(waiting))}) AND +status = 'pending'"
            f" AND order_key IS NOT NULL AND due_at <= ?",
            (now + ORDER_WAIT, *waiting, now + 0.001),
        )
    return claimed


@dataclass(slots=True)  # not frozen, as Claimed
class Outgoing:
    """What sending needs of a claimed delivery's notification and of its event."""

    id: str
    subscriber_id: str
    category: str
    priority: str
    subject: str | None
    locale: str
    content: dict[str, Any]
    fallback: list[str]
    expires_at: float | None
    event_pk: str
    envelope: dict[str, Any]
    """The event's CloudEvent (empty if the event row is gone)."""
    occurred_at: float | None
    """The event's ``time``, else when it was accepted."""


_OUTGOING = (
    "SELECT n.id, n.subscriber_id, n.category, n.priority, n.subject, n.locale, n.content,"
    " n.fallback, n.expires_at, n.event_pk, e.envelope, coalesce(e.time, e.received_at)"
    " FROM notifications AS n LEFT JOIN events AS e ON e.id = n.event_pk"
)


async def outgoing(conn: AsyncConnection, notification_ids: Sequence[str]) -> dict[str, Outgoing]:
    """Notifications by id with their events' envelopes, in one query."""
    ids = list(set(notification_ids))
    if not ids:
        return {}
    if conn.dialect.name == "sqlite":
        result = await sqlite_rows(
            conn, f"{_OUTGOING} WHERE n.id IN ({placeholders(len(ids))})", ids
        )
        loads = json.loads
        return {
            r[0]: Outgoing(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                loads(r[6]),
                loads(r[7]),
                r[8],
                r[9],
                {} if r[10] is None else loads(r[10]),
                r[11],
            )
            for r in result
        }
    n, e = notifications, events
    rows = await conn.execute(
        select(
            n.c.id,
            n.c.subscriber_id,
            n.c.category,
            n.c.priority,
            n.c.subject,
            n.c.locale,
            n.c.content,
            n.c.fallback,
            n.c.expires_at,
            n.c.event_pk,
            e.c.envelope,
            func.coalesce(e.c.time, e.c.received_at),
        )
        .select_from(n.outerjoin(e, e.c.id == n.c.event_pk))
        .where(n.c.id.in_(ids))
    )
    return {
        r.id: Outgoing(
            r.id,
            r.subscriber_id,
            r.category,
            r.priority,
            r.subject,
            r.locale,
            r.content,
            r.fallback,
            r.expires_at,
            r.event_pk,
            r.envelope or {},
            r[11],
        )
        for r in rows
    }


_DESTINATION_COLUMNS = {
    "devices": ("id", "subscriber_id", "kind", "token_enc", "keys_enc"),
    "webhook_endpoints": ("id", "subscriber_id", "url_enc", "secret_enc"),
}


async def active_destinations(
    conn: AsyncConnection, table: Table, ids: Sequence[str]
) -> dict[str, tuple[Any, ...]]:
    """Active ``devices`` or ``webhook_endpoints`` rows by id, as tuples of the columns
    sending needs: ``(id, subscriber_id, kind, token_enc, keys_enc)`` for a device,
    ``(id, subscriber_id, url_enc, secret_enc)`` for an endpoint."""
    names = _DESTINATION_COLUMNS[table.name]
    wanted = list(set(ids))
    if not wanted:
        return {}
    if conn.dialect.name == "sqlite":
        rows = await sqlite_rows(
            conn,
            f"SELECT {', '.join(names)} FROM {table.name}"
            f" WHERE id IN ({placeholders(len(wanted))}) AND active = 1",
            wanted,
        )
    else:
        rows = await rows_of(
            conn,
            f"SELECT {', '.join(names)} FROM {table.name} WHERE id IN ({{}}) AND active = TRUE",
            wanted,
        )
    return {row[0]: tuple(row) for row in rows}


async def notifications_by_id(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Any]:
    """Notification rows by id."""
    rows = await conn.execute(select(notifications).where(notifications.c.id.in_(list(set(ids)))))
    return {row.id: row for row in rows}


async def finish(conn: AsyncConnection, outcomes: Sequence[dict[str, Any]]) -> None:
    """Record attempt outcomes: one row per delivery with its new status and timings.

    Each outcome has ``id``, ``status``, ``provider``, ``attempts``, ``last_error``,
    ``due_at``, ``finished_at``, ``tp``, ``tc``, ``td`` and the attempt fields
    ``started_at`` and ``outcome``.
    """
    if not outcomes:
        return
    if conn.dialect.name != "sqlite":
        await _finish_postgres(conn, outcomes)
        return
    await sqlite_many(conn, _FINISH_SQLITE, [_finish_params(o) for o in outcomes])
    await bulk_insert(
        conn,
        attempts,
        [
            {
                "delivery_id": o["id"],
                "number": o["attempts"],
                "provider": o["provider"] or "-",
                "started_at": o["started_at"],
                # a retry leaves the delivery unfinished, never the attempt
                "finished_at": o["finished_at"]
                if o["finished_at"] is not None
                else o["started_at"] + (o.get("td") or 0.0),
                "outcome": o["outcome"],
                "error": o["last_error"],
            }
            for o in outcomes
            if o.get("outcome")
        ],
    )


_FINISH_SQLITE = (
    "UPDATE deliveries SET status = ?, provider = ?, attempts = ?, last_error = ?, due_at = ?,"
    " finished_at = ?, enqueued_at = NULL, lease_until = NULL, leased_by = NULL,"
    " tp = ?, tc = ?, td = ?"
    " WHERE id = ?"
)


def _finish_params(o: dict[str, Any]) -> tuple[Any, ...]:
    return (
        o["status"],
        o["provider"],
        o["attempts"],
        o["last_error"],
        o["due_at"],
        o["finished_at"],
        o["tp"],
        o["tc"],
        o["td"],
        o["id"],
    )


_FINISH_POSTGRES = (
    "WITH finished AS ("
    " UPDATE deliveries AS d SET status = o.status, provider = o.provider,"
    " attempts = o.attempts, last_error = o.last_error, due_at = o.due_at,"
    " finished_at = o.finished_at, enqueued_at = NULL, lease_until = NULL, leased_by = NULL,"
    " tp = o.tp, tc = o.tc, td = o.td"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::float8[],"
    " $7::float8[], $8::float8[], $9::float8[], $10::float8[])"
    " AS o(id, status, provider, attempts, last_error, due_at, finished_at, tp, tc, td)"
    " WHERE d.id = o.id)"
    " INSERT INTO attempts (delivery_id, number, provider, started_at, finished_at, outcome, error)"
    " SELECT * FROM unnest($11::text[], $12::int[], $13::text[], $14::float8[], $15::float8[],"
    " $16::text[], $17::text[])"
)
"""Every outcome of a batch in one statement and one round trip: the deliveries updated from
arrays (one element per outcome), and the attempts inserted from arrays in the same statement.
Prepared once per connection; no per-row parameter processing."""


async def _finish_postgres(conn: AsyncConnection, outcomes: Sequence[dict[str, Any]]) -> None:
    latest = {o["id"]: o for o in outcomes}.values()  # one row per delivery: the last word
    tried = [o for o in outcomes if o.get("outcome")]
    columns: list[list[Any]] = [
        [o[key] for o in latest]
        for key in (
            "id",
            "status",
            "provider",
            "attempts",
            "last_error",
            "due_at",
            "finished_at",
            "tp",
            "tc",
            "td",
        )
    ]
    columns += [
        [o["id"] for o in tried],
        [o["attempts"] for o in tried],
        [o["provider"] or "-" for o in tried],
        [o["started_at"] for o in tried],
        # a retry leaves the delivery unfinished, never the attempt
        [
            o["finished_at"]
            if o["finished_at"] is not None
            else o["started_at"] + (o.get("td") or 0.0)
            for o in tried
        ],
        [o["outcome"] for o in tried],
        [o["last_error"] for o in tried],
    ]
    await conn.exec_driver_sql(_FINISH_POSTGRES, tuple(columns))


async def due(conn: AsyncConnection, now: float, stale_before: float, limit: int) -> list[Any]:
    """Pending deliveries that are due and not (recently) enqueued; marks them enqueued.

    On PostgreSQL the rows are locked with ``SKIP LOCKED``: the schedulers of several workers
    share the due work instead of all publishing the same tickets.
    """
    query = (
        select(deliveries.c.id, deliveries.c.lane, deliveries.c.notification_id)
        .where(
            deliveries.c.status == "pending",
            deliveries.c.due_at <= now,
            or_(deliveries.c.enqueued_at.is_(None), deliveries.c.enqueued_at < stale_before),
        )
        .order_by(deliveries.c.due_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = (await conn.execute(query)).all()
    if rows:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_([r.id for r in rows]))
            .values(enqueued_at=now)
        )
    return list(rows)


async def release_expired_leases(conn: AsyncConnection, now: float) -> int:
    """``sending`` rows whose worker died mid-call go back to ``pending``."""
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.status == "sending", deliveries.c.lease_until < now)
        .values(status="pending", enqueued_at=None, lease_until=None, leased_by=None)
    )
    return int(result.rowcount or 0)


def lease_owner(pid: int | None = None) -> str:
    """How a process signs its leases: host and process id (of this process by default)."""
    return f"{socket.gethostname()[:40]}/{os.getpid() if pid is None else pid}"


async def release_leases_of(conn: AsyncConnection, owner: str) -> int:
    """The ``sending`` rows of a process known to be dead go back to ``pending`` now.

    Its lease would bring them back too, but only after it runs out (the lease covers the
    slowest provider call); the process that saw the death need not wait.
    """
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.status == "sending", deliveries.c.leased_by == owner)
        .values(status="pending", enqueued_at=None, lease_until=None, leased_by=None)
    )
    return int(result.rowcount or 0)


async def add_dead_letter(
    conn: AsyncConnection,
    dead_id: str,
    delivery_id: str,
    channel: str,
    provider: str | None,
    reason: str,
    now: float,
) -> None:
    """Record a delivery whose retry budget is spent."""
    await conn.execute(
        insert(dead_letters).values(
            id=dead_id,
            delivery_id=delivery_id,
            channel=channel,
            provider=provider,
            reason=reason,
            created_at=now,
        )
    )


async def list_dead_letters(
    conn: AsyncConnection, after: str | None, limit: int, include_replayed: bool = False
) -> list[Any]:
    """Dead letters, newest last, after the cursor."""
    query = select(dead_letters).order_by(dead_letters.c.id).limit(limit)
    if after:
        query = query.where(dead_letters.c.id > after)
    if not include_replayed:
        query = query.where(dead_letters.c.replayed_at.is_(None))
    return list((await conn.execute(query)).all())


async def replay_dead_letter(conn: AsyncConnection, dead_id: str, now: float) -> str | None:
    """Put a dead delivery back to ``pending`` with a fresh budget; its delivery id."""
    row = (
        await conn.execute(
            select(dead_letters).where(
                dead_letters.c.id == dead_id, dead_letters.c.replayed_at.is_(None)
            )
        )
    ).first()
    if row is None:
        return None
    await conn.execute(
        update(dead_letters).where(dead_letters.c.id == dead_id).values(replayed_at=now)
    )
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.id == row.delivery_id, deliveries.c.status == "dead")
        .values(status="pending", attempts=0, due_at=now, enqueued_at=None, last_error=None)
    )
    return str(row.delivery_id)


async def list_notifications(
    conn: AsyncConnection,
    *,
    subscriber_id: str | None,
    event_pk: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[Any]:
    """Notifications matching the filters, oldest first, after the cursor."""
    query = select(notifications).order_by(notifications.c.id).limit(limit)
    conditions = []
    if subscriber_id:
        conditions.append(notifications.c.subscriber_id == subscriber_id)
    if event_pk:
        conditions.append(notifications.c.event_pk == event_pk)
    if after:
        conditions.append(notifications.c.id > after)
    if status:
        having = select(deliveries.c.notification_id).where(deliveries.c.status == status)
        conditions.append(or_(notifications.c.status == status, notifications.c.id.in_(having)))
    if conditions:
        query = query.where(and_(*conditions))
    return list((await conn.execute(query)).all())


async def deliveries_of(conn: AsyncConnection, notification_ids: Sequence[str]) -> list[Any]:
    """Delivery rows of the given notifications."""
    if not notification_ids:
        return []
    rows = await conn.execute(
        select(deliveries)
        .where(deliveries.c.notification_id.in_(list(notification_ids)))
        .order_by(deliveries.c.id)
    )
    return list(rows.all())


async def attempts_of(conn: AsyncConnection, delivery_ids: Sequence[str]) -> list[Any]:
    """Attempt rows of the given deliveries."""
    if not delivery_ids:
        return []
    rows = await conn.execute(
        select(attempts)
        .where(attempts.c.delivery_id.in_(list(delivery_ids)))
        .order_by(attempts.c.id)
    )
    return list(rows.all())
