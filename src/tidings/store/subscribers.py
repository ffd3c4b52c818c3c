"""Subscribers, their devices, webhook endpoints and preferences; PII encrypted at rest."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, insert, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.crypto import Cipher
from tidings.ids import new_id
from tidings.store.deliveries import rows_of
from tidings.store.tables import devices, inbox_items, subscribers, webhook_endpoints
from tidings.strategy.model import Recipient
from tidings.vocabulary import Channel

PROFILE_FIELDS = (
    "name", "email", "phone", "wechat_openid", "locale", "timezone", "role", "attributes",
)  # fmt: skip


async def upsert(
    conn: AsyncConnection, cipher: Cipher, subscriber_id: str, profile: dict[str, Any], now: float
) -> bool:
    """Create or replace the subscriber's profile; ``True`` when it was created."""
    values = {
        "name_enc": cipher.encrypt(profile.get("name")),
        "email_enc": cipher.encrypt(profile.get("email")),
        "phone_enc": cipher.encrypt(profile.get("phone")),
        "wechat_openid_enc": cipher.encrypt(profile.get("wechat_openid")),
        "locale": profile.get("locale"),
        "timezone": profile.get("timezone"),
        "role": profile.get("role"),
        "attributes": profile.get("attributes") or {},
        "updated_at": now,
    }
    result = await conn.execute(
        update(subscribers).where(subscribers.c.id == subscriber_id).values(**values)
    )
    if result.rowcount:
        return False
    row = {"id": subscriber_id, "preferences": {}, "created_at": now, **values}
    if conn.dialect.name == "postgresql":
        # two PUTs of a new id race (several writer lanes): the later insert updates instead
        racing = pg_insert(subscribers).values(**row)
        statement = racing.on_conflict_do_update(index_elements=[subscribers.c.id], set_=values)
        returned: Any = await conn.execute(statement.returning(literal_column("xmax = 0")))
        return bool(returned.scalar())
    await conn.execute(insert(subscribers).values(**row))
    return True


