"""WebhookProvider against a local receiver that verifies signatures with ``standardwebhooks``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from fakes.webhook_receiver import Reply, WebhookReceiver, new_secret
from tidings.channels.base import Destination, Message, ProviderContext
from tidings.channels.ssrf import ForbiddenDestination
from tidings.channels.webhook import WebhookProvider, secret_key, sign
from tidings.config import ProviderSettings
from tidings.errors import DestinationGone, PermanentProviderError, TransientProviderError


def message(url: str, secret: str | None, **overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "delivery_id": "dlv-webhook-1",
        "notification_id": "ntf-9",
        "channel": "webhook",
        "destination": Destination(kind="webhook", address=url, secret=secret),
        "subscriber_id": "seller-7",
        "title": "3 new paid orders",
        "body": "Orders o-1, o-2, o-3 were paid.",
        "event_id": "evt-123",
        "event_type": "order.paid",
        "subject": "o-1",
        "category": "order_updates",
        "data": {"order_id": "o-1", "amount": "12.50", "currency": "USD"},
    }
    fields.update(overrides)
    return Message(**fields)


def provider(timeout: float = 5.0, **options: Any) -> WebhookProvider:
    settings = ProviderSettings.model_validate({"kind": "webhook", **options})
    return WebhookProvider(settings, ProviderContext(timeout=timeout))


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookProvider]:
    instance = provider(allow_private_networks=True)
    yield instance
    await instance.aclose()


async def test_signed_payload_verifies(receiver: WebhookReceiver, webhook: WebhookProvider) -> None:
    receipt = await webhook.send(message(receiver.url, receiver.secret))
    assert receipt.status == "delivered"
    assert receipt.provider_message_id == "dlv-webhook-1"
    [got] = receiver.deliveries
    assert got.verified and got.status == 200
    assert got.webhook_id == "dlv-webhook-1"
    assert got.headers["content-type"] == "application/json"
    assert got.payload["type"] == "order.paid"
    assert got.payload["timestamp"].endswith("Z")
    assert got.payload["data"] == {
        "order_id": "o-1",
        "amount": "12.50",
        "currency": "USD",
        "notification": {
            "id": "ntf-9",
            "title": "3 new paid orders",
            "body": "Orders o-1, o-2, o-3 were paid.",
            "category": "order_updates",
        },
        "event_id": "evt-123",
        "subject": "o-1",
    }


async def test_utf8_payload_verifies(receiver: WebhookReceiver, webhook: WebhookProvider) -> None:
    await webhook.send(message(receiver.url, receiver.secret, title="支付成功", body="订单已支付"))
    [got] = receiver.deliveries
    assert got.verified
    assert got.payload["data"]["notification"]["title"] == "支付成功"


async def test_wrong_secret_fails_verification(
    receiver: WebhookReceiver, webhook: WebhookProvider
) -> None:
    # the receiver holds another key: it must refuse, proving it really checks
    with pytest.raises(PermanentProviderError) as caught:
        await webhook.send(message(receiver.url, new_secret()))
    assert caught.value.code == "401"
    assert [d.verified for d in receiver.deliveries] == [False]


def test_signature_matches_the_reference_library() -> None:
    from datetime import UTC, datetime

    from standardwebhooks import Webhook

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"type":"order.paid"}'
    expected = Webhook(secret).sign(
        "msg_1", datetime.fromtimestamp(1_700_000_000, UTC), body.decode()
    )
    assert sign(secret_key(secret), "msg_1", 1_700_000_000, body) == expected


async def test_retries_carry_the_same_webhook_id(
    receiver: WebhookReceiver, webhook: WebhookProvider
) -> None:
    receiver.script(Reply(500), Reply(500), Reply(200))
    outcomes: list[str] = []
    for _ in range(3):
        try:
            await webhook.send(message(receiver.url, receiver.secret))
            outcomes.append("delivered")
        except TransientProviderError as exc:
            outcomes.append(f"transient {exc.code}")
    assert outcomes == ["transient 500", "transient 500", "delivered"]
    assert receiver.ids == ["dlv-webhook-1"] * 3
    assert all(d.verified for d in receiver.deliveries)


async def test_429_carries_retry_after(receiver: WebhookReceiver, webhook: WebhookProvider) -> None:
    receiver.script(Reply(429, headers={"Retry-After": "17"}))
    with pytest.raises(TransientProviderError) as caught:
        await webhook.send(message(receiver.url, receiver.secret))
    assert caught.value.retry_after == 17.0
    assert caught.value.code == "429"


async def test_503_carries_retry_after(receiver: WebhookReceiver, webhook: WebhookProvider) -> None:
    receiver.script(Reply(503, headers={"Retry-After": "5"}))
    with pytest.raises(TransientProviderError) as caught:
        await webhook.send(message(receiver.url, receiver.secret))
    assert caught.value.retry_after == 5.0


async def test_410_means_gone(receiver: WebhookReceiver, webhook: WebhookProvider) -> None:
    receiver.script(Reply(410))
    with pytest.raises(DestinationGone):
        await webhook.send(message(receiver.url, receiver.secret))


@pytest.mark.parametrize("status", [400, 404, 413])
async def test_other_4xx_are_permanent(
    receiver: WebhookReceiver, webhook: WebhookProvider, status: int
) -> None:
    receiver.script(Reply(status))
    with pytest.raises(PermanentProviderError) as caught:
        await webhook.send(message(receiver.url, receiver.secret))
    assert not isinstance(caught.value, DestinationGone)
    assert caught.value.code == str(status)


async def test_redirects_are_not_followed(
    receiver: WebhookReceiver, webhook: WebhookProvider
) -> None:
    receiver.script(Reply(307, headers={"Location": "http://169.254.169.254/"}))
    with pytest.raises(PermanentProviderError):
        await webhook.send(message(receiver.url, receiver.secret))
    assert len(receiver.deliveries) == 1


async def test_hanging_endpoint_times_out(receiver: WebhookReceiver) -> None:
    receiver.script(Reply(200, delay=1.5))
    slow = provider(timeout=0.3, allow_private_networks=True)
    try:
        with pytest.raises(TransientProviderError) as caught:
            await slow.send(message(receiver.url, receiver.secret))
    finally:
        await slow.aclose()
    assert caught.value.code == "timeout"


async def test_connection_refused_is_transient(receiver: WebhookReceiver) -> None:
    url = receiver.url
    receiver.stop()
    webhook = provider(allow_private_networks=True)
    try:
        with pytest.raises(TransientProviderError):
            await webhook.send(message(url, receiver.secret))
    finally:
        await webhook.aclose()


async def test_keep_alive_connection_is_reused(
    receiver: WebhookReceiver, webhook: WebhookProvider
) -> None:
    for index in range(5):
        await webhook.send(message(receiver.url, receiver.secret, delivery_id=f"k-{index}"))
    assert len(receiver.deliveries) == 5
    assert len({d.peer for d in receiver.deliveries}) == 1  # one TCP connection


async def test_requests_per_endpoint_are_limited(receiver: WebhookReceiver) -> None:
    receiver.script(*[Reply(200, delay=0.1)] * 8)
    webhook = provider(allow_private_networks=True, per_endpoint_concurrency=2)
    try:
        await asyncio.gather(
            *(
                webhook.send(message(receiver.url, receiver.secret, delivery_id=f"p-{index}"))
                for index in range(8)
            )
        )
    finally:
        await webhook.aclose()
    assert len(receiver.deliveries) == 8
    assert all(d.verified for d in receiver.deliveries)
    assert receiver.max_in_flight == 2


async def test_loopback_refused_unless_allowed(receiver: WebhookReceiver) -> None:
    strict = provider()  # allow_private_networks defaults to false
    try:
        with pytest.raises(ForbiddenDestination):
            await strict.send(message(receiver.url, receiver.secret))
        localhost_url = receiver.url.replace("127.0.0.1", "localhost")
        with pytest.raises(ForbiddenDestination):
            await strict.send(message(localhost_url, receiver.secret))
    finally:
        await strict.aclose()
    assert receiver.deliveries == []  # refused before any connection


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.8/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fd00::1]/hook",
        "ftp://8.8.8.8/hook",
    ],
)
async def test_private_targets_refused_before_sending(url: str) -> None:
    strict = provider()
    try:
        with pytest.raises(ForbiddenDestination):
            await strict.send(message(url, new_secret()))
    finally:
        await strict.aclose()


async def test_missing_or_bad_secret_is_permanent(receiver: WebhookReceiver) -> None:
    webhook = provider(allow_private_networks=True)
    try:
        for secret in (None, "whsec_not*base64!"):
            with pytest.raises(PermanentProviderError) as caught:
                await webhook.send(message(receiver.url, secret))
            assert caught.value.code == "secret"
    finally:
        await webhook.aclose()
    assert receiver.deliveries == []


async def test_body_is_compact_json(receiver: WebhookReceiver, webhook: WebhookProvider) -> None:
    await webhook.send(message(receiver.url, receiver.secret))
    body = receiver.deliveries[0].body
    assert json.loads(body) == receiver.deliveries[0].payload
    assert b": " not in body
