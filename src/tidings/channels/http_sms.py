"""SMS through any vendor with a JSON HTTP API: ``{"to", "from", "text", "id"}`` to a URL.

The generic second (or first) SMS provider a channel can fail over to. Headers (an API key)
come from settings; the delivery id travels as ``id`` so the vendor can deduplicate retries.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.http import make_client, raise_for_status, transport_errors
from tidings.channels.twilio import check_segments, sms_text
from tidings.config import ProviderSettings
from tidings.errors import ConfigError


class HttpSmsProvider:
    """Send SMS as a JSON POST to a configurable URL."""

    kind: ClassVar[str] = "http"
    channel: ClassVar[Channel] = "sms"
    destinations: ClassVar[frozenset[str]] = frozenset({"phone"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        url = settings.option("url")
        if not url:
            raise ConfigError("http sms needs url", "url")
        headers = settings.option("headers", {}) or {}
        if not isinstance(headers, dict):
            raise ConfigError("headers must be a mapping", "headers")
        self.url = str(url)
        self.headers = {str(k): str(v) for k, v in headers.items()}
        self.sender = str(settings.option("from", ""))
        self.max_segments: int | None = settings.option("max_segments")
        self.client = make_client(
            timeout=settings.timeout or context.timeout,
            max_connections=int(settings.option("connections", 100)),
        )

    async def send(self, message: Message) -> Receipt:
        """POST one SMS; 2xx is success, the rest is mapped by status."""
        text = sms_text(message)
        if self.max_segments is not None:
            check_segments(self.name, text, int(self.max_segments))
        to = message.destination.address
        body = {"to": to, "from": self.sender, "text": text, "id": message.delivery_id}
        async with transport_errors(self.name):
            response = await self.client.post(self.url, json=body, headers=self.headers)
        # the vendor's error text may quote the number: keep it out of the exception
        raise_for_status(self.name, response, detail=response.text[:200].replace(to, "<to>"))
        return Receipt(status="sent", provider_message_id=_message_id(response.content))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()


def _message_id(content: bytes) -> str | None:
    try:
        body: Any = json.loads(content)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    value = body.get("id") or body.get("message_id") or body.get("messageId")
    return str(value) if value else None
