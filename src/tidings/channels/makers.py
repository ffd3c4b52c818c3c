"""What the Android makers' push services of mainland China share (Huawei, Xiaomi, OPPO, vivo).

Each maker's message carries the same few things, spelt its own way: a title and a body, a
click action that opens the app (on the order's page when the template gives a ``url``), a
notify id per order (a later message about the same order replaces the earlier one in the
shade) and the classification each maker requires before it lets a transactional message
through unthrottled. A message of a ``required`` category (orders, payments, refunds) is
transactional; any other is marketing, which the makers quota and may hold back at night.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from tidings.channels.base import Message


def notify_id(message: Message) -> int:
    """A stable non-negative 31-bit id per order (subject), else per notification."""
    key = message.subject or message.notification_id
    return zlib.crc32(key.encode()) & 0x7FFFFFFF


def click_link(message: Message) -> str | None:
    """The deep link a tap opens (the template's ``intent`` or ``url``), if any."""
    link = message.content.get("intent") or message.content.get("url")
    return str(link) if link else None


def transactional(message: Message) -> bool:
    """Whether the makers should treat ``message`` as a service (not marketing) message."""
    return message.category_required


def compact(value: Any) -> str:
    """JSON without spaces (form fields that carry JSON)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis when cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
