"""Xiaomi MiPush: ``POST {base_url}/v3/message/regid`` with ``Authorization: key=APP_SECRET``.

The body is a form: the device's ``registration_id``, the app's ``restricted_package_name``,
``title``/``description``, a ``notify_id`` per order (a later message replaces the earlier
one), ``time_to_live`` in milliseconds and the ``extra.*`` keys: ``notify_effect`` (``1``
opens the app, ``2`` a deep link in ``extra.intent_uri``) and ``extra.channel_id``, the
notification channel Xiaomi classifies by (``channel_id`` for transactional messages,
``marketing_channel_id`` for the rest). Answers are ``{"result", "code", "description",
"reason"}``: ``code 0`` is success, ``20301`` (no valid targets) a dead registration id;
the server SDK's error codes ``10022``-``10024``, ``10027``, ``10028`` (request and API call
quotas), HTTP 429 or a quota reason are rate limits, ``10001``-``10003`` and ``10009``
(system error, service paused, remote service error, system busy) are retried.
"""

from __future__ import annotations

from typing import ClassVar

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.makers import (
    FORM,
    Outcomes,
    ServiceProvider,
    base_url,
    click_link,
    clip,
    form_body,
    notify_id,
    required,
    transactional,
)
from tidings.config import ProviderSettings

NO_VALID_TARGETS = "20301"
OUTCOMES = Outcomes(
    "Xiaomi",
    codes={
        NO_VALID_TARGETS: "gone",
        **dict.fromkeys(("10022", "10023", "10024", "10027", "10028"), "limit"),
        **dict.fromkeys(("10001", "10002", "10003", "10009"), "busy"),
    },
    statuses={429: "limit", 503: "limit"},
    gone_reason="registration id no longer valid",
)


class XiaomiProvider(ServiceProvider):
    """Push to Xiaomi phones through MiPush."""

    kind: ClassVar[str] = "xiaomi"
    channel: ClassVar[Channel] = "push"
    destinations: ClassVar[frozenset[str]] = frozenset({"xiaomi"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(settings, context)
        app_secret, self.package_name = required(
            settings, self.kind, ("app_secret", "package_name")
        )
        self.channel_id = settings.option("channel_id")
        self.marketing_channel_id = settings.option("marketing_channel_id")
        self.url = f"{base_url(settings, 'https://api.xmpush.xiaomi.com')}/v3/message/regid"
        self.headers = {"Content-Type": FORM, "Authorization": f"key={app_secret}"}

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
        answer = await self.client.post(self.url, form_body(self.form(message)), self.headers)
        body = answer.body
        code = body.get("code")
        if answer.status == 200 and body.get("result") == "ok" and code == 0:
            data = body.get("data") or {}
            message_id = data.get("id") if isinstance(data, dict) else None
            return Receipt(provider_message_id=str(message_id) if message_id else None)
        reason = str(body.get("reason") or body.get("description") or "")
        reason = reason.replace(message.destination.address, "<regid>")[:200]
        quota = "limit" in reason.lower() or "quota" in reason.lower()
        label = "" if code is None else str(code)
        OUTCOMES.fail(self.name, answer, label, reason, meaning="limit" if quota else None)
