"""Event rows: idempotency on (source, id), within a batch and across batches."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.crypto import Cipher, generate_key
from tidings.events.cloudevents import Event
from tidings.store import Store
from tidings.store import events as event_rows
from tidings.store.db import inline_sqlite


def event(event_id: str, source: str = "/shop") -> Event:
    return Event(id=event_id, source=source, type="order.paid", data={"order_id": "o"})


async def test_duplicates_within_and_across_batches(store: Store) -> None:
    """On each backend (the ``store`` fixture: SQLite and PostgreSQL)."""
    first = await store.write(
        lambda c: event_rows.insert_events(c, [event("a"), event("b"), event("a")], 1.0)
    )
    assert [r.duplicate for r in first] == [False, False, True]
    assert first[2].pk == first[0].pk
    second = await store.write(
        lambda c: event_rows.insert_events(c, [event("b"), event("a", "/other"), event("c")], 2.0)
    )
    assert [r.duplicate for r in second] == [True, False, False]
    assert second[0].pk == first[1].pk
    async with store.read() as conn:
        assert len(await event_rows.unprocessed(conn, 100, 10.0)) == 4


async def test_duplicate_lookup_searches_the_unique_index(tmp_path: Path) -> None:
    """A batch of new events is inserted without a lookup; one with a stored duplicate looks
    the keys up (one query per source), through the unique index, not a scan of events."""
    store = Store(f"sqlite:///{tmp_path / 't.db'}", Cipher.from_text(generate_key()))
    await store.start()
    statements: list[str] = []

    def accepting(batch: list[Event]) -> Any:
        async def accept(conn: AsyncConnection) -> list[event_rows.Accepted]:
            raw = inline_sqlite(conn)
            assert raw is not None
            raw.set_trace_callback(statements.append)  # the SQL with its values filled in
            try:
                return await event_rows.insert_events(conn, batch, 1.0)
            finally:
                raw.set_trace_callback(None)

        return accept

    def lookups() -> list[str]:
        return [s for s in statements if s.lstrip().upper().startswith("SELECT")]

    try:
        fresh = await store.write(accepting([event("a"), event("x", "/other")]))
        assert not any(r.duplicate for r in fresh) and lookups() == []
        again = await store.write(accepting([event("a"), event("b"), event("c", "/other")]))
        assert [r.duplicate for r in again] == [True, False, False]
        assert again[0].pk == fresh[0].pk
        assert len(lookups()) == 2  # one per source
        async with store.read() as conn:
            for sql in lookups():
                plan = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)
                details = " ".join(str(row[-1]) for row in plan)
                assert "USING INDEX" in details and "SCAN events" not in details, details
            assert len(await event_rows.unprocessed(conn, 100, 10.0)) == 4
    finally:
        await store.aclose()


async def test_claim_takes_each_event_once(store: Store) -> None:
    """On each backend; a batch past one statement's ids (500) is claimed whole."""
    accepted = await store.write(
        lambda c: event_rows.insert_events(c, [event("a"), event("b")], 1.0)
    )
    pks = [a.pk for a in accepted]
    first = await store.write(lambda c: event_rows.claim(c, [pks[0], "missing"], 2.0))
    second = await store.write(lambda c: event_rows.claim(c, pks, 3.0))
    assert first == {pks[0]} and second == {pks[1]}
    async with store.read() as conn:
        assert await event_rows.unprocessed(conn, 100, 10.0) == []
        (row,) = await event_rows.find(conn, "a", "/shop")
    assert row.processed_at == 2.0
    many = await store.write(
        lambda c: event_rows.insert_events(c, [event(f"m{i}") for i in range(1200)], 4.0)
    )
    assert [r.duplicate for r in many] == [False] * 1200
    again = await store.write(
        lambda c: event_rows.insert_events(c, [event(f"m{i}") for i in range(1200)], 5.0)
    )
    assert all(r.duplicate for r in again) and [r.pk for r in again] == [r.pk for r in many]
    claimed = await store.write(lambda c: event_rows.claim(c, [r.pk for r in many], 6.0))
    assert claimed == {r.pk for r in many}


async def test_the_processing_claim_looks_its_rows_up_by_id_not_through_the_backlog(
    tmp_path: Path,
) -> None:
    """Claiming a batch must not walk every unprocessed event (ix_events_unprocessed)."""
    store = Store(f"sqlite:///{tmp_path / 't.db'}", Cipher.from_text(generate_key()))
    await store.start()
    statements: list[str] = []

    async def claim(conn: AsyncConnection) -> set[str]:
        batch = [event(f"e{i}") for i in range(200)]
        accepted = await event_rows.insert_events(conn, batch, 1.0)
        raw = inline_sqlite(conn)
        assert raw is not None
        raw.set_trace_callback(statements.append)
        try:
            return await event_rows.claim(conn, [a.pk for a in accepted[:64]], 2.0)
        finally:
            raw.set_trace_callback(None)

    try:
        assert len(await store.write(claim)) == 64
        updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
        assert updates, statements
        async with store.read() as conn:
            plan = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + updates[0])
            details = " ".join(str(row[-1]) for row in plan)
            assert "ix_events_unprocessed" not in details, details
    finally:
        await store.aclose()


async def test_a_race_for_one_key_reports_the_winner_row(store: Store) -> None:
    """PostgreSQL, several writers: the second transaction to insert a key waits for the
    first, stores nothing and reports the first one's row (SQLite has one writer)."""
    if store.is_sqlite:
        return
    async with store.engine.connect() as first, store.engine.connect() as second:
        await first.begin()
        (won,) = await event_rows.insert_events(first, [event("race")], 1.0)
        await second.begin()
        racing = asyncio.create_task(event_rows.insert_events(second, [event("race")], 1.0))
        await asyncio.sleep(0.2)  # the second waits on the first's uncommitted row
        await first.commit()
        (lost,) = await asyncio.wait_for(racing, 60)
        await second.commit()
    assert not won.duplicate
    assert lost.duplicate and lost.pk == won.pk
    async with store.read() as conn:
        assert [row.id for row in await event_rows.find(conn, "race", "/shop")] == [won.pk]
