"""Attempt outcomes: each delivery's new status and timings, and one ``attempts`` row a try.

The columns and the rows are defined once; only the executor differs per backend: on SQLite
an executemany of each statement on the plain ``sqlite3`` connection, on PostgreSQL one
statement that updates from arrays and inserts from arrays (``unnest``) in one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.db import placeholders, sqlite_many

_FINISHED = (
    ("status", "text"),
    ("provider", "text"),
    ("attempts", "int"),
    ("last_error", "text"),
    ("due_at", "float8"),
    ("finished_at", "float8"),
    ("tp", "float8"),
    ("tc", "float8"),
    ("td", "float8"),
)
"""The delivery columns an outcome sets (with PostgreSQL's types), each from its own key."""
_RELEASED = "enqueued_at = NULL, lease_until = NULL, leased_by = NULL"
_ATTEMPT = (
    ("delivery_id", "text"),
    ("number", "int"),
    ("provider", "text"),
    ("started_at", "float8"),
    ("finished_at", "float8"),
    ("outcome", "text"),
    ("error", "text"),
)
"""The columns of an attempt row, in :func:`_attempt`'s order."""

_finished_row = itemgetter(*(name for name, _ in _FINISHED), "id")


def _attempt(o: dict[str, Any]) -> tuple[Any, ...]:
    """The ``attempts`` row of an outcome that tried a provider."""
    # a retry leaves the delivery unfinished, never the attempt
    finished = o["finished_at"]
    if finished is None:
        finished = o["started_at"] + (o.get("td") or 0.0)
    return (
        o["id"],
        o["attempts"],
        o["provider"] or "-",
        o["started_at"],
        finished,
        o["outcome"],
        o["last_error"],
    )


_FINISH_SQLITE = (
    f"UPDATE deliveries SET {', '.join(f'{name} = ?' for name, _ in _FINISHED)}, {_RELEASED}"
    " WHERE id = ?"
)
_ATTEMPTS_SQLITE = (
    f"INSERT INTO attempts ({', '.join(name for name, _ in _ATTEMPT)})"
    f" VALUES ({placeholders(len(_ATTEMPT))})"
)
_FINISH_POSTGRES = (
    "WITH finished AS ("
    f" UPDATE deliveries AS d SET {', '.join(f'{name} = o.{name}' for name, _ in _FINISHED)},"
    f" {_RELEASED}"
    " FROM unnest("
    + ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(_FINISHED + (("id", "text"),), 1))
    + f") AS o({', '.join(name for name, _ in _FINISHED)}, id)"
    " WHERE d.id = o.id)"
    f" INSERT INTO attempts ({', '.join(name for name, _ in _ATTEMPT)})"
    " SELECT * FROM unnest("
    + ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(_ATTEMPT, len(_FINISHED) + 2))
    + ")"
)
"""Every outcome of a batch in one statement and one round trip: the deliveries updated from
arrays (one element per outcome), and the attempts inserted from arrays in the same statement.
Prepared once per connection; no per-row parameter processing."""


async def finish(conn: AsyncConnection, outcomes: Sequence[dict[str, Any]]) -> None:
    """Record attempt outcomes: one row per delivery with its new status and timings.

    Each outcome has ``id``, ``status``, ``provider``, ``attempts``, ``last_error``,
    ``due_at``, ``finished_at``, ``tp``, ``tc``, ``td`` and the attempt fields
    ``started_at`` and ``outcome``.
    """
    if not outcomes:
        return
    finished = [_finished_row(o) for o in outcomes]
    tried = [_attempt(o) for o in outcomes if o.get("outcome")]
    if conn.dialect.name == "sqlite":
        await sqlite_many(conn, _FINISH_SQLITE, finished)
        if tried:
            await sqlite_many(conn, _ATTEMPTS_SQLITE, tried)
        return
    latest = list({row[-1]: row for row in finished}.values())  # one row a delivery: the last
    arrays = [list(column) for column in zip(*latest, strict=True)]
    arrays += [list(column) for column in zip(*tried, strict=True)] or [[] for _ in _ATTEMPT]
    await conn.exec_driver_sql(_FINISH_POSTGRES, tuple(arrays))
