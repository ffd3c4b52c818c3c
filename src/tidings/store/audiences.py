"""A broadcast's audience read by keyset: a topic's followers, a segment, or everyone.

Members come in subscriber id order, ``after`` an id and up to another (a chunk's range),
never the whole audience at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.deliveries import rows_of

CHUNK = 1000
"""Subscribers per chunk (and per transaction): a chunk's fixed costs (its claim, reads and
commit) are shared by this many recipients, its rows held in memory at once."""


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _audience_sql(audience: Mapping[str, Any], bounded: bool) -> tuple[str, list[Any]]:
    """``SELECT <id>, <attributes> … WHERE <id> > {}`` for the audience, and its parameters."""
    upper = " AND {column} <= {{}}" if bounded else ""
    topic = audience.get("topic")
    if topic is not None:
        sql = (
            "SELECT subscriber_id, NULL FROM topic_subscribers WHERE topic_key = {}"
            " AND subscriber_id > {}" + upper.format(column="subscriber_id")
        )
        return sql + " ORDER BY subscriber_id", [topic]
    sql = "SELECT id, attributes FROM subscribers WHERE id > {}" + upper.format(column="id")
    parameters: list[Any] = []
    segment = audience.get("segment") or {}
    for name in ("locale", "timezone", "role"):
        if segment.get(name) is not None:
            sql += f" AND {name} = {{}}"
            parameters.append(segment[name])
    return sql + " ORDER BY id", parameters


def _order_first(sql: str, parameters: list[Any], after: str, upto: str | None) -> list[Any]:
    """The parameters in the order of the statement's ``{}`` (topic key, after, upto, filters)."""
    if sql.startswith("SELECT subscriber_id"):
        return [parameters[0], after, *([upto] if upto is not None else []), *parameters[1:]]
    return [after, *([upto] if upto is not None else []), *parameters]


async def page(
    conn: AsyncConnection, audience: Mapping[str, Any], after: str, upto: str | None, limit: int
) -> tuple[list[str], str | None, bool]:
    """The next members of the audience in ``(after, upto]``: ``(ids, last scanned, end)``.

    A segment's ``attributes`` are matched here (equality on each named attribute), after
    the statement: ``last scanned`` moves the cursor past rows that did not match.
    """
    sql, parameters = _audience_sql(audience, upto is not None)
    values = _order_first(sql, parameters, after, upto)
    rows = await rows_of(conn, sql + " LIMIT {}", *values, limit)
    wanted = (audience.get("segment") or {}).get("attributes") or {}
    ids = []
    for subscriber_id, attributes in rows:
        if wanted:
            held = _json(attributes) or {}
            if any(held.get(k) != v for k, v in wanted.items()):
                continue
        ids.append(subscriber_id)
    last = rows[-1][0] if rows else None
    return ids, last, len(rows) < limit or (upto is not None and last == upto)


async def boundary(conn: AsyncConnection, audience: Mapping[str, Any], after: str) -> str | None:
    """The id :data:`CHUNK` members past ``after`` (``None``: fewer are left)."""
    sql, parameters = _audience_sql(audience, False)
    values = _order_first(sql, parameters, after, None)
    rows = await rows_of(conn, sql + " LIMIT 1 OFFSET {}", *values, CHUNK - 1)
    return str(rows[0][0]) if rows else None


async def audience_size(conn: AsyncConnection, audience: Mapping[str, Any]) -> int:
    """How many subscribers the audience's statement selects (before ``attributes``)."""
    sql, parameters = _audience_sql(audience, False)
    values = _order_first(sql, parameters, "", None)
    inner = sql.rsplit(" ORDER BY", 1)[0]
    rows = await rows_of(conn, f"SELECT count(*) FROM ({inner}) AS audience", *values)
    return int(rows[0][0])


async def any_member(conn: AsyncConnection, audience: Mapping[str, Any]) -> bool:
    """Whether the audience has anyone (attributes matched over its first rows)."""
    after = ""
    for _ in range(20):
        ids, last, end = await page(conn, audience, after, None, CHUNK)
        if ids:
            return True
        if end or last is None:
            return False
        after = last
    return True  # many rows scanned, none matched yet: let the broadcast find out
