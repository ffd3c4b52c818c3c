"""Huawei, Xiaomi, OPPO and vivo providers against fakes that check auth and message shape."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from fakes.china import MAKERS, TOKEN, Maker, message, one_byte_off
from fakes.maker_push import HmsServer
from fakes.tls import BackgroundServer
from tidings.channels.base import ProviderContext
from tidings.channels.makers import form_body
from tidings.channels.registry import build_provider
from tidings.config import ProviderSettings
from tidings.errors import DestinationGone, PermanentProviderError, RateLimited


@pytest.fixture(params=MAKERS, ids=[m.kind for m in MAKERS])
def maker(request: pytest.FixtureRequest) -> Iterator[tuple[Maker, Any, str]]:
    spec: Maker = request.param
    fake = spec.fake()
    with BackgroundServer(fake.app()) as server:
        yield spec, fake, server.url


def provider(spec: Maker, fake: Any, url: str, **override: Any) -> Any:
    options = {**spec.settings(fake, url), **override}
    return build_provider(ProviderSettings(kind=spec.kind, **options), ProviderContext(timeout=5))


async def test_a_transactional_message_is_accepted_with_click_notify_id_and_class(
    maker: tuple[Maker, Any, str],
) -> None:
    spec, fake, url = maker
    p = provider(spec, fake, url)
    try:
        receipt = await p.send(message(spec.kind))
    finally:
        await p.aclose()
    assert receipt.status == "sent" and receipt.provider_message_id
    sent = fake.sent[0]
    if spec.kind == "hms":
        notification = sent["android"]["notification"]
        assert sent["token"] == [TOKEN]
        assert notification["click_action"] == {"type": 1, "intent": "shop://orders/ord-42"}
        assert notification["importance"] == "NORMAL"
        assert sent["android"]["category"] == "FINANCE"
        assert sent["android"]["ttl"] == "3600s"
    elif spec.kind == "xiaomi":
        assert sent["registration_id"] == TOKEN
        assert sent["extra.notify_effect"] == "2"
        assert sent["extra.intent_uri"] == "shop://orders/ord-42"
        assert sent["extra.channel_id"] == "orders"
        assert sent["time_to_live"] == "3600000"
    elif spec.kind == "oppo":
        notification = sent["notification"]
        assert sent["target_value"] == TOKEN
        assert (notification["category"], notification["notify_level"]) == ("ORDER", 2)
        assert notification["click_action_type"] == 5
        assert notification["app_message_id"] == "dlv-1"
    else:
        assert sent["regId"] == TOKEN
        assert (sent["classification"], sent["category"]) == (1, "ORDER")
        assert (sent["skipType"], sent["skipContent"]) == (4, "shop://orders/ord-42")
        assert sent["requestId"] == "dlv-1"


async def test_one_notify_id_per_order_one_message_id_per_delivery(
    maker: tuple[Maker, Any, str],
) -> None:
    spec, fake, url = maker
    p = provider(spec, fake, url)
    try:
        for index, subject in enumerate(["ord-1", "ord-1", "ord-2"]):
            await p.send(message(spec.kind, delivery_id=f"d{index}", subject=subject))
    finally:
        await p.aclose()
    if spec.kind in ("hms", "xiaomi"):  # a later message of an order replaces the earlier one
        key = {"hms": lambda m: m["android"]["notification"]["notify_id"]}.get(
            spec.kind, lambda m: m["notify_id"]
        )
        ids = [key(m) for m in fake.sent]
        assert ids[0] == ids[1] != ids[2]
    else:  # OPPO and vivo drop a repeated message id: the delivery id, stable across retries
        key = {"oppo": lambda m: m["notification"]["app_message_id"]}.get(
            spec.kind, lambda m: m["requestId"]
        )
        assert [key(m) for m in fake.sent] == ["d0", "d1", "d2"]


async def test_marketing_is_not_classified_transactional(maker: tuple[Maker, Any, str]) -> None:
    spec, fake, url = maker
    p = (
        provider(spec, fake, url, channel_id=None)
        if spec.kind == "xiaomi"
        else provider(spec, fake, url)
    )
    try:
        await p.send(message(spec.kind, category="marketing", category_required=False, content={}))
    finally:
        await p.aclose()
    sent = fake.sent[0]
    if spec.kind == "hms":
        assert "category" not in sent["android"]
        assert sent["android"]["notification"]["importance"] == "LOW"
        assert sent["android"]["notification"]["click_action"] == {"type": 3}
    elif spec.kind == "xiaomi":
        assert "extra.channel_id" not in sent and sent["extra.notify_effect"] == "1"
    elif spec.kind == "oppo":
        assert sent["notification"]["category"] == "MARKETING"
    else:
        assert sent["classification"] == 0 and "category" not in sent


async def test_one_token_serves_many_sends_and_is_renewed_once_when_refused(
    maker: tuple[Maker, Any, str],
) -> None:
    spec, fake, url = maker
    p = provider(spec, fake, url)
    try:
        await asyncio.gather(*(p.send(message(spec.kind, delivery_id=f"d{i}")) for i in range(40)))
        if spec.kind == "xiaomi":
            assert fake.tokens_issued == 0  # a static app secret: no token to fetch
            return
        assert fake.tokens_issued == 1
        fake.expire_all()
        await p.send(message(spec.kind, delivery_id="after-expiry"))
    finally:
        await p.aclose()
    assert fake.tokens_issued == 2
    assert p.tokens.fetched == 2
    assert fake.sends == 41


async def test_a_secret_one_byte_off_is_refused(maker: tuple[Maker, Any, str]) -> None:
    spec, fake, url = maker
    wrong = one_byte_off(spec.settings(fake, url)[spec.wrong_secret])
    p = provider(spec, fake, url, **{spec.wrong_secret: wrong})
    try:
        with pytest.raises(PermanentProviderError) as caught:
            await p.send(message(spec.kind))
    finally:
        await p.aclose()
    assert not isinstance(caught.value, DestinationGone)
    assert fake.auth_rejections == 1
    assert fake.sends == 0


async def test_a_dead_token_is_gone_with_the_makers_reason(maker: tuple[Maker, Any, str]) -> None:
    spec, fake, url = maker
    fake.dead.add(TOKEN)
    p = provider(spec, fake, url)
    try:
        with pytest.raises(DestinationGone) as caught:
            await p.send(message(spec.kind))
    finally:
        await p.aclose()
    reason = {"hms": "80300007", "xiaomi": "20301", "oppo": "10000", "vivo": "10302"}[spec.kind]
    assert caught.value.code == reason
    assert reason in str(caught.value)
    assert TOKEN not in str(caught.value)  # vivo's invalidUser names it: never kept


async def test_a_rate_limit_answer_is_rate_limited(maker: tuple[Maker, Any, str]) -> None:
    spec, fake, url = maker
    fake.limited.add(TOKEN)
    p = provider(spec, fake, url)
    try:
        with pytest.raises(RateLimited) as caught:
            await p.send(message(spec.kind))
    finally:
        await p.aclose()
    assert caught.value.retry_after and caught.value.retry_after > 0


async def test_lengths_the_maker_refuses_are_clipped(maker: tuple[Maker, Any, str]) -> None:
    spec, fake, url = maker
    p = provider(spec, fake, url)
    try:
        await p.send(message(spec.kind, title="标" * 80, body="长" * 300))
    finally:
        await p.aclose()
    assert fake.sends == 1


async def test_huawei_names_the_illegal_token_and_the_error_does_not() -> None:
    fake = HmsServer()
    fake.partial.add(TOKEN)
    spec = next(m for m in MAKERS if m.kind == "hms")
    with BackgroundServer(fake.app()) as server:
        p = provider(spec, fake, server.url)
        try:
            with pytest.raises(DestinationGone) as caught:
                await p.send(message("hms"))
        finally:
            await p.aclose()
    assert caught.value.code == "80100000"
    assert "illegal_tokens" in str(caught.value) and TOKEN not in str(caught.value)


def test_form_bodies_are_what_urlencode_makes() -> None:
    fields = {
        "registration_id": "abc-DEF_1.2~3",
        "title": "支付成功 & 退款 = ¥99.00 + 运费",
        "extra.intent_uri": "shop://orders/ord-42?x=1&y=a b",
        "notify_id": "1234567",
        "empty": "",
    }
    assert form_body(fields) == urlencode(fields).encode()
