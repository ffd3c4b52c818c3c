"""rows_of: one statement for SQLite and PostgreSQL; lists in ``IN ({})`` of any length."""

from __future__ import annotations

from tidings.store import Store
from tidings.store.db import bulk_insert
from tidings.store.deliveries import rows_of
from tidings.store.tables import attempts


def attempt(delivery_id: str, number: int, outcome: str) -> dict[str, object]:
    return {
        "delivery_id": delivery_id,
        "number": number,
        "provider": "hooks",
        "started_at": 1.0,
        "finished_at": 2.0,
        "outcome": outcome,
        "error": None,
    }


async def test_lists_scalars_and_not_in_on_each_backend(store: Store) -> None:
    rows = [attempt(f"d-{i}", i, "retry" if i % 2 else "delivered") for i in range(6)]
    await store.write(lambda conn: bulk_insert(conn, attempts, rows))
    sql = (
        "SELECT delivery_id FROM attempts WHERE delivery_id IN ({}) AND outcome = {}"
        " AND number NOT IN ({}) ORDER BY delivery_id"
    )
    async with store.read() as conn:
        for wanted in (["d-1"], ["d-0", "d-1", "d-3"], [f"d-{i}" for i in range(6)]):
            found = await rows_of(conn, sql, wanted, "retry", (5,))
            assert [r[0] for r in found] == [w for w in wanted if w in ("d-1", "d-3")]
        (count,) = await rows_of(conn, "SELECT count(*) FROM attempts WHERE number IN ({})", 4)
        assert count[0] == 1
        spread = await rows_of(
            conn,
            "SELECT delivery_id FROM attempts WHERE (number, outcome) = ({})",
            (2, "delivered"),
        )
        assert [r[0] for r in spread] == ["d-2"]
