"""FcmProvider against a fake FCM that verifies the OAuth assertion, the bearer and the schema."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.fcm_server import FcmServer, write_service_account
from fakes.tls import BackgroundServer, free_port
from tidings.channels.base import Destination, Message, ProviderContext
from tidings.channels.fcm import FcmProvider
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    TransientProviderError,
)

TOKEN = "fcm-token-" + "a" * 140


@pytest.fixture
def fcm(tmp_path: Path) -> Iterator[tuple[FcmServer, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    account = write_service_account(tmp_path / "fcm.json", f"{url}/token")
    state = FcmServer(account)
    with BackgroundServer(state.app(), port=port):
        yield state, url


def provider(tmp_path: Path, url: str, **options: Any) -> FcmProvider:
    settings = ProviderSettings(
        kind="fcm", service_account_file="fcm.json", base_url=url, **options
    )
    return FcmProvider(settings, ProviderContext(base_dir=tmp_path, timeout=5))


def message(token: str = TOKEN, **overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "delivery_id": "dlv-1",
        "notification_id": "ntf-1",
        "channel": "push",
        "destination": Destination(kind="fcm", address=token, device_id="dev-1"),
        "subscriber_id": "buyer-1",
        "title": "Payment received",
        "body": "Order 42: $12.50 paid.",
        "subject": "order-42",
        "category": "order_updates",
        "priority": "high",
        "ttl": 3600,
        "data": {"order_id": "42", "amount": 12.5, "items": [{"sku": "A", "qty": 1}]},
    }
    fields.update(overrides)
    return Message(**fields)


async def test_send_builds_v1_message_and_returns_name(
    fcm: tuple[FcmServer, str], tmp_path: Path
) -> None:
    server, url = fcm
    p = provider(tmp_path, url)
    try:
        receipt = await p.send(
            message(content={"android": {"ttl": "60s"}, "url": "https://shop.test/o/42"})
        )
    finally:
        await p.aclose()
    assert receipt.status == "sent"
    assert receipt.provider_message_id is not None
    assert receipt.provider_message_id.startswith("projects/shop-test/messages/0:")
    sent = server.sent[0]
    assert sent["token"] == TOKEN
    assert sent["notification"] == {"title": "Payment received", "body": "Order 42: $12.50 paid."}
    assert sent["data"] == {
        "order_id": "42",
        "amount": "12.5",
        "items": '[{"sku":"A","qty":1}]',
    }
    assert sent["android"] == {"priority": "HIGH", "collapse_key": "order-42", "ttl": "60s"}
    assert sent["apns"]["headers"]["apns-priority"] == "10"
    assert sent["apns"]["headers"]["apns-collapse-id"] == "order-42"
    assert sent["apns"]["payload"] == {"aps": {"thread-id": "order_updates"}}
    assert sent["webpush"]["headers"] == {"Urgency": "high", "Topic": "order-42", "TTL": "3600"}
    assert sent["webpush"]["fcm_options"] == {"link": "https://shop.test/o/42"}


async def test_one_access_token_serves_many_concurrent_sends(
    fcm: tuple[FcmServer, str], tmp_path: Path
) -> None:
    server, url = fcm
    p = provider(tmp_path, url)
    try:
        await asyncio.gather(*(p.send(message(delivery_id=f"d{i}")) for i in range(60)))
    finally:
        await p.aclose()
    assert p.tokens_minted == 1
    assert server.tokens_issued == 1
    assert server.sends == 60


async def test_token_is_refreshed_shortly_before_expiry(
    fcm: tuple[FcmServer, str], tmp_path: Path
) -> None:
    server, url = fcm
    p = provider(tmp_path, url)
    # the clock starts an hour back so every assertion's iat stays in Google's past
    now = [time.time() - 3500]
    p.tokens.clock = lambda: now[0]
    try:
        await p.send(message())
        now[0] += 3000  # 10 min before the 1 h expiry: still cached
        await p.send(message())
        assert p.tokens_minted == 1
        now[0] += 400  # inside the refresh margin
        await p.send(message())
    finally:
        await p.aclose()
    assert p.tokens_minted == 2
    assert server.tokens_issued == 2


async def test_401_mints_a_new_token_and_retries_once(
    fcm: tuple[FcmServer, str], tmp_path: Path
) -> None:
    server, url = fcm
    p = provider(tmp_path, url)
    try:
        await p.send(message())
        server.revoke_access_tokens()
        receipt = await p.send(message())
    finally:
        await p.aclose()
    assert receipt.provider_message_id
    assert p.tokens_minted == 2
    assert server.sends == 2


async def test_401_twice_is_permanent(fcm: tuple[FcmServer, str], tmp_path: Path) -> None:
    server, url = fcm
    server.token_lifetime = 0  # every token is dead on arrival
    p = provider(tmp_path, url)
    try:
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert not isinstance(info.value, DestinationGone)
    assert info.value.code == "UNAUTHENTICATED"
    assert p.tokens_minted == 2


async def test_unregistered_token_is_gone(fcm: tuple[FcmServer, str], tmp_path: Path) -> None:
    server, url = fcm
    server.dead.add(TOKEN)
    p = provider(tmp_path, url)
    try:
        with pytest.raises(DestinationGone) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "UNREGISTERED"
    assert TOKEN not in str(info.value)


async def test_invalid_registration_token_is_gone(
    fcm: tuple[FcmServer, str], tmp_path: Path
) -> None:
    _, url = fcm
    p = provider(tmp_path, url)
    try:
        with pytest.raises(DestinationGone) as info:
            await p.send(message(token="not a token!"))
    finally:
        await p.aclose()
    assert info.value.code == "INVALID_ARGUMENT"


async def test_invalid_payload_is_permanent_not_gone(
    fcm: tuple[FcmServer, str], tmp_path: Path
) -> None:
    _, url = fcm
    p = provider(tmp_path, url)
    try:
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message(body="x" * 5000))
    finally:
        await p.aclose()
    assert not isinstance(info.value, DestinationGone)
    assert info.value.code == "INVALID_ARGUMENT"


async def test_quota_exceeded_is_transient_with_retry_after(
    fcm: tuple[FcmServer, str], tmp_path: Path
) -> None:
    server, url = fcm
    server.quota.add(TOKEN)
    p = provider(tmp_path, url)
    try:
        with pytest.raises(TransientProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "QUOTA_EXCEEDED"
    assert info.value.retry_after is not None and info.value.retry_after >= 30


async def test_unavailable_is_transient(fcm: tuple[FcmServer, str], tmp_path: Path) -> None:
    server, url = fcm
    server.unavailable.add(TOKEN)
    p = provider(tmp_path, url)
    try:
        with pytest.raises(TransientProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "UNAVAILABLE"


async def test_wrong_key_is_refused_by_the_token_endpoint(
    fcm: tuple[FcmServer, str], tmp_path: Path
) -> None:
    server, url = fcm
    # same account name and token_uri, but a key Google does not know
    other = tmp_path / "other"
    other.mkdir()
    write_service_account(other / "fcm.json", f"{url}/token")
    p = FcmProvider(
        ProviderSettings(kind="fcm", service_account_file="fcm.json", base_url=url),
        ProviderContext(base_dir=other),
    )
    try:
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "oauth"
    assert server.token_rejections and "Signature" in server.token_rejections[0]
    assert server.sends == 0


async def test_unreachable_fcm_is_transient(tmp_path: Path) -> None:
    write_service_account(tmp_path / "fcm.json", f"http://127.0.0.1:{free_port()}/token")
    p = provider(tmp_path, f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(TransientProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "transport"


def test_missing_service_account_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        FcmProvider(ProviderSettings(kind="fcm"), ProviderContext(base_dir=tmp_path))
    with pytest.raises(ConfigError):
        provider(tmp_path, "http://127.0.0.1:1")
