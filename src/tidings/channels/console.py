"""The console provider: records what would be sent, for channels without credentials."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, ClassVar

from tidings.channels.base import PUSH_KINDS, Channel, Message, ProviderContext, Receipt
from tidings.config import ProviderSettings

log = logging.getLogger("tidings.console")

SENT: deque[dict[str, Any]] = deque(maxlen=500)
"""The most recent console messages (no addresses: the dashboard shows these)."""


class ConsoleProvider:
    """Accepts every message on every channel and records it instead of sending it."""

    kind: ClassVar[str] = "console"
    channel: ClassVar[Channel] = "push"
    destinations: ClassVar[frozenset[str]] = frozenset(
        {"email", "phone", "webhook", "inapp", "wechat", *PUSH_KINDS}
    )

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or "console"

    async def send(self, message: Message) -> Receipt:
        """Record the message; log it without the address."""
        record = {
            "delivery_id": message.delivery_id,
            "channel": message.channel,
            "destination": message.destination.kind,
            "subscriber_id": message.subscriber_id,
            "title": message.title,
            "body": message.body,
        }
        SENT.append(record)
        log.debug("console %s delivery %s: %s", message.channel, message.delivery_id, message.title)
        return Receipt(status="sent", provider_message_id=message.delivery_id, detail="console")

    async def aclose(self) -> None:
        """Nothing to release."""
