"""ApnsProvider against a fake APNs speaking HTTP/2 over TLS with a private test CA."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.apns_server import ApnsServer, device_token, write_p8
from fakes.tls import BackgroundServer, make_pki
from tidings.channels.apns import ApnsProvider, apns_id, collapse_id
from tidings.channels.base import Destination, Message, ProviderContext
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    TransientProviderError,
)

TOKEN = device_token()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def apns(
    tmp_path: Path, pki: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ApnsServer, str]]:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    state = ApnsServer(write_p8(tmp_path / "AuthKey.p8"))
    with BackgroundServer(state.app(), engine="hypercorn", pki=pki) as server:
        yield state, server.url


def provider(tmp_path: Path, url: str, **options: Any) -> ApnsProvider:
    settings = ProviderSettings(
        kind="apns",
        base_url=url,
        team_id="TEAM123456",
        key_id="KEY1234567",
        private_key_file="AuthKey.p8",
        topic="com.shop.app",
        **options,
    )
    return ApnsProvider(settings, ProviderContext(base_dir=tmp_path, timeout=5))


def message(token: str = TOKEN, **overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "delivery_id": str(uuid.uuid4()),
        "notification_id": "ntf-1",
        "channel": "push",
        "destination": Destination(kind="apns", address=token, device_id="dev-1"),
        "subscriber_id": "buyer-1",
        "title": "Payment received",
        "body": "Order 42: $12.50 paid.",
        "subject": "order-42",
        "category": "order_updates",
        "priority": "high",
        "data": {"order_id": "42"},
    }
    fields.update(overrides)
    return Message(**fields)


async def test_send_over_http2_with_headers_and_payload(
    apns: tuple[ApnsServer, str], tmp_path: Path
) -> None:
    server, url = apns
    p = provider(tmp_path, url)
    msg = message(ttl=600, content={"apns": {"payload": {"aps": {"badge": 3}}}})
    try:
        receipt = await p.send(msg)
    finally:
        await p.aclose()
    assert receipt.provider_message_id == msg.delivery_id
    assert server.http_versions == {"2"}
    got = server.received[0]
    headers = got["headers"]
    assert headers["apns-topic"] == "com.shop.app"
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert headers["apns-collapse-id"] == "order-42"
    assert headers["apns-id"] == msg.delivery_id
    assert abs(int(headers["apns-expiration"]) - (time.time() + 600)) < 5
    assert got["payload"] == {
        "aps": {
            "alert": {"title": "Payment received", "body": "Order 42: $12.50 paid."},
            "sound": "default",
            "thread-id": "order_updates",
            "badge": 3,
        },
        "order_id": "42",
    }


async def test_normal_priority_without_ttl_and_non_uuid_delivery_id(
    apns: tuple[ApnsServer, str], tmp_path: Path
) -> None:
    server, url = apns
    p = provider(tmp_path, url)
    try:
        await p.send(message(delivery_id="dlv-7", priority="normal", subject="x" * 80))
        await p.send(message(delivery_id="dlv-7", priority="low"))
    finally:
        await p.aclose()
    first, second = (r["headers"] for r in server.received)
    assert first["apns-priority"] == "5" and second["apns-priority"] == "5"
    assert first["apns-expiration"] == "0"
    # a retry of the same delivery carries the same apns-id
    assert first["apns-id"] == second["apns-id"] == apns_id("dlv-7")
    assert uuid.UUID(first["apns-id"]).version == 5
    assert first["apns-collapse-id"] == collapse_id("x" * 80)
    assert len(first["apns-collapse-id"].encode()) == 64


async def test_many_concurrent_streams_share_one_connection_and_one_token(
    apns: tuple[ApnsServer, str], tmp_path: Path
) -> None:
    server, url = apns
    server.latency = 0.05
    p = provider(tmp_path, url)
    try:
        await asyncio.gather(*(p.send(message()) for _ in range(100)))
    finally:
        await p.aclose()
    assert server.sends == 100
    assert len(server.connections) == 1
    assert server.max_streams > 1, server.max_streams
    assert p.tokens_minted == 1
    assert len(server.tokens_seen) == 1


async def test_token_refreshed_after_50_minutes_not_before(
    apns: tuple[ApnsServer, str], tmp_path: Path
) -> None:
    server, url = apns
    p = provider(tmp_path, url)
    start = time.time() - 3300  # so every iat the provider signs is in Apple's past
    now = [start]
    p.token.clock = lambda: now[0]
    try:
        await p.send(message())
        now[0] = start + 49 * 60
        await p.send(message())
        assert p.tokens_minted == 1
        now[0] = start + 51 * 60
        await p.send(message())
    finally:
        await p.aclose()
    assert p.tokens_minted == 2
    assert len(server.tokens_seen) == 2


async def test_expired_provider_token_is_refreshed_and_retried_once(
    apns: tuple[ApnsServer, str], tmp_path: Path
) -> None:
    server, url = apns
    p = provider(tmp_path, url)
    start = time.time() - 1800
    now = [start]
    p.token.clock = lambda: now[0]
    try:
        await p.send(message())
        now[0] = start + 25 * 60  # old enough to refresh, young enough to still be reused
        server.expired_before = start + 60  # APNs now considers the first token expired
        receipt = await p.send(message())
    finally:
        await p.aclose()
    assert receipt.provider_message_id
    assert p.tokens_minted == 2
    assert server.sends == 2


async def test_expired_provider_token_too_young_to_refresh_is_transient(
    apns: tuple[ApnsServer, str], tmp_path: Path
) -> None:
    server, url = apns
    p = provider(tmp_path, url)
    try:
        await p.send(message())
        server.expired_before = time.time() + 60
        with pytest.raises(TransientProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "ExpiredProviderToken"
    assert info.value.retry_after is not None and info.value.retry_after > 19 * 60
    assert p.tokens_minted == 1  # never more often than once per 20 minutes


async def test_unregistered_is_gone(apns: tuple[ApnsServer, str], tmp_path: Path) -> None:
    server, url = apns
    server.unregistered.add(TOKEN)
    p = provider(tmp_path, url)
    try:
        with pytest.raises(DestinationGone) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "Unregistered"
    assert TOKEN not in str(info.value)


async def test_bad_device_token_is_gone(apns: tuple[ApnsServer, str], tmp_path: Path) -> None:
    _, url = apns
    p = provider(tmp_path, url)
    try:
        with pytest.raises(DestinationGone) as info:
            await p.send(message(token="zz-not-hex"))
    finally:
        await p.aclose()
    assert info.value.code == "BadDeviceToken"


async def test_wrong_topic_is_permanent(apns: tuple[ApnsServer, str], tmp_path: Path) -> None:
    _, url = apns
    p = provider(tmp_path, url)
    p.topic = "com.other.app"
    try:
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert not isinstance(info.value, DestinationGone)
    assert info.value.code == "DeviceTokenNotForTopic"


@pytest.mark.parametrize(
    ("mark", "code"), [("busy", "TooManyRequests"), ("down", "ServiceUnavailable")]
)
async def test_throttled_and_unavailable_are_transient(
    apns: tuple[ApnsServer, str], tmp_path: Path, mark: str, code: str
) -> None:
    server, url = apns
    getattr(server, mark).add(TOKEN)
    p = provider(tmp_path, url)
    try:
        with pytest.raises(TransientProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == code


async def test_payload_over_4k_is_refused_before_sending(
    apns: tuple[ApnsServer, str], tmp_path: Path
) -> None:
    server, url = apns
    p = provider(tmp_path, url)
    try:
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message(body="x" * 4100))
    finally:
        await p.aclose()
    assert info.value.code == "PayloadTooLarge"
    assert server.sends == 0 and server.received == []


async def test_key_apple_does_not_know_is_permanent(
    apns: tuple[ApnsServer, str], tmp_path: Path
) -> None:
    _, url = apns
    write_p8(tmp_path / "AuthKey.p8")  # replaces the key the server trusts
    p = provider(tmp_path, url)
    try:
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "InvalidProviderToken"


async def test_untrusted_certificate_is_a_transport_error(
    apns: tuple[ApnsServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = apns
    monkeypatch.delenv("SSL_CERT_FILE")
    p = provider(tmp_path, url)
    try:
        with pytest.raises(TransientProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "transport"


def test_missing_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ApnsProvider(ProviderSettings(kind="apns", team_id="T"), ProviderContext(base_dir=tmp_path))
    with pytest.raises(ConfigError):
        provider(tmp_path, "https://localhost:1")  # no AuthKey.p8 in tmp_path
