"""Event rows: idempotency on (source, id), within a batch and across batches."""

from __future__ import annotations

from pathlib import Path

from tidings.crypto import Cipher, generate_key
from tidings.events.cloudevents import Event
from tidings.store import Store
from tidings.store import events as event_rows


def event(event_id: str, source: str = "/shop") -> Event:
    return Event(id=event_id, source=source, type="order.paid", data={"order_id": "o"})


async def test_duplicates_within_and_across_batches(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 't.db'}", Cipher.from_text(generate_key()))
    await store.start()
    try:
        first = await store.write(
            lambda c: event_rows.insert_events(c, [event("a"), event("b"), event("a")], 1.0)
        )
        assert [r.duplicate for r in first] == [False, False, True]
        assert first[2].pk == first[0].pk
        second = await store.write(
            lambda c: event_rows.insert_events(
                c, [event("b"), event("a", "/other"), event("c")], 2.0
            )
        )
        assert [r.duplicate for r in second] == [True, False, False]
        assert second[0].pk == first[1].pk
        async with store.read() as conn:
            assert len(await event_rows.unprocessed(conn, 100, 10.0)) == 4
    finally:
        await store.aclose()


async def test_duplicate_lookup_searches_the_unique_index(tmp_path: Path) -> None:
    """The (source, id) lookup of every accept must not scan the events table."""
    from sqlalchemy import event as sa_event

    store = Store(f"sqlite:///{tmp_path / 't.db'}", Cipher.from_text(generate_key()))
    await store.start()
    seen: list[tuple[str, tuple[object, ...]]] = []

    def capture(_conn: object, _cursor: object, sql: str, params: object, *_: object) -> None:
        if sql.lstrip().upper().startswith("SELECT") and "FROM events" in sql:
            seen.append((sql, tuple(params) if isinstance(params, (list, tuple)) else ()))

    sa_event.listen(store.engine.sync_engine, "before_cursor_execute", capture)
    try:
        batch = [event("a"), event("b"), event("c", "/other")]
        await store.write(lambda c: event_rows.insert_events(c, batch, 1.0))
        assert seen
        async with store.read() as conn:
            for sql, params in seen:
                plan = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
                details = " ".join(str(row[-1]) for row in plan)
                assert "USING INDEX" in details and "SCAN events" not in details, details
    finally:
        await store.aclose()
