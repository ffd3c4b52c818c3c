"""A claimed delivery as the :class:`~tidings.channels.base.Message` its provider receives."""

from __future__ import annotations

from tidings.channels.base import Destination, Message
from tidings.store.deliveries import Claimed, Outgoing
from tidings.vocabulary import LANES, Lane

_LANES: dict[str, Lane] = {lane: lane for lane in LANES}


def lane(name: str) -> Lane:
    """The lane called ``name`` (``normal`` for a name that is none)."""
    return _LANES.get(name, "normal")


def message(item: Claimed, note: Outgoing, destination: Destination, required: bool) -> Message:
    """The message for ``item`` to ``destination`` (``required``: its category is)."""
    content = dict(note.content)
    envelope = note.envelope
    return Message(
        delivery_id=item.id,
        notification_id=item.notification_id,
        channel=item.channel,  # type: ignore[arg-type]
        destination=destination,
        subscriber_id=note.subscriber_id,
        title=str(content.get("title", "")),
        body=str(content.get("body", "")),
        event_id=str(envelope.get("id", "")),
        event_type=str(envelope.get("type", "")),
        event_source=str(envelope.get("source", "")),
        subject=note.subject,
        category=note.category,
        category_required=required,
        priority=lane(note.priority),
        locale=note.locale,
        ttl=None if note.expires_at is None else max(0.0, note.expires_at - item.created_at),
        occurred_at=note.occurred_at,
        content=content,
        data=dict(envelope.get("data") or {}),
    )
