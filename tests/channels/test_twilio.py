"""TwilioProvider against a fake Twilio that checks basic auth, form fields and E.164."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.tls import BackgroundServer
from fakes.twilio_server import TwilioServer
from tidings.channels.base import Destination, Message, ProviderContext
from tidings.channels.twilio import TwilioProvider
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    TransientProviderError,
)

PHONE = "+8613800138000"


@pytest.fixture
def twilio() -> Iterator[tuple[TwilioServer, str]]:
    state = TwilioServer()
    with BackgroundServer(state.app()) as server:
        yield state, server.url


def provider(url: str, **options: Any) -> TwilioProvider:
    fields: dict[str, Any] = {
        "kind": "twilio",
        "base_url": url,
        "account_sid": "AC" + "0" * 32,
        "auth_token": "secret-token",
        "from": "+15550000000",
        **options,
    }
    return TwilioProvider(ProviderSettings(**fields), ProviderContext(base_dir=Path(), timeout=5))


def message(phone: str = PHONE, **overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "delivery_id": "dlv-1",
        "notification_id": "ntf-1",
        "channel": "sms",
        "destination": Destination(kind="phone", address=phone),
        "subscriber_id": "buyer-1",
        "title": "支付成功",
        "body": "订单 42 已支付 ¥12.50。",
    }
    fields.update(overrides)
    return Message(**fields)


async def test_send_posts_form_and_returns_sid(twilio: tuple[TwilioServer, str]) -> None:
    server, url = twilio
    p = provider(url)
    try:
        receipt = await p.send(message())
        await p.send(message(content={"sms": "Order 42 paid"}))
    finally:
        await p.aclose()
    assert receipt.provider_message_id and receipt.provider_message_id.startswith("SM")
    assert len(receipt.provider_message_id) == 34
    assert server.sent == [
        {"To": PHONE, "From": "+15550000000", "Body": "订单 42 已支付 ¥12.50。"},
        {"To": PHONE, "From": "+15550000000", "Body": "Order 42 paid"},
    ]


async def test_wrong_auth_token_is_permanent(twilio: tuple[TwilioServer, str]) -> None:
    server, url = twilio
    p = provider(url, auth_token="wrong")
    try:
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "20003"
    assert server.sends == 0


async def test_invalid_number_is_gone_and_not_logged(twilio: tuple[TwilioServer, str]) -> None:
    _, url = twilio
    p = provider(url)
    try:
        with pytest.raises(DestinationGone) as info:
            await p.send(message("13800138000"))
    finally:
        await p.aclose()
    assert info.value.code == "21211"
    assert "13800138000" not in str(info.value)


async def test_landline_is_gone(twilio: tuple[TwilioServer, str]) -> None:
    server, url = twilio
    server.landlines.add(PHONE)
    p = provider(url)
    try:
        with pytest.raises(DestinationGone) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "21614"
    assert PHONE not in str(info.value)


async def test_sender_not_owned_is_permanent(twilio: tuple[TwilioServer, str]) -> None:
    _, url = twilio
    p = provider(url, **{"from": "+15559999999"})
    try:
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert not isinstance(info.value, DestinationGone)
    assert info.value.code == "21606"


async def test_throttled_is_transient_with_retry_after(twilio: tuple[TwilioServer, str]) -> None:
    server, url = twilio
    server.throttled.add(PHONE)
    p = provider(url)
    try:
        with pytest.raises(TransientProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "20429"
    assert info.value.retry_after == 5


async def test_server_error_is_transient(twilio: tuple[TwilioServer, str]) -> None:
    server, url = twilio
    server.failing.add(PHONE)
    p = provider(url)
    try:
        with pytest.raises(TransientProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "20500"


async def test_too_many_segments_is_refused_before_sending(
    twilio: tuple[TwilioServer, str],
) -> None:
    server, url = twilio
    p = provider(url, max_segments=2)
    try:
        await p.send(message(body="订" * 134))  # exactly two UCS-2 parts
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message(body="订" * 135))
    finally:
        await p.aclose()
    assert info.value.code == "too_many_segments"
    assert server.sends == 1


async def test_default_limit_is_ten_segments(twilio: tuple[TwilioServer, str]) -> None:
    server, url = twilio
    p = provider(url)
    try:
        await p.send(message(body="a" * 1530))  # 10 GSM-7 parts
        with pytest.raises(PermanentProviderError):
            await p.send(message(body="a" * 1531))
    finally:
        await p.aclose()
    assert server.sends == 1


def test_missing_credentials_are_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        TwilioProvider(
            ProviderSettings(kind="twilio", account_sid="AC1"), ProviderContext(base_dir=Path())
        )
    assert info.value.path == "auth_token"
