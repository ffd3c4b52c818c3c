"""The strategy's state for a batch of events, read from the store.

What the decision needs to know beyond the events themselves: each subject's history of
tracked events (the life cycle, ``cancel_on``), its deferred notifications a later event may
cancel, the cap counts of the batch's subscribers and their digests still collecting.
:mod:`tidings.store.schedule` re-exports :func:`load_state`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.ids import floor_id
from tidings.store.deliveries import rows_of
from tidings.store.tables import notifications
from tidings.strategy import lifecycle
from tidings.strategy.model import OpenDigest, PastEvent, Scheduled, State


async def load_state(
    conn: AsyncConnection,
    *,
    subjects: Iterable[str],
    exclude_pks: Sequence[str],
    subscribers: Iterable[str],
    caps: dict[str, float],
    digest_rules: Iterable[str],
    cancel_types: Iterable[str] = (),
    now: float,
) -> State:
    """The strategy's state for a batch: subject history, cap counts, open digests, deferrals.

    ``caps`` maps each capped category to its window in seconds; ``cancel_types`` are the
    rules' ``cancel_on`` entries (the history holds those and the life cycle's types only, so
    a subject with thousands of custom events costs nothing).
    """
    state = State()
    wanted = sorted(set(subjects))
    people = sorted(set(subscribers))
    if wanted:
        await _load_history(conn, state, wanted, exclude_pks, cancel_types)
        await _load_cancellable(conn, state, wanted)
    if people:
        await _load_cap_counts(conn, state, people, caps, now)
        rules = sorted(set(digest_rules))
        if rules:
            await _load_open_digests(conn, state, people, rules, now)
    return state


async def _load_history(
    conn: AsyncConnection,
    state: State,
    subjects: list[str],
    exclude_pks: Sequence[str],
    cancel_types: Iterable[str],
) -> None:
    """The subjects' processed events of the tracked and ``cancel_on`` types, oldest first."""
    types = lifecycle.TRACKED | set(cancel_types)
    exact = sorted(t for t in types if "*" not in t)
    globs = [g.replace("*", "%") for g in sorted(t for t in types if "*" in t)]
    matching = " OR ".join(["type IN ({})"] * bool(exact) + ["type LIKE {}"] * len(globs))
    excluded = list(exclude_pks)
    history = await rows_of(
        conn,
        _HISTORY.format(" AND id NOT IN ({})" * bool(excluded), matching or "0 = 1"),
        subjects,
        *([excluded] if excluded else []),
        *([exact] if exact else []),
        *globs,
    )
    for _pk, subject, event_type, event_id, time, envelope in history:
        state.history.setdefault(subject, []).append(
            PastEvent(event_type, event_id, time, _refund_id(envelope))
        )


async def _load_cancellable(conn: AsyncConnection, state: State, subjects: list[str]) -> None:
    """The subjects' deferred notifications that a later event may cancel (locked on PG)."""
    scheduled = await rows_of(
        conn, _SCHEDULED + (" FOR UPDATE" if conn.dialect.name == "postgresql" else ""), subjects
    )
    for notification_id, event_pk, rule_id, subscriber_id, subject, cancel_on in scheduled:
        cancel_on = _json(cancel_on)
        if cancel_on:
            state.scheduled.setdefault(subject, []).append(
                Scheduled(
                    notification_id, event_pk, rule_id, subscriber_id, subject, tuple(cancel_on)
                )
            )


async def _load_cap_counts(
    conn: AsyncConnection, state: State, people: list[str], caps: dict[str, float], now: float
) -> None:
    """Per subscriber and capped category, the messages counted in the cap's window: its
    notifications, and the inbox items broadcasts left without one."""
    for category, per in caps.items():
        since = now - per
        sql = _CAP_COUNTS_BY_DIALECT.get(conn.dialect.name, _CAP_COUNTS_BY_DIALECT["postgresql"])
        counted = await rows_of(
            conn, sql, people, category, since, people, floor_id(since), category, since
        )
        for subscriber_id, count in counted:
            state.sent[(subscriber_id, category)] = int(count)


async def _load_open_digests(
    conn: AsyncConnection, state: State, people: list[str], rules: list[str], now: float
) -> None:
    """The digests still collecting for these subscribers and rules (locked on PG)."""
    open_digests = await conn.execute(
        _for_update(
            conn,
            select(
                notifications.c.id,
                notifications.c.rule_id,
                notifications.c.subscriber_id,
                notifications.c.digest,
                notifications.c.due_at,
            ).where(
                notifications.c.rule_id.in_(rules),
                notifications.c.subscriber_id.in_(people),
                notifications.c.status == "scheduled",
                notifications.c.due_at > now,
            ),
        )
    )
    for row in open_digests:
        digest = row.digest or {}
        state.digests[(row.rule_id, row.subscriber_id)] = OpenDigest(
            row.id, int(digest.get("count", 1)), list(digest.get("events", [])), row.due_at
        )


_CAP_COUNTS = (
    "SELECT subscriber_id, count(*) FROM ("
    "SELECT subscriber_id FROM notifications WHERE subscriber_id IN ({{}}) AND category = {{}}"
    " AND created_at > {{}} AND status NOT IN ('cancelled', 'suppressed')"
    " UNION ALL SELECT subscriber_id FROM inbox_items{} WHERE subscriber_id IN ({{}})"
    " AND id >= {{}} AND notification_id IS NULL AND category = {{}} AND created_at > {{}}"
    ") AS counted GROUP BY subscriber_id"
)
"""Messages in a cap's window per subscriber: notifications by ``ix_notifications_caps``, and
broadcasts' items without one by ``ix_inbox_subscriber`` from the window's
:func:`~tidings.ids.floor_id` on (such an item's id is minted no earlier than its
``created_at``: :mod:`tidings.broadcasts.fanout`), the window itself checked on each row;
named on SQLite, whose planner may not see the id range."""
_CAP_COUNTS_BY_DIALECT = {
    "sqlite": _CAP_COUNTS.format(" INDEXED BY ix_inbox_subscriber"),
    "postgresql": _CAP_COUNTS.format(""),
}
_HISTORY = (
    "SELECT id, subject, type, event_id, time, envelope FROM events"
    " WHERE subject IN ({{}}) AND processed_at IS NOT NULL{} AND ({})"
    " ORDER BY processed_at, id"
)
"""A batch's subjects' processed events of the given types, oldest first (the batch's own
events excluded)."""
_SCHEDULED = (
    "SELECT id, event_pk, rule_id, subscriber_id, subject, cancel_on FROM notifications"
    " WHERE subject IN ({}) AND status = 'scheduled'"
)
"""The deferred notifications of a batch's subjects (a cancel may take them)."""


def _json(value: Any) -> Any:
    """A JSON column's value as read by a plain statement (text on SQLite)."""
    return json.loads(value) if isinstance(value, str) else value


def _refund_id(envelope: Any) -> str | None:
    """``data.refund_id`` of a stored envelope (parsed only if it can be there)."""
    if isinstance(envelope, str):
        if '"refund_id"' not in envelope:
            return None
        envelope = json.loads(envelope)
    refund_id = ((envelope or {}).get("data") or {}).get("refund_id")
    return None if refund_id is None else str(refund_id)


def _for_update(conn: AsyncConnection, query: Any) -> Any:
    # PostgreSQL runs several writer transactions (and workers) at once: lock what we read
    return query.with_for_update() if conn.dialect.name == "postgresql" else query
