"""A broadcast's deferred recipients (quiet hours, ``local_time``) after the fan-out: their
decisions and counts move on as they fire, a pause holds them, a cancel drops them."""

from __future__ import annotations

from sqlalchemy import select

from tests.runtime.test_broadcaster import (
    add_subscribers,
    at,
    clock_at,
    decisions,
    rig,
    run,
    start,
    status,
)
from tidings.runtime.broadcaster import cancel_pending
from tidings.store import Store, schedule
from tidings.store import broadcasts as rows
from tidings.store.tables import notifications

NIGHT = {"quiet_hours": {"start": "22:00", "end": "08:00"}}


async def test_deferred_recipients_are_counted_sent_once_they_fire(store: Store) -> None:
    await add_subscribers(
        store,
        [
            {"id": "ldn", "timezone": "Europe/London", "preferences": NIGHT},
            {"id": "sh", "timezone": "Asia/Shanghai", "preferences": NIGHT},
            {"id": "tyo", "timezone": "Asia/Tokyo", "preferences": NIGHT},
        ],
    )
    clock = clock_at(at("2026-03-10 15:30"))  # 23:30 in Shanghai, 00:30 in Tokyo
    broadcaster = rig(store, clock)
    broadcast_id = await start(store, clock, {"all": True})
    await run(broadcaster)
    # decided, but two recipients still wait: it stays running (it may still be paused)
    assert await status(store, broadcast_id) == ("running", {"sent": 1, "deferred": 2}, 3)
    assert await run(broadcaster) == 0  # and the broadcaster has nothing to do meanwhile

    tokyo_morning = at("2026-03-11 08:00", "Asia/Tokyo")
    fired = await store.write(lambda conn: schedule.fire_due(conn, tokyo_morning + 1))
    assert [row["subscriber_id"] for row in fired.inbox] == ["tyo"]
    made = await decisions(store, broadcast_id)
    assert made["tyo"].outcome == "sent"
    assert made["tyo"].until is None
    assert made["tyo"].reason.startswith("sent when its time came (quiet hours until 08:00")
    assert made["sh"].outcome == "deferred"
    assert await status(store, broadcast_id) == ("running", {"sent": 2, "deferred": 1}, 3)

    shanghai_morning = at("2026-03-11 08:00", "Asia/Shanghai")
    await store.write(lambda conn: schedule.fire_due(conn, shanghai_morning + 1))
    clock.advance(shanghai_morning + 2 - clock.now())
    await run(broadcaster)
    assert await status(store, broadcast_id) == ("done", {"sent": 3}, 3)


async def test_an_expired_deferred_recipient_is_counted_expired(store: Store) -> None:
    await add_subscribers(store, [{"id": "sh", "timezone": "Asia/Shanghai", "preferences": NIGHT}])
    clock = clock_at(at("2026-03-10 15:30"))
    broadcaster = rig(store, clock)
    broadcast_id = await start(store, clock, {"all": True})
    await run(broadcaster)
    await store.write(
        lambda conn: conn.execute(notifications.update().values(expires_at=clock.now() + 60))
    )
    fired = await store.write(lambda conn: schedule.fire_due(conn, clock.now() + 86_400))
    assert len(fired.expired) == 1
    made = await decisions(store, broadcast_id)
    assert (made["sh"].outcome, made["sh"].reason) == ("expired", schedule.EXPIRED)
    assert (await status(store, broadcast_id))[1] == {"expired": 1}


async def test_a_pause_holds_due_deferred_recipients_until_resume(store: Store) -> None:
    zones = {"sh": "Asia/Shanghai", "ny": "America/New_York"}
    await add_subscribers(store, [{"id": k, "timezone": tz} for k, tz in zones.items()])
    clock = clock_at(at("2026-03-10 12:00"))  # 08:00 in New York, 20:00 in Shanghai
    broadcaster = rig(store, clock)
    broadcast_id = await start(store, clock, {"all": True}, local_time="10:00")
    await run(broadcaster)
    now = clock.now()
    row, problem = await store.write(
        lambda conn: rows.change_status(conn, broadcast_id, "pause", now)
    )
    assert problem is None and row.status == "paused"
    ny_ten = at("2026-03-10 10:00", "America/New_York")
    fired = await store.write(lambda conn: schedule.fire_due(conn, ny_ten + 1))
    assert (fired.fired, fired.inbox, fired.cancelled) == ([], [], [])
    assert await status(store, broadcast_id) == ("paused", {"deferred": 2}, 2)

    await store.write(lambda conn: rows.change_status(conn, broadcast_id, "resume", now))
    fired = await store.write(lambda conn: schedule.fire_due(conn, ny_ten + 1))
    assert [row["subscriber_id"] for row in fired.inbox] == ["ny"]
    assert await status(store, broadcast_id) == ("running", {"sent": 1, "deferred": 1}, 2)


async def test_a_cancel_drops_deferred_recipients_even_those_due(store: Store) -> None:
    zones = {"sh": "Asia/Shanghai", "ny": "America/New_York", "ldn": "Europe/London"}
    await add_subscribers(store, [{"id": k, "timezone": tz} for k, tz in zones.items()])
    clock = clock_at(at("2026-03-10 12:00"))
    broadcaster = rig(store, clock)
    broadcast_id = await start(store, clock, {"all": True}, local_time="10:00")
    await run(broadcaster)
    now = clock.now()
    await store.write(lambda conn: rows.change_status(conn, broadcast_id, "pause", now))
    row, _ = await store.write(lambda conn: rows.change_status(conn, broadcast_id, "cancel", now))
    # the API cancels the deferred notifications at once; one left behind (a crash before
    # that ran) is cancelled by the scheduler when it comes due, not sent
    cancelled = await store.write(lambda conn: cancel_pending(conn, row, now, limit=2))
    assert (cancelled.found, cancelled.settled) == (2, {"cancelled": 2})
    fired = await store.write(lambda conn: schedule.fire_due(conn, now + 2 * 86_400))
    assert fired.inbox == [] and len(fired.cancelled) == 1
    made = await decisions(store, broadcast_id)
    assert {r.outcome for r in made.values()} == {"cancelled"}
    assert {r.reason for r in made.values()} == {f"broadcast {broadcast_id} cancelled"}
    assert await status(store, broadcast_id) == ("cancelled", {"cancelled": 3}, 3)
    async with store.read() as conn:
        left = (await conn.execute(select(notifications.c.status).distinct())).scalars().all()
    assert left == ["cancelled"]
