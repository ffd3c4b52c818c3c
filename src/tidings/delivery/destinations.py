"""Where each delivery goes: its :class:`~tidings.channels.base.Destination`, PII decrypted.

A profile field for email, SMS and WeChat; an active device for push; an active endpoint for a
webhook: read in one query per table for a whole batch (a query per delivery was the
dispatcher's largest cost per batch), and only the subscriber's own device or endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.channels.base import Destination
from tidings.crypto import Cipher
from tidings.store import sending
from tidings.store.deliveries import Claimed
from tidings.vocabulary import DestinationKind


class Plaintexts:
    """Decrypted PII fields by ciphertext, so that a busy endpoint's URL and secret are not
    decrypted again for every delivery. Bounded (cleared when full); a field that changes
    has a new ciphertext, and a removed row is never looked up."""

    def __init__(self, cipher: Cipher, size: int = 4096) -> None:
        self.cipher = cipher
        self.size = size
        self._known: dict[str, str | None] = {}

    def decrypt(self, ciphertext: str | None) -> str | None:
        """What :meth:`Cipher.decrypt` answers for ``ciphertext``."""
        if ciphertext is None:
            return None
        known = self._known
        if ciphertext in known:
            return known[ciphertext]
        plain = self.cipher.decrypt(ciphertext)
        if len(known) >= self.size:
            known.clear()
        known[ciphertext] = plain
        return plain


_PROFILE_ADDRESSES: dict[str, tuple[str, DestinationKind]] = {
    "email": ("email_enc", "email"),
    "sms": ("phone_enc", "phone"),
    "wechat": ("wechat_openid_enc", "wechat"),
}
"""Channels addressed by a profile field: the field's column and the destination kind."""


async def destinations(
    conn: AsyncConnection,
    cipher: Plaintexts,
    claimed: Sequence[Claimed],
    owner: dict[str, str],
) -> dict[str, Destination]:
    """The destination of every delivery that still has one, in one query per table
    (``owner``: delivery id → subscriber id; another subscriber's device is not one)."""
    found: dict[str, Destination] = {}
    people = {owner[c.id] for c in claimed if c.channel in _PROFILE_ADDRESSES}
    if people:
        profiles = await sending.profile_addresses(conn, list(people))
        for c in claimed:
            profile = profiles.get(owner[c.id])
            where = _PROFILE_ADDRESSES.get(c.channel)
            if profile is None or where is None:
                continue
            column, kind = where
            address = cipher.decrypt(getattr(profile, column))
            if address:
                found[c.id] = Destination(kind, address)
    devices = [c.device_id for c in claimed if c.channel == "push" and c.device_id]
    if devices:
        by_id = await sending.active_devices(conn, devices)
        for c in _owned(claimed, "push", by_id, owner):
            device_id, _, kind, token_enc, keys_enc = by_id[c.device_id or ""]
            keys = json.loads(cipher.decrypt(keys_enc) or "{}") if keys_enc else {}
            found[c.id] = Destination(
                kind, cipher.decrypt(token_enc) or "", device_id=device_id, keys=keys
            )
    endpoints = [c.device_id for c in claimed if c.channel == "webhook" and c.device_id]
    if endpoints:
        by_id = await sending.active_endpoints(conn, endpoints)
        for c in _owned(claimed, "webhook", by_id, owner):
            endpoint_id, _, url_enc, secret_enc = by_id[c.device_id or ""]
            found[c.id] = Destination(
                "webhook",
                cipher.decrypt(url_enc) or "",
                device_id=endpoint_id,
                secret=cipher.decrypt(secret_enc),
            )
    return found


def _owned(
    claimed: Sequence[Claimed],
    channel: str,
    by_id: dict[str, tuple[object, ...]],
    owner: dict[str, str],
) -> list[Claimed]:
    """The deliveries of ``channel`` whose row was found and belongs to their subscriber."""
    return [
        c
        for c in claimed
        if c.channel == channel
        and (row := by_id.get(c.device_id or "")) is not None
        and row[1] == owner[c.id]
    ]