async def get(conn: AsyncConnection, cipher: Cipher, subscriber_id: str) -> dict[str, Any] | None:
    """The decrypted profile, or ``None``."""
    row = (await conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id))).first()
    if row is None:
        return None
    return {
        "id": row.id,
        "name": cipher.decrypt(row.name_enc),
        "email": cipher.decrypt(row.email_enc),
        "phone": cipher.decrypt(row.phone_enc),
        "wechat_openid": cipher.decrypt(row.wechat_openid_enc),
        "locale": row.locale,
        "timezone": row.timezone,
        "role": row.role,
        "attributes": row.attributes,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


async def list_ids(conn: AsyncConnection, after: str | None, limit: int) -> list[str]:
    """Subscriber ids in order, after the cursor."""
    query = select(subscribers.c.id).order_by(subscribers.c.id).limit(limit)
    if after:
        query = query.where(subscribers.c.id > after)
    return list((await conn.execute(query)).scalars())


async def erase(conn: AsyncConnection, subscriber_id: str) -> bool:
    """Erase PII, devices, endpoints, inbox and preferences (notifications keep only ids)."""
    await conn.execute(delete(devices).where(devices.c.subscriber_id == subscriber_id))
    await conn.execute(
        delete(webhook_endpoints).where(webhook_endpoints.c.subscriber_id == subscriber_id)
    )
    await conn.execute(delete(inbox_items).where(inbox_items.c.subscriber_id == subscriber_id))
    result = await conn.execute(delete(subscribers).where(subscribers.c.id == subscriber_id))
    return bool(result.rowcount)


async def get_preferences(conn: AsyncConnection, subscriber_id: str) -> dict[str, Any] | None:
    """The stored preferences document, or ``None`` for an unknown subscriber."""
    value = (
        await conn.execute(
            select(subscribers.c.preferences).where(subscribers.c.id == subscriber_id)
        )
    ).scalar_one_or_none()
    return None if value is None else dict(value)


async def put_preferences(
    conn: AsyncConnection, subscriber_id: str, document: dict[str, Any], now: float
) -> None:
    """Replace the preferences (creating a bare subscriber if needed)."""
    result = await conn.execute(
        update(subscribers)
        .where(subscribers.c.id == subscriber_id)
        .values(preferences=document, updated_at=now)
    )
    if not result.rowcount:
        await conn.execute(
            insert(subscribers).values(
                id=subscriber_id,
                preferences=document,
                attributes={},
                created_at=now,
                updated_at=now,
            )
        )


async def add_device(
    conn: AsyncConnection,
    cipher: Cipher,
    subscriber_id: str,
    kind: str,
    token: str,
    keys: dict[str, str] | None,
    now: float,
) -> str:
    """Register a device (re-registering the same token reactivates it); its id."""
    index = cipher.blind_index(f"{kind}:{token}")
    existing = (
        await conn.execute(
            select(devices.c.id).where(
                devices.c.subscriber_id == subscriber_id, devices.c.token_index == index
            )
        )
    ).scalar_one_or_none()
    keys_enc = cipher.encrypt(json.dumps(keys)) if keys else None
    if existing is not None:
        await conn.execute(
            update(devices)
            .where(devices.c.id == existing)
            .values(active=True, deactivated_at=None, deactivated_reason=None, keys_enc=keys_enc)
        )
        return str(existing)
    device_id = new_id()
    await conn.execute(
        insert(devices).values(
            id=device_id,
            subscriber_id=subscriber_id,
            kind=kind,
            token_enc=cipher.encrypt(token),
            token_index=index,
            keys_enc=keys_enc,
            active=True,
            created_at=now,
        )
    )
    return device_id


async def list_devices(conn: AsyncConnection, subscriber_id: str) -> list[dict[str, Any]]:
    """The subscriber's devices (no tokens: those never leave the store unencrypted)."""
    rows = await conn.execute(
        select(devices).where(devices.c.subscriber_id == subscriber_id).order_by(devices.c.id)
    )
    return [
        {
            "device_id": row.id,
            "kind": row.kind,
            "active": row.active,
            "created_at": row.created_at,
            "deactivated_at": row.deactivated_at,
            "deactivated_reason": row.deactivated_reason,
        }
        for row in rows
    ]


async def remove_device(conn: AsyncConnection, subscriber_id: str, device_id: str) -> bool:
    """Delete one device."""
    result = await conn.execute(
        delete(devices).where(devices.c.subscriber_id == subscriber_id, devices.c.id == device_id)
    )
    return bool(result.rowcount)


async def deactivate(
    conn: AsyncConnection, kind: str, device_id: str, reason: str, now: float
) -> None:
    """Mark a dead device (or webhook endpoint) inactive."""
    table = webhook_endpoints if kind == "webhook" else devices
    values: dict[str, Any] = {"active": False, "deactivated_at": now}
    if table is devices:
        values["deactivated_reason"] = reason
    await conn.execute(update(table).where(table.c.id == device_id).values(**values))


async def add_endpoint(
    conn: AsyncConnection, cipher: Cipher, subscriber_id: str, url: str, secret: str, now: float
) -> str:
    """Register a webhook endpoint; its id."""
    endpoint_id = new_id()
    await conn.execute(
        insert(webhook_endpoints).values(
            id=endpoint_id,
            subscriber_id=subscriber_id,
            url_enc=cipher.encrypt(url),
            secret_enc=cipher.encrypt(secret),
            active=True,
            created_at=now,
        )
    )
    return endpoint_id


async def list_endpoints(
    conn: AsyncConnection, cipher: Cipher, subscriber_id: str
) -> list[dict[str, Any]]:
    """The subscriber's webhook endpoints (URLs shown, secrets never)."""
    rows = await conn.execute(
        select(webhook_endpoints)
        .where(webhook_endpoints.c.subscriber_id == subscriber_id)
        .order_by(webhook_endpoints.c.id)
    )
    return [
        {
            "endpoint_id": r.id,
            "url": cipher.decrypt(r.url_enc),
            "active": r.active,
            "created_at": r.created_at,
        }
        for r in rows
    ]


Target = tuple[str, str | None]
"""A delivery target: ``(destination kind, device or endpoint id)``."""


async def recipients(
    conn: AsyncConnection, ids: Iterable[str], *, destinations: bool = True, blank: bool = True
) -> tuple[dict[str, Recipient], dict[str, dict[Channel, list[Target]]]]:
    """What the decision needs of each subscriber, and where each channel would deliver
    (devices and webhook endpoints not looked up with ``destinations=False``: a decision on
    the in-app, email, SMS and WeChat channels only needs none). With ``blank=False`` an id
    with neither a profile nor a device or endpoint is left out of both (its recipient is
    ``Recipient(id)``, in-app only): a broadcast's audience is mostly such ids.

    Two plain statements per 500 ids (:func:`~tidings.store.deliveries.rows_of`: on SQLite
    on the ``sqlite3`` connection itself, where SQLAlchemy's statement building, expanding
    ``IN`` lists and result processing cost more than SQLite's lookups); no PII is decrypted.
    """
    wanted = list(set(ids))
    if not wanted:
        return {}, {}
    found: dict[str, tuple[Any, ...]] = {}
    places: list[Any] = []
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        for row in await rows_of(conn, _PROFILES, chunk):
            found[row[0]] = row
        if destinations:
            places += await rows_of(conn, _DESTINATIONS, chunk, chunk)
    targets: dict[str, dict[Channel, list[Target]]] = {
        subscriber_id: {"inapp": [("inapp", None)]}
        for subscriber_id in (wanted if blank else {*found, *(p[1] for p in places)})
    }
    for subscriber_id, row in found.items():
        if row[4]:
            targets[subscriber_id]["email"] = [("email", None)]
        if row[5]:
            targets[subscriber_id]["sms"] = [("phone", None)]
        if row[6]:
            targets[subscriber_id]["wechat"] = [("wechat", None)]
    # devices first (as "push"), then endpoints, each in id order (see _DESTINATIONS)
    for is_endpoint, subscriber_id, kind, destination_id in places:
        channel: Channel = "webhook" if is_endpoint else "push"
        targets[subscriber_id].setdefault(channel, []).append((kind, destination_id))
    result: dict[str, Recipient] = {}
    loads = json.loads
    for subscriber_id, channels in targets.items():
        known = found.get(subscriber_id)
        if known is None:
            result[subscriber_id] = Recipient(
                id=subscriber_id, reachable=frozenset({"inapp", *channels})
            )
            continue
        preferences = known[3]
        if preferences == "{}":  # most subscribers: skip the decoder
            preferences = None
        elif isinstance(preferences, str | bytes):  # SQLite, and json through text() on asyncpg
            preferences = loads(preferences)
        result[subscriber_id] = Recipient(
            id=subscriber_id,
            known=True,
            locale=known[1],
            timezone=known[2],
            preferences=dict(preferences or {}),
            reachable=frozenset({"inapp", *channels}),
        )
    return result, targets


_CHUNK = 500
"""Subscriber ids per statement (far below either backend's limit on parameters)."""

_PROFILES = (
    "SELECT id, locale, timezone, preferences, email_enc IS NOT NULL, phone_enc IS NOT NULL,"
    " wechat_openid_enc IS NOT NULL FROM subscribers WHERE id IN ({})"
)
_DESTINATIONS = (
    "SELECT 0, subscriber_id, kind, id FROM devices"
    " WHERE subscriber_id IN ({}) AND active = TRUE"
    " UNION ALL"
    " SELECT 1, subscriber_id, 'webhook', id FROM webhook_endpoints"
    " WHERE subscriber_id IN ({}) AND active = TRUE"
    " ORDER BY 1, 4"
)
