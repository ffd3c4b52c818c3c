"""WebPushProvider against a fake push service that checks VAPID and decrypts the payload."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fakes.tls import BackgroundServer, free_port
from fakes.webpush_service import WebPushService, b64url
from tidings.channels.base import Destination, Message, ProviderContext
from tidings.channels.webpush import MAX_PLAINTEXT, WebPushProvider, topic_for
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    TransientProviderError,
)


def start_service() -> tuple[WebPushService, BackgroundServer]:
    port = free_port()
    state = WebPushService(f"http://127.0.0.1:{port}")
    return state, BackgroundServer(state.app(), port=port).start()


@pytest.fixture
def service() -> Iterator[WebPushService]:
    state, server = start_service()
    try:
        yield state
    finally:
        server.stop()


@pytest.fixture
def vapid_key(tmp_path: Path) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "vapid.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return b64url(
        key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )


def provider(tmp_path: Path, **options: Any) -> WebPushProvider:
    fields: dict[str, Any] = {
        "kind": "webpush",
        "vapid_private_key_file": "vapid.pem",
        "subject": "mailto:ops@shop.test",
        **options,
    }
    settings = ProviderSettings(**fields)
    return WebPushProvider(settings, ProviderContext(base_dir=tmp_path, timeout=5))


def message(subscription: dict[str, Any], **overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "delivery_id": "dlv-1",
        "notification_id": "ntf-1",
        "channel": "push",
        "destination": Destination(
            kind="webpush",
            address=subscription["endpoint"],
            device_id="dev-1",
            keys=subscription["keys"],
        ),
        "subscriber_id": "buyer-1",
        "title": "支付成功",
        "body": "订单 42 已支付 ¥12.50。",
        "subject": "order-42",
        "priority": "high",
        "ttl": 600,
        "content": {"url": "https://shop.test/orders/42"},
        "data": {"order_id": "42", "amount": "12.50"},
    }
    fields.update(overrides)
    return Message(**fields)


async def test_payload_arrives_decryptable_with_headers(
    service: WebPushService, tmp_path: Path, vapid_key: str
) -> None:
    sub = service.subscribe(application_server_key=vapid_key)
    p = provider(tmp_path)
    try:
        receipt = await p.send(message(sub))
    finally:
        await p.aclose()
    assert receipt.provider_message_id and "/m/" in receipt.provider_message_id
    assert service.problems == []
    got = service.received[0]
    assert json.loads(got["plaintext"]) == {
        "title": "支付成功",
        "body": "订单 42 已支付 ¥12.50。",
        "data": {"order_id": "42", "amount": "12.50"},
        "url": "https://shop.test/orders/42",
    }
    headers = got["headers"]
    assert headers["ttl"] == "600"
    assert headers["urgency"] == "high"
    assert headers["topic"] == "order-42"
    assert headers["content-encoding"] == "aes128gcm"
    assert headers["authorization"].endswith(f", k={vapid_key}")


async def test_defaults_for_ttl_urgency_and_topic(
    service: WebPushService, tmp_path: Path, vapid_key: str
) -> None:
    sub = service.subscribe()
    p = provider(tmp_path)
    try:
        await p.send(message(sub, ttl=None, priority="low", subject="order 42 / refund #7"))
    finally:
        await p.aclose()
    headers = service.received[0]["headers"]
    assert headers["ttl"] == "86400"
    assert headers["urgency"] == "low"
    assert headers["topic"] == topic_for("order 42 / refund #7")
    assert len(headers["topic"]) == 32


async def test_vapid_jwt_is_cached_per_origin(
    service: WebPushService, tmp_path: Path, vapid_key: str
) -> None:
    other, other_server = start_service()
    p = provider(tmp_path)
    try:
        subs = [service.subscribe() for _ in range(20)]
        await asyncio.gather(*(p.send(message(s)) for s in subs))
        await p.send(message(other.subscribe()))
    finally:
        await p.aclose()
        other_server.stop()
    assert service.sends == 20 and other.sends == 1
    assert len(service.vapid_tokens) == 1
    assert len(other.vapid_tokens) == 1
    assert p.tokens_minted == 2  # one per audience


async def test_vapid_jwt_is_renewed_before_it_expires(
    service: WebPushService, tmp_path: Path, vapid_key: str
) -> None:
    sub = service.subscribe()
    p = provider(tmp_path)
    now = [time.time()]
    p.clock = lambda: now[0]
    try:
        await p.send(message(sub))
        now[0] += 10 * 3600
        await p.send(message(sub))
        assert p.tokens_minted == 1
        now[0] += 1.5 * 3600  # within the last hour of the 12 h lifetime (exp stays < 24 h)
        await p.send(message(sub))
    finally:
        await p.aclose()
    assert p.tokens_minted == 2
    assert len(service.vapid_tokens) == 2


@pytest.mark.parametrize("status", [404, 410])
async def test_dead_subscription_is_gone(
    service: WebPushService, tmp_path: Path, vapid_key: str, status: int
) -> None:
    sub = service.subscribe()
    if status == 410:
        service.unsubscribe(sub["endpoint"])
    else:
        sub = {**sub, "endpoint": sub["endpoint"] + "x"}
    p = provider(tmp_path)
    try:
        with pytest.raises(DestinationGone) as info:
            await p.send(message(sub))
    finally:
        await p.aclose()
    assert info.value.code == str(status)
    assert sub["endpoint"] not in str(info.value)


async def test_subscription_without_keys_is_gone(
    service: WebPushService, tmp_path: Path, vapid_key: str
) -> None:
    sub = service.subscribe()
    p = provider(tmp_path)
    try:
        with pytest.raises(DestinationGone) as info:
            await p.send(message({**sub, "keys": {"p256dh": "AAAA"}}))
    finally:
        await p.aclose()
    assert info.value.code == "invalid_subscription"
    assert service.sends == 0


async def test_too_large_is_permanent(
    service: WebPushService, tmp_path: Path, vapid_key: str
) -> None:
    sub = service.subscribe()
    p = provider(tmp_path)
    try:
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message(sub, body="x" * MAX_PLAINTEXT))
        assert info.value.code == "payload_too_large"
        service.max_body = 1000  # a stricter push service: its 413 is permanent too
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message(sub, body="x" * 2000))
    finally:
        await p.aclose()
    assert not isinstance(info.value, DestinationGone)
    assert info.value.code == "413"


async def test_the_largest_payload_that_fits_is_delivered(
    service: WebPushService, tmp_path: Path, vapid_key: str
) -> None:
    sub = service.subscribe()
    p = provider(tmp_path)
    probe = message(sub, body="")
    room = MAX_PLAINTEXT - len(p.plaintext(probe))
    try:
        await p.send(message(sub, body="x" * room))
    finally:
        await p.aclose()
    assert service.problems == []
    assert len(service.received[0]["plaintext"]) == MAX_PLAINTEXT


async def test_throttled_is_transient_with_retry_after(
    service: WebPushService, tmp_path: Path, vapid_key: str
) -> None:
    sub = service.subscribe()
    service.throttled.add(sub["endpoint"].rsplit("/", 1)[1])
    p = provider(tmp_path)
    try:
        with pytest.raises(TransientProviderError) as info:
            await p.send(message(sub))
    finally:
        await p.aclose()
    assert info.value.retry_after == 120


async def test_service_unavailable_is_transient(
    service: WebPushService, tmp_path: Path, vapid_key: str
) -> None:
    sub = service.subscribe()
    service.failing.add(sub["endpoint"].rsplit("/", 1)[1])
    p = provider(tmp_path)
    try:
        with pytest.raises(TransientProviderError) as info:
            await p.send(message(sub))
    finally:
        await p.aclose()
    assert info.value.code == "503"


async def test_vapid_key_other_than_the_subscription_key_is_refused(
    service: WebPushService, tmp_path: Path, vapid_key: str
) -> None:
    other_key = b64url(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    sub = service.subscribe(application_server_key=other_key)
    p = provider(tmp_path)
    try:
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message(sub))
    finally:
        await p.aclose()
    assert info.value.code == "401"
    assert "applicationServerKey" in service.problems[0]


def test_config_errors(tmp_path: Path, vapid_key: str) -> None:
    with pytest.raises(ConfigError):
        provider(tmp_path, subject="ops@shop.test")
    with pytest.raises(ConfigError):
        WebPushProvider(
            ProviderSettings(kind="webpush", subject="mailto:a@b.c"),
            ProviderContext(base_dir=tmp_path),
        )
