"""WeChat mini-program subscribe messages: ``POST {base_url}/cgi-bin/message/subscribe/send``.

The app's access token comes from ``GET {base_url}/cgi-bin/token?grant_type=client_credential``
(``appid``, ``secret``; two hours' lifetime), cached and shared by every send, and renewed once
when WeChat answers ``40001`` (invalid credential), ``40014`` or ``42001`` (expired). A
message names the template the buyer subscribed to (the template's ``wechat`` variant:
``template_id``, ``page``, ``data`` → ``{key: {value}}``) and goes to the buyer's
``openid``. ``43101`` means the buyer has no subscription left for the template: suppressed,
not failed. ``40003`` is an openid that is not the app's; ``45009``/``45011`` quotas are rate
limits; ``-1`` (system busy) is transient.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.http import json_object, make_client, transport_errors
from tidings.channels.tokens import AccessTokens, TokenRejected, with_token
from tidings.channels.variants import variant
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    RateLimited,
    Suppressed,
    TransientProviderError,
)

TOKEN_REFUSED = frozenset({40001, 40014, 42001})
NO_SUBSCRIPTION = 43101
NO_SUBSCRIPTION_REASON = "the buyer has no subscription left for this template"
INVALID_OPENID = 40003
QUOTAS = frozenset({45009, 45011})
BUSY = -1


class WeChatProvider:
    """Send WeChat subscribe messages to buyers of the shop's mini program."""

    kind: ClassVar[str] = "wechat"
    channel: ClassVar[Channel] = "wechat"
    destinations: ClassVar[frozenset[str]] = frozenset({"wechat"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        missing = [k for k in ("app_id", "app_secret") if not settings.option(k)]
        if missing:
            raise ConfigError(f"wechat needs {', '.join(missing)}", missing[0])
        self.app_id = str(settings.option("app_id"))
        self.app_secret = str(settings.option("app_secret"))
        self.state = str(settings.option("miniprogram_state", "formal"))
        base_url = str(settings.option("base_url", "https://api.weixin.qq.com")).rstrip("/")
        self.token_url = f"{base_url}/cgi-bin/token"
        self.send_url = f"{base_url}/cgi-bin/message/subscribe/send"
        self.client = make_client(
            timeout=settings.timeout or context.timeout,
            max_connections=int(settings.option("connections", 100)),
        )
        self.tokens = AccessTokens(self._fetch_token)

    async def _fetch_token(self) -> tuple[str, float]:
        query = {"grant_type": "client_credential", "appid": self.app_id, "secret": self.app_secret}
        async with transport_errors(self.name):
            response = await self.client.get(self.token_url, params=query)
        body = json_object(response)
        if response.status_code == 200 and body.get("access_token"):
            return str(body["access_token"]), float(body.get("expires_in", 7200))
        self._raise(response, body, "token")
        raise AssertionError("unreachable")  # pragma: no cover

    def payload(self, message: Message) -> dict[str, Any]:
        """The subscribe message for ``message``'s openid."""
        found = variant(message, "wechat", self.name)
        if not found.get("template_id"):
            raise PermanentProviderError(
                f"{self.name}: the `wechat` variant names no template_id", code="no_template"
            )
        data = found.get("data") or {}
        body: dict[str, Any] = {
            "touser": message.destination.address,
            "template_id": str(found["template_id"]),
            "data": {str(key): {"value": str(value)} for key, value in data.items()},
            "miniprogram_state": self.state,
            "lang": "zh_CN" if message.locale.startswith("zh") else "en_US",
        }
        if found.get("page"):
            body["page"] = str(found["page"])
        return body

    async def send(self, message: Message) -> Receipt:
        """Send one subscribe message."""
        payload = self.payload(message)

        async def call(token: str) -> Receipt:
            async with transport_errors(self.name):
                response = await self.client.post(
                    self.send_url, params={"access_token": token}, json=payload
                )
            body = json_object(response)
            if response.status_code == 200 and body.get("errcode", 0) == 0 and body:
                msgid = body.get("msgid")
                return Receipt(provider_message_id=str(msgid) if msgid else None)
            self._raise(response, body, "send")
            raise AssertionError("unreachable")  # pragma: no cover

        return await with_token(self.tokens, self.name, call)

    def _raise(self, response: httpx.Response, body: dict[str, Any], step: str) -> None:
        code = body.get("errcode")
        # errmsg carries a request id ("rid: …"), never the openid
        text = f"{self.name}: WeChat {step} errcode {code} {body.get('errmsg', '')}".rstrip()[:300]
        if step == "send" and code in TOKEN_REFUSED:
            raise TokenRejected(text)
        if code == NO_SUBSCRIPTION:
            raise Suppressed(NO_SUBSCRIPTION_REASON, code=str(code))
        if code == INVALID_OPENID:
            raise DestinationGone(f"{text} (the openid is not the app's)", code=str(code))
        if code in QUOTAS or response.status_code == 429:
            raise RateLimited(text, retry_after=60.0, code=str(code))
        if code == BUSY or response.status_code >= 500 or not body:
            raise TransientProviderError(text, code=str(code or response.status_code))
        raise PermanentProviderError(text, code=str(code))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()
