"""Xiaomi MiPush: ``POST {base_url}/v3/message/regid`` with ``Authorization: key=APP_SECRET``.

The body is a form: the device's ``registration_id``, the app's ``restricted_package_name``,
``title``/``description``, a ``notify_id`` per order (a later message replaces the earlier
one), ``time_to_live`` in milliseconds and the ``extra.*`` keys: ``notify_effect`` (``1``
opens the app, ``2`` a deep link in ``extra.intent_uri``) and ``extra.channel_id``, the
notification channel Xiaomi classifies by (``channel_id`` for transactional messages,
``marketing_channel_id`` for the rest). Answers are ``{"result", "code", "description",
"reason"}``: ``code 0`` is success, ``20301`` (no valid targets) a dead registration id,
HTTP 429 or a quota reason a rate limit.
"""

from __future__ import annotations

from typing import ClassVar

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.http import json_object, make_client, retry_after_seconds, transport_errors
from tidings.channels.makers import click_link, clip, notify_id, transactional
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    RateLimited,
    TransientProviderError,
)

NO_VALID_TARGETS = 20301
AUTH_FAILED = 21301
QUOTA_BACKOFF = 60.0


class XiaomiProvider:
    """Push to Xiaomi phones through MiPush."""

    kind: ClassVar[str] = "xiaomi"
    channel: ClassVar[Channel] = "push"
    destinations: ClassVar[frozenset[str]] = frozenset({"xiaomi"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        missing = [k for k in ("app_secret", "package_name") if not settings.option(k)]
        if missing:
            raise ConfigError(f"xiaomi needs {', '.join(missing)}", missing[0])
        self.package_name = str(settings.option("package_name"))
        self.channel_id = settings.option("channel_id")
        self.marketing_channel_id = settings.option("marketing_channel_id")
        base_url = str(settings.option("base_url", "https://api.xmpush.xiaomi.com"))
        self.url = f"{base_url.rstrip('/')}/v3/message/regid"
        self.headers = {"Authorization": f"key={settings.option('app_secret')}"}
        self.client = make_client(
            timeout=settings.timeout or context.timeout,
            max_connections=int(settings.option("connections", 100)),
        )

    def form(self, message: Message) -> dict[str, str]:
        """The ``/v3/message/regid`` form for one registration id."""
        form = {
            "registration_id": message.destination.address,
            "restricted_package_name": self.package_name,
            "pass_through": "0",
            "notify_type": "-1",  # the phone's defaults: sound, vibration, lights
            "title": clip(message.title, 50),
            "description": clip(message.body, 128),
            "notify_id": str(notify_id(message)),
            "payload": message.delivery_id,
        }
        if message.ttl is not None:
            form["time_to_live"] = str(max(1, int(message.ttl * 1000)))
        link = click_link(message)
        if link:
            form["extra.notify_effect"] = "2"
            form["extra.intent_uri"] = link
        else:
            form["extra.notify_effect"] = "1"
        channel_id = self.channel_id if transactional(message) else self.marketing_channel_id
        if channel_id:
            form["extra.channel_id"] = str(channel_id)
        return form

    async def send(self, message: Message) -> Receipt:
        """Send one notification to one registration id."""
        async with transport_errors(self.name):
            response = await self.client.post(
                self.url, data=self.form(message), headers=self.headers
            )
        body = json_object(response)
        code = body.get("code")
        if response.status_code == 200 and body.get("result") == "ok" and code == 0:
            data = body.get("data") or {}
            message_id = data.get("id") if isinstance(data, dict) else None
            return Receipt(provider_message_id=str(message_id) if message_id else None)
        reason = str(body.get("reason") or body.get("description") or "")
        reason = reason.replace(message.destination.address, "<regid>")[:200]
        text = f"{self.name}: Xiaomi {response.status_code} code {code} {reason}".rstrip()
        if code == NO_VALID_TARGETS:
            raise DestinationGone(f"{text} (registration id no longer valid)", code=str(code))
        if response.status_code == 429 or "limit" in reason.lower() or "quota" in reason.lower():
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            raise RateLimited(text, retry_after=retry_after or QUOTA_BACKOFF, code=str(code or 429))
        if response.status_code >= 500:
            raise TransientProviderError(text, code=str(code or response.status_code))
        raise PermanentProviderError(text, code=str(code or response.status_code))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()
