"""The strategy's state queries (tidings.store.schedule) use their indexes."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.crypto import Cipher, generate_key
from tidings.ids import new_ids
from tidings.store import Store, schedule
from tidings.store.db import bulk_insert, inline_sqlite
from tidings.store.tables import inbox_items, notifications


def _notification(i: int, subscriber: str, category: str, created_at: float) -> dict[str, object]:
    return {
        "id": f"n-{i:06d}",
        "event_pk": f"e-{i}",
        "rule_id": "r",
        "subscriber_id": subscriber,
        "category": category,
        "priority": "normal",
        "subject": None,
        "locale": "en-US",
        "content": {},
        "channels": ["inapp"],
        "fallback": [],
        "status": "sent",
        "dedup_key": f"k-{i}",
        "created_at": created_at,
        "due_at": created_at,
    }


def _item(subscriber: str, category: str, created_at: float) -> dict[str, object]:
    """A broadcast's inbox item, its id minted as the fan-out mints it."""
    (item_id,) = new_ids(1, not_before=created_at)
    return {
        "id": item_id,
        "subscriber_id": subscriber,
        "notification_id": None,
        "category": category,
        "title": "Sale",
        "body": "",
        "data": {},
        "created_at": created_at,
    }


async def test_cap_counts_use_the_caps_index_and_count_the_window(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 't.db'}", Cipher.from_text(generate_key()))
    await store.start()
    rows = [_notification(i, "seller-1", "marketing", 1000.0 + i) for i in range(300)]
    rows += [_notification(1000 + i, "seller-1", "order_updates", 1200.0) for i in range(50)]
    await store.write(lambda conn: bulk_insert(conn, notifications, rows))
    # a broadcast's in-app items (no notification): three in the window, two before it
    items = [_item("seller-1", "marketing", at) for at in (1250.0, 1260.0, 1300.0, 1100.0, 1200.0)]
    items.append(_item("seller-1", "order_updates", 1250.0))
    await store.write(lambda conn: bulk_insert(conn, inbox_items, items))
    statements: list[str] = []

    async def load(conn: AsyncConnection) -> schedule.State:
        raw = inline_sqlite(conn)
        assert raw is not None
        raw.set_trace_callback(statements.append)
        try:
            return await schedule.load_state(
                conn,
                subjects=[],
                exclude_pks=[],
                subscribers=["seller-1"],
                caps={"marketing": 100.0},
                digest_rules=[],
                now=1300.0,
            )
        finally:
            raw.set_trace_callback(None)

    try:
        async with store.read() as conn:
            state = await load(conn)
            # created_at in (1200, 1300]: 99 notifications and 3 items
            assert state.sent[("seller-1", "marketing")] == 102
            counts = [s for s in statements if "count(" in s.lower()]
            assert counts, statements
            plan = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + counts[0])
            details = " ".join(str(row[-1]) for row in plan)
            assert "ix_notifications_caps" in details, details
            # broadcasts' in-app items (no notification) count too, from the window's first id
            assert "ix_inbox_subscriber (subscriber_id=? AND id>?)" in details, details
    finally:
        await store.aclose()
