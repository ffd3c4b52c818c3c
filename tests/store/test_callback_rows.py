"""The status callbacks' registrations and outbox on SQLite and PostgreSQL."""

from __future__ import annotations

from tidings.store import Store
from tidings.store import callbacks as rows


async def test_outbox_claim_lease_retry_and_removal(store: Store) -> None:
    cipher = store.cipher
    shop = ("https://shop.test/cb", "whsec_c2VjcmV0LXNlY3JldC0xMjM0", ["notification.sent"])
    erp = ("https://erp.test/cb", "whsec_b3RoZXItc2VjcmV0LTEyMzQ=", list(rows.TYPES[::3]))
    first = await store.write(lambda conn: rows.add(conn, cipher, *shop, 10.0))
    second = await store.write(lambda conn: rows.add(conn, cipher, *erp, 11.0))
    async with store.read() as conn:
        routes = await rows.routes(conn)
        listed = await rows.listed(conn, cipher)
    assert routes == {"notification.sent": (first, second), "notification.dead": (second,)}
    assert [c["url"] for c in listed] == ["https://shop.test/cb", "https://erp.test/cb"]
    made = [
        {"id": f"m-{n}", "callback_id": c, "type": "notification.sent", "payload": {"n": n},
         "created_at": 20.0 + n}
        for n, c in enumerate((first, second, first))
    ]  # fmt: skip
    await store.write(lambda conn: rows.enqueue(conn, made))

    taken = await store.write(lambda conn: rows.claim(conn, cipher, 30.0, 60.0, 2))
    assert [d.id for d in taken] == ["m-0", "m-1"]
    assert taken[0].url == "https://shop.test/cb" and taken[0].secret.startswith("whsec_")
    assert taken[0].payload == {"n": 0}
    leased = await store.write(lambda conn: rows.claim(conn, cipher, 31.0, 60.0, 10))
    assert [d.id for d in leased] == ["m-2"]  # the first two are leased until 90
    outcomes = [
        {"id": "m-0", "status": "sent", "attempts": 1, "finished_at": 32.0, "last_error": None},
        {"id": "m-1", "status": "pending", "attempts": 1, "due_at": 40.0, "last_error": "HTTP 503"},
    ]
    await store.write(lambda conn: rows.finish(conn, outcomes))
    again = await store.write(lambda conn: rows.claim(conn, cipher, 41.0, 60.0, 10))
    assert [(d.id, d.attempts) for d in again] == [("m-1", 1)]
    assert await store.write(lambda conn: rows.remove(conn, first))
    assert not await store.write(lambda conn: rows.remove(conn, first))
    async with store.read() as conn:
        assert await rows.get(conn, cipher, first) is None
        shown = await rows.get(conn, cipher, second)
        assert await rows.routes(conn) == {
            "notification.sent": (second,), "notification.dead": (second,)
        }  # fmt: skip
    assert shown is not None and shown["outbox"] == {"pending": 1}


async def test_prune_drops_only_finished_rows_past_the_window(store: Store) -> None:
    made = [
        {"id": f"m-{n}", "callback_id": "c", "type": "notification.sent", "payload": {},
         "created_at": 1.0}
        for n in range(3)
    ]  # fmt: skip
    await store.write(lambda conn: rows.enqueue(conn, made))
    outcomes = [
        {"id": "m-0", "status": "sent", "finished_at": 5.0},
        {"id": "m-1", "status": "dead", "finished_at": 50.0},
    ]
    await store.write(lambda conn: rows.finish(conn, outcomes))
    assert await store.write(lambda conn: rows.prune(conn, 10.0)) == 1
    assert await store.write(lambda conn: rows.prune(conn, 100.0)) == 1  # m-2 is pending
    async with store.read() as conn:
        assert await rows.any_due(conn, 2.0) and not await rows.any_due(conn, 0.5)
