"""WeChatProvider against a fake that checks the access token, template and subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from fakes.china import OPENID, message, one_byte_off, wechat_settings
from fakes.tls import BackgroundServer
from fakes.wechat_server import WeChatServer
from tidings.channels.base import ProviderContext
from tidings.channels.wechat import WeChatProvider
from tidings.config import ProviderSettings
from tidings.errors import DestinationGone, PermanentProviderError, RateLimited, Suppressed


@pytest.fixture
def wechat() -> Iterator[tuple[WeChatServer, str]]:
    fake = WeChatServer()
    with BackgroundServer(fake.app()) as server:
        yield fake, server.url


def provider(fake: WeChatServer, url: str, **override: Any) -> WeChatProvider:
    options = {**wechat_settings(fake, url), **override}
    return WeChatProvider(ProviderSettings(kind="wechat", **options), ProviderContext())


async def test_a_subscribe_message_takes_one_subscription(
    wechat: tuple[WeChatServer, str],
) -> None:
    fake, url = wechat
    fake.subscribe(OPENID, "tmpl-order-paid", times=1)
    p = provider(fake, url)
    try:
        receipt = await p.send(message("wechat", OPENID))
        with pytest.raises(Suppressed) as caught:
            await p.send(message("wechat", OPENID, delivery_id="dlv-2"))
    finally:
        await p.aclose()
    assert receipt.provider_message_id
    sent = fake.sent[0]
    assert sent["touser"] == OPENID and sent["template_id"] == "tmpl-order-paid"
    assert sent["page"] == "pages/order/detail?id=ord-42"
    assert sent["data"]["character_string1"] == {"value": "ord-42"}
    assert sent["lang"] == "zh_CN"
    assert str(caught.value) == "the buyer has no subscription left for this template"


async def test_one_token_for_many_sends_renewed_once_on_42001_and_40001(
    wechat: tuple[WeChatServer, str],
) -> None:
    fake, url = wechat
    fake.unlimited = True
    p = provider(fake, url)
    try:
        await asyncio.gather(*(p.send(message("wechat", OPENID)) for _ in range(30)))
        assert fake.tokens_issued == 1
        fake.expire_all()  # 42001
        await p.send(message("wechat", OPENID))
        fake.access_tokens.clear()  # 40001
        await p.send(message("wechat", OPENID))
    finally:
        await p.aclose()
    assert fake.tokens_issued == 3 and fake.sends == 32


async def test_wrong_secret_bad_openid_quota_and_missing_variant(
    wechat: tuple[WeChatServer, str],
) -> None:
    fake, url = wechat
    fake.unlimited = True
    fake.limited.add(OPENID)
    wrong = provider(fake, url, app_secret=one_byte_off(fake.app_secret))
    p = provider(fake, url)
    try:
        with pytest.raises(PermanentProviderError) as refused:
            await wrong.send(message("wechat", OPENID))
        with pytest.raises(DestinationGone):
            await p.send(message("wechat", "not-an-openid"))
        with pytest.raises(RateLimited):
            await p.send(message("wechat", OPENID))
        with pytest.raises(PermanentProviderError) as missing:
            await p.send(message("wechat", OPENID, content={}))
    finally:
        await wrong.aclose()
        await p.aclose()
    assert "40125" in str(refused.value)
    assert missing.value.code == "no_template"
    assert fake.sends == 0
