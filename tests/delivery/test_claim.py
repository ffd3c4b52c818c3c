"""The dispatcher's store statements — claim, what sending needs, outcomes — on SQLite and
PostgreSQL, and a claim that looks its rows up by id however long the backlog is."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store import Store
from tidings.store import deliveries as delivery_store
from tidings.store.db import inline_sqlite
from tidings.store.tables import attempts, deliveries, events, notifications

pytestmark = pytest.mark.timeout(60)
NOW = 1_800_000_000.0


def note_row(note_id: str, event_pk: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": note_id,
        "event_pk": event_pk,
        "rule_id": "r",
        "subscriber_id": "seller-1",
        "category": "order_updates",
        "priority": "high",
        "subject": "o-1",
        "locale": "zh-CN",
        "content": {"title": "支付成功", "body": "¥99.00"},
        "channels": ["webhook"],
        "fallback": ["sms"],
        "status": "created",
        "dedup_key": note_id,
        "created_at": NOW,
        "due_at": NOW,
        "expires_at": None,
        **extra,
    }


def delivery_row(delivery_id: str, note_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": delivery_id,
        "notification_id": note_id,
        "channel": "webhook",
        "destination_kind": "webhook",
        "device_id": "ep-1",
        "lane": "high",
        "status": "pending",
        "is_fallback": False,
        "attempts": 0,
        "accepted_at": NOW - 0.5,
        "created_at": NOW - 0.25,
        "due_at": NOW,
        "enqueued_at": NOW,
        "provider": None,
        "order_key": None,
        "seq": None,
        **extra,
    }


async def test_claim_what_to_send_and_outcomes(store: Store) -> None:
    envelope = {"id": "evt-1", "type": "order.paid", "source": "/shop", "data": {"a": 1}}

    async def setup(conn: AsyncConnection) -> None:
        await conn.execute(
            insert(events),
            [
                {
                    "id": "e-1",
                    "source": "/shop",
                    "event_id": "evt-1",
                    "type": "order.paid",
                    "subject": "o-1",
                    "time": None,
                    "envelope": envelope,
                    "received_at": NOW - 1,
                }
            ],
        )
        await conn.execute(
            insert(notifications),
            [note_row("n-1", "e-1", expires_at=NOW + 60), note_row("n-2", "e-gone")],
        )
        await conn.execute(
            insert(deliveries),
            [
                delivery_row("d-1", "n-1"),
                delivery_row("d-2", "n-2", is_fallback=True, attempts=2, provider="hooks"),
                delivery_row("d-later", "n-1", due_at=NOW + 30),
                delivery_row("d-sent", "n-1", status="sent"),
            ],
        )

    await store.write(setup)
    ids = ["d-1", "d-2", "d-later", "d-sent", "d-missing"]
    claimed = await store.write(lambda conn: delivery_store.claim(conn, ids, NOW, 30))
    by_id = {c.id: c for c in claimed}
    assert sorted(by_id) == ["d-1", "d-2"]  # not due, not pending, unknown: not claimed
    first, second = by_id["d-1"], by_id["d-2"]
    assert (first.channel, first.device_id, first.lane, first.attempts) == (
        "webhook",
        "ep-1",
        "high",
        0,
    )
    assert first.is_fallback is False and second.is_fallback is True
    assert (second.attempts, second.provider) == (2, "hooks")
    assert (first.accepted_at, first.created_at, first.due_at) == (NOW - 0.5, NOW - 0.25, NOW)
    again = await store.write(lambda conn: delivery_store.claim(conn, ["d-1", "d-2"], NOW, 30))
    assert again == []  # a duplicate ticket claims nothing

    notes = await store.write(lambda conn: delivery_store.outgoing(conn, ["n-1", "n-2", "n-1"]))
    one, two = notes["n-1"], notes["n-2"]
    assert one.content == {"title": "支付成功", "body": "¥99.00"} and one.fallback == ["sms"]
    assert (one.subscriber_id, one.category, one.priority, one.subject, one.locale) == (
        "seller-1",
        "order_updates",
        "high",
        "o-1",
        "zh-CN",
    )
    assert one.envelope == envelope and one.occurred_at == NOW - 1  # no time: when accepted
    assert one.expires_at == NOW + 60 and two.expires_at is None
    assert two.envelope == {} and two.occurred_at is None  # the event row is gone

    outcome = {
        "provider": "hooks",
        "tp": 0.25,
        "tc": 0.01,
        "td": 0.002,
        "started_at": NOW + 0.01,
    }
    await store.write(
        lambda conn: delivery_store.finish(
            conn,
            [
                {
                    **outcome,
                    "id": "d-1",
                    "status": "delivered",
                    "attempts": 1,
                    "last_error": None,
                    "due_at": NOW,
                    "finished_at": NOW + 0.02,
                    "outcome": "delivered",
                },
                {
                    **outcome,
                    "id": "d-2",
                    "status": "pending",
                    "attempts": 3,
                    "last_error": "hooks: HTTP 503",
                    "due_at": NOW + 4,
                    "finished_at": None,
                    "outcome": "retry",
                },
            ],
        )
    )
    async with store.read() as conn:
        rows = {r.id: r for r in await conn.execute(select(deliveries))}
        tried = list(await conn.execute(select(attempts).order_by(attempts.c.delivery_id)))
    done, retry = rows["d-1"], rows["d-2"]
    assert (done.status, done.attempts, done.finished_at, done.lease_until) == (
        "delivered",
        1,
        NOW + 0.02,
        None,
    )
    assert (done.tp, done.tc, done.td, done.provider) == (0.25, 0.01, 0.002, "hooks")
    assert (retry.status, retry.due_at, retry.last_error) == ("pending", NOW + 4, "hooks: HTTP 503")
    assert retry.finished_at is None and retry.enqueued_at is None
    assert [(a.delivery_id, a.number, a.outcome) for a in tried] == [
        ("d-1", 1, "delivered"),
        ("d-2", 3, "retry"),
    ]
    assert tried[1].finished_at == pytest.approx(NOW + 0.012)  # started + td


async def test_a_claim_looks_its_rows_up_by_id_not_through_the_backlog(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 't.db'}", None)
    await store.start()
    try:
        backlog = [delivery_row(f"d-{n}", f"n-{n}", order_key=f"k-{n}", seq=NOW) for n in range(50)]
        await store.write(lambda conn: conn.execute(insert(deliveries), backlog))
        seen: list[tuple[str, Any]] = []

        @event.listens_for(store.engine.sync_engine, "before_cursor_execute")
        def record(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
            seen.append((statement, parameters))

        async def claim(conn: AsyncConnection) -> list[delivery_store.Claimed]:
            raw = inline_sqlite(conn)  # statements run on it directly are traced here
            if raw is not None:
                raw.set_trace_callback(lambda statement: seen.append((statement, ())))
            try:
                return await delivery_store.claim(conn, ["d-3", "d-7"], NOW, 30)
            finally:
                if raw is not None:
                    raw.set_trace_callback(None)

        claimed = await store.write(claim)
        assert sorted(c.id for c in claimed) == ["d-3", "d-7"]
        updates = [(s, p) for s, p in seen if s.lstrip().upper().startswith("UPDATE DELIVERIES")]
        assert updates
        plain = sqlite3.connect(tmp_path / "t.db")
        try:
            for statement, parameters in updates:
                plan = plain.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
                top = [row[3] for row in plan if row[1] == 0]
                # the backlog's due index would visit every pending due row for each batch
                assert any("sqlite_autoindex_deliveries_1" in detail for detail in top), plan
                assert not any("ix_deliveries_due" in detail for detail in top), plan
        finally:
            plain.close()
    finally:
        await store.aclose()
