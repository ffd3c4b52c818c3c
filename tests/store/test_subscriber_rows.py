"""``subscribers.recipients`` (plain statements) returns what the SQLAlchemy Core version did,
on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store import Store
from tidings.store import subscribers as subscriber_rows
from tidings.store.subscribers import Target
from tidings.store.tables import devices, subscribers, webhook_endpoints
from tidings.strategy.model import Recipient
from tidings.vocabulary import Channel

pytestmark = pytest.mark.timeout(60)
NOW = 1_800_000_000.0


async def core_recipients(
    conn: AsyncConnection, wanted: list[str]
) -> tuple[dict[str, Recipient], dict[str, dict[Channel, list[Target]]]]:
    """The SQLAlchemy Core version this replaced (the reference)."""
    found: dict[str, dict[str, Any]] = {}
    rows = await conn.execute(
        select(
            subscribers.c.id,
            subscribers.c.locale,
            subscribers.c.timezone,
            subscribers.c.preferences,
            subscribers.c.email_enc.is_not(None).label("has_email"),
            subscribers.c.phone_enc.is_not(None).label("has_phone"),
        ).where(subscribers.c.id.in_(wanted))
    )
    for row in rows:
        reachable: set[Channel] = {"inapp"}
        if row.has_email:
            reachable.add("email")
        if row.has_phone:
            reachable.add("sms")
        found[row.id] = {"row": row, "reachable": reachable}
    targets: dict[str, dict[Channel, list[Target]]] = {
        subscriber_id: {"inapp": [("inapp", None)]} for subscriber_id in wanted
    }
    for subscriber_id, entry in found.items():
        if "email" in entry["reachable"]:
            targets[subscriber_id]["email"] = [("email", None)]
        if "sms" in entry["reachable"]:
            targets[subscriber_id]["sms"] = [("phone", None)]
    pushable = await conn.execute(
        select(devices.c.subscriber_id, devices.c.kind, devices.c.id)
        .where(devices.c.subscriber_id.in_(wanted), devices.c.active.is_(True))
        .order_by(devices.c.id)
    )
    for subscriber_id, kind, device_id in pushable:
        targets[subscriber_id].setdefault("push", []).append((kind, device_id))
    hooked = await conn.execute(
        select(webhook_endpoints.c.subscriber_id, webhook_endpoints.c.id)
        .where(webhook_endpoints.c.subscriber_id.in_(wanted), webhook_endpoints.c.active.is_(True))
        .order_by(webhook_endpoints.c.id)
    )
    for subscriber_id, endpoint_id in hooked:
        targets[subscriber_id].setdefault("webhook", []).append(("webhook", endpoint_id))
    result: dict[str, Recipient] = {}
    for subscriber_id in wanted:
        known = found.get(subscriber_id)
        channels = set(targets[subscriber_id])
        if known is None:
            result[subscriber_id] = Recipient(
                id=subscriber_id, reachable=frozenset({"inapp", *channels})
            )
            continue
        row = known["row"]
        result[subscriber_id] = Recipient(
            id=subscriber_id,
            known=True,
            locale=row.locale,
            timezone=row.timezone,
            preferences=dict(row.preferences or {}),
            reachable=frozenset(known["reachable"] | channels),
        )
    return result, targets


def ordered(targets: dict[str, dict[Channel, list[Target]]]) -> list[Any]:
    """``targets`` with its dicts' key order made visible (== on dicts ignores it)."""
    return [(s, [(c, t) for c, t in by_channel.items()]) for s, by_channel in targets.items()]


async def populate(store: Store) -> list[str]:
    cipher = store.cipher
    ids: list[str] = []
    for i in range(1200):  # more than one chunk of ids
        subscriber_id = f"seller-{i}"
        ids.append(subscriber_id)
        if i % 7 == 6:
            continue  # unknown: no profile, maybe destinations
        profile: dict[str, Any] = {
            "name": f"名字 {i}",
            "email": f"s{i}@example.com" if i % 2 else None,
            "phone": f"+1555{i:07d}" if i % 3 else None,
            "locale": "zh-CN" if i % 5 else None,
            "timezone": "Asia/Shanghai" if i % 4 else None,
        }

        async def write(conn: AsyncConnection, sid: str = subscriber_id, p: Any = profile) -> None:
            await subscriber_rows.upsert(conn, cipher, sid, p, NOW)

        await store.write(write)
        if i % 4 == 1:
            document = {"categories": {"marketing": {"enabled": False}}, "quiet": [i, "22:00"]}

            async def prefs(
                conn: AsyncConnection, sid: str = subscriber_id, d: Any = document
            ) -> None:
                await subscriber_rows.put_preferences(conn, sid, d, NOW)

            await store.write(prefs)

    async def destinations(conn: AsyncConnection) -> None:
        for i in range(0, 1200, 3):
            sid = f"seller-{i}"
            for n in range(i % 4):
                kind = ("fcm", "apns", "webpush")[n % 3]
                await subscriber_rows.add_device(conn, cipher, sid, kind, f"tok-{i}-{n}", None, NOW)
            if i % 2 == 0:
                for n in range(1 + i % 3):
                    await subscriber_rows.add_endpoint(
                        conn, cipher, sid, f"https://h{i}.example/{n}", "secret", NOW
                    )
        # some inactive ones, which never count
        await conn.execute(
            update(devices).where(devices.c.subscriber_id.like("seller-1%")).values(active=False)
        )
        await conn.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.subscriber_id.like("seller-2%"))
            .values(active=False)
        )

    await store.write(destinations)
    return ids


async def test_recipients_match_the_core_version(store: Store) -> None:
    ids = await populate(store)
    asked = [*ids, "nobody", "nobody", ids[0]]
    async with store.read() as conn:
        got_recipients, got_targets = await subscriber_rows.recipients(conn, asked)
        wanted = list(set(asked))
        want_recipients, want_targets = await core_recipients(conn, wanted)
        single = await subscriber_rows.recipients(conn, ["seller-0"])
        none = await subscriber_rows.recipients(conn, [])
    assert list(got_recipients) == wanted
    assert got_recipients == want_recipients
    assert ordered(got_targets) == ordered(want_targets)
    assert sum(len(t.get("push", [])) for t in got_targets.values()) > 100
    assert sum(len(t.get("webhook", [])) for t in got_targets.values()) > 100
    assert sum(bool(r.preferences) for r in got_recipients.values()) > 100
    assert single[0]["seller-0"] == want_recipients["seller-0"]
    assert none == ({}, {})
