"""WeChat mini-program subscribe messages: ``POST {base_url}/cgi-bin/message/subscribe/send``.

The app's access token comes from ``POST {base_url}/cgi-bin/stable_token`` (JSON
``grant_type=client_credential``, ``appid``, ``secret``; up to two hours' lifetime): the
stable token, which every worker of a scale-out deployment gets the same of — where each
``/cgi-bin/token`` call would replace the token the others hold. It is cached and shared by
every send, and renewed once when WeChat answers ``40001`` (invalid credential), ``40014``
(invalid token) or ``42001`` (expired). A message names the template the buyer subscribed to
(the template's ``wechat`` variant: ``template_id``, ``page``, ``data`` → ``{key: {value}}``)
and goes to the buyer's ``openid``. Codes (the subscribe message ``send`` reference):
``43101`` means the buyer has no subscription left for the template: suppressed, not failed;
``40003`` is an openid that is not the app's; ``45009``/``45011`` quotas are rate limits;
``-1`` (system busy) is transient.
"""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.makers import Answer, Meaning, Outcomes, ServiceProvider, base_url, required
from tidings.channels.tokens import AccessTokens, with_token
from tidings.channels.variants import variant
from tidings.config import ProviderSettings
from tidings.errors import PermanentProviderError

NO_SUBSCRIPTION = "43101"
NO_SUBSCRIPTION_REASON = "the buyer has no subscription left for this template"
OUTCOMES = Outcomes(
    "WeChat",
    codes={
        "40001": "token",
        "40014": "token",
        "42001": "token",
        NO_SUBSCRIPTION: "suppressed",
        "40003": "gone",
        "45009": "limit",  # the day's API quota
        "45011": "limit",  # the minute's API quota
        "-1": "busy",
    },
    statuses={429: "limit"},
    backoff={"45009": 3600.0, "45011": 60.0},
    gone_reason="the openid is not the app's",
)


class WeChatProvider(ServiceProvider):
    """Send WeChat subscribe messages to buyers of the shop's mini program."""

    kind: ClassVar[str] = "wechat"
    channel: ClassVar[Channel] = "wechat"
    destinations: ClassVar[frozenset[str]] = frozenset({"wechat"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(settings, context)
        self.app_id, self.app_secret = required(settings, self.kind, ("app_id", "app_secret"))
        self.state = str(settings.option("miniprogram_state", "formal"))
        base = base_url(settings, "https://api.weixin.qq.com")
        self.token_url = f"{base}/cgi-bin/stable_token"
        self.send_url = f"{base}/cgi-bin/message/subscribe/send"
        self.tokens = AccessTokens(self._fetch_token)

    async def _fetch_token(self) -> tuple[str, float]:
        body = {"grant_type": "client_credential", "appid": self.app_id, "secret": self.app_secret}
        answer = await self.client.post_json(self.token_url, body)
        if answer.status == 200 and answer.body.get("access_token"):
            return str(answer.body["access_token"]), float(answer.body.get("expires_in", 7200))
        self._fail(answer, "token")

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
            answer = await self.client.post_json(f"{self.send_url}?access_token={token}", payload)
            if answer.status == 200 and answer.body and answer.body.get("errcode", 0) == 0:
                msgid = answer.body.get("msgid")
                return Receipt(provider_message_id=str(msgid) if msgid else None)
            self._fail(answer, "send")

        return await with_token(self.tokens, self.name, call)

    def _fail(self, answer: Answer, step: str) -> NoReturn:
        code = answer.body.get("errcode")
        if str(code) == NO_SUBSCRIPTION:
            detail = NO_SUBSCRIPTION_REASON
        else:  # errmsg carries a request id ("rid: …"), never the openid
            detail = str(answer.body.get("errmsg", ""))
        label = "" if code is None else str(code)
        # an answer that is not WeChat's JSON (a proxy's error page) is a passing failure
        busy: Meaning | None = None if answer.body else "busy"
        OUTCOMES.fail(self.name, answer, label, detail, step=step, meaning=busy)
