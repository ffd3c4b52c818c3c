"""One statement text for both backends: SQLite's planner hints and statements without rows."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store import Store
from tidings.store.db import bulk_insert
from tidings.store.statements import for_backend, rows_of
from tidings.store.tables import attempts


async def test_an_update_with_a_hint_and_without_rows_runs_on_each_backend(store: Store) -> None:
    rows = [
        {
            "delivery_id": f"d-{i}",
            "number": i,
            "provider": "hooks",
            "started_at": 1.0,
            "finished_at": 2.0,
            "outcome": "retry",
            "error": None,
        }
        for i in range(4)
    ]
    await store.write(lambda conn: bulk_insert(conn, attempts, rows))
    sql = "UPDATE attempts SET error = {} WHERE delivery_id IN ({}) AND +outcome = {}"

    async def mark(conn: AsyncConnection) -> list[object]:
        return await rows_of(conn, for_backend(conn, sql), "late", ["d-1", "d-2"], "retry")

    assert await store.write(mark) == []
    async with store.read() as conn:
        marked = await rows_of(
            conn, "SELECT delivery_id FROM attempts WHERE error = {} ORDER BY delivery_id", "late"
        )
        assert [r[0] for r in marked] == ["d-1", "d-2"]
        plain = for_backend(conn, sql)
        assert ("+outcome" in plain) is (conn.dialect.name == "sqlite")
