"""SMS through Twilio's Messages API (``POST /2010-04-01/Accounts/{sid}/Messages.json``).

Twilio's error bodies carry a numeric ``code``: 21211 (invalid ``To``) and 21614 (not a
mobile number) mean the number can never receive SMS; 429/5xx are worth retrying. Messages
that would cost more than ``max_segments`` SMS parts are refused before they are sent.
Twilio's error ``message`` often quotes the phone number, so it never reaches an exception.
"""

from __future__ import annotations

from typing import ClassVar

import httpx

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.http import make_client, retry_after_seconds, transport_errors
from tidings.channels.sms_segments import count_segments
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    TransientProviderError,
)

GONE_CODES = frozenset({21211, 21614})
DEFAULT_MAX_SEGMENTS = 10


def sms_text(message: Message) -> str:
    """The SMS text: a template's ``sms`` field if it has one, else the body."""
    return str(message.content.get("sms") or message.body)


def check_segments(name: str, text: str, max_segments: int) -> None:
    """Refuse a text that would be split into more than ``max_segments`` parts."""
    cost = count_segments(text)
    if cost.segments > max_segments:
        raise PermanentProviderError(
            f"{name}: {cost.segments} {cost.encoding} segments, at most {max_segments} allowed",
            code="too_many_segments",
        )


class TwilioProvider:
    """Send SMS with Twilio's REST API."""

    kind: ClassVar[str] = "twilio"
    channel: ClassVar[Channel] = "sms"
    destinations: ClassVar[frozenset[str]] = frozenset({"phone"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        missing = [k for k in ("account_sid", "auth_token", "from") if not settings.option(k)]
        if missing:
            raise ConfigError(f"twilio needs {', '.join(missing)}", missing[0])
        self.account_sid = str(settings.option("account_sid"))
        self.sender = str(settings.option("from"))
        self.max_segments = int(settings.option("max_segments", DEFAULT_MAX_SEGMENTS))
        base_url = str(settings.option("base_url", "https://api.twilio.com")).rstrip("/")
        self.url = f"{base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        self.auth = httpx.BasicAuth(self.account_sid, str(settings.option("auth_token")))
        self.client = make_client(
            timeout=settings.timeout or context.timeout,
            max_connections=int(settings.option("connections", 100)),
        )

    async def send(self, message: Message) -> Receipt:
        """Send one SMS to one E.164 number."""
        text = sms_text(message)
        check_segments(self.name, text, self.max_segments)
        form = {"To": message.destination.address, "From": self.sender, "Body": text}
        async with transport_errors(self.name):
            response = await self.client.post(self.url, data=form, auth=self.auth)
        if response.status_code in (200, 201):
            sid = response.json().get("sid")
            return Receipt(status="sent", provider_message_id=str(sid) if sid else None)
        code, more_info = _twilio_error(response)
        status = response.status_code
        summary = f"{self.name}: Twilio {status} error {code or '?'} {more_info}".rstrip()
        if code in GONE_CODES:
            raise DestinationGone(summary, code=str(code))
        if status == 429 or status >= 500:
            raise TransientProviderError(
                summary,
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
                code=str(code or status),
            )
        raise PermanentProviderError(summary, code=str(code or status))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()


def _twilio_error(response: httpx.Response) -> tuple[int | None, str]:
    try:
        body = response.json()
        code = body.get("code")
        return (int(code) if code is not None else None), str(body.get("more_info") or "")
    except (ValueError, AttributeError, TypeError):
        return None, ""
