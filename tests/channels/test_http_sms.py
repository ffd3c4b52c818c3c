"""HttpSmsProvider against a small vendor API that checks its API key and JSON body."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fakes.tls import BackgroundServer, free_port
from tidings.channels.base import Destination, Message, ProviderContext
from tidings.channels.http_sms import HttpSmsProvider
from tidings.config import ProviderSettings
from tidings.errors import ConfigError, PermanentProviderError, TransientProviderError

PHONE = "+4915112345678"


class Vendor:
    """A JSON SMS API: ``X-Api-Key`` auth, ``{to, from, text, id}``, idempotent on ``id``."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200

    async def sms(self, request: Request) -> Response:
        if request.headers.get("x-api-key") != "k-123":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        body = json.loads(await request.body())
        if set(body) != {"to", "from", "text", "id"}:
            return JSONResponse({"error": "bad fields"}, status_code=422)
        if self.status != 200:
            return JSONResponse(
                {"error": f"cannot reach {body['to']}"},
                status_code=self.status,
                headers={"Retry-After": "7"},
            )
        self.received.append(body)
        return JSONResponse({"message_id": f"v-{body['id']}"})


@pytest.fixture
def vendor() -> Iterator[tuple[Vendor, str]]:
    state = Vendor()
    app = Starlette(routes=[Route("/v1/sms", state.sms, methods=["POST"])])
    with BackgroundServer(app) as server:
        yield state, f"{server.url}/v1/sms"


def provider(url: str, **options: Any) -> HttpSmsProvider:
    fields: dict[str, Any] = {
        "kind": "http",
        "url": url,
        "headers": {"X-Api-Key": "k-123"},
        "from": "Shop",
        **options,
    }
    return HttpSmsProvider(ProviderSettings(**fields), ProviderContext(base_dir=Path(), timeout=5))


def message(**overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "delivery_id": "dlv-9",
        "notification_id": "ntf-1",
        "channel": "sms",
        "destination": Destination(kind="phone", address=PHONE),
        "subscriber_id": "buyer-1",
        "title": "Shipped",
        "body": "Order 42 shipped with DHL.",
    }
    fields.update(overrides)
    return Message(**fields)


async def test_posts_json_with_headers(vendor: tuple[Vendor, str]) -> None:
    state, url = vendor
    p = provider(url)
    try:
        receipt = await p.send(message())
    finally:
        await p.aclose()
    assert receipt.provider_message_id == "v-dlv-9"
    assert state.received == [
        {"to": PHONE, "from": "Shop", "text": "Order 42 shipped with DHL.", "id": "dlv-9"}
    ]


async def test_unavailable_vendor_is_transient_so_the_channel_fails_over(
    vendor: tuple[Vendor, str],
) -> None:
    state, url = vendor
    state.status = 503
    p = provider(url)
    try:
        with pytest.raises(TransientProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.retry_after == 7
    assert PHONE not in str(info.value)


async def test_rejected_request_is_permanent(vendor: tuple[Vendor, str]) -> None:
    _, url = vendor
    p = provider(url, headers={"X-Api-Key": "wrong"})
    try:
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message())
    finally:
        await p.aclose()
    assert info.value.code == "401"


async def test_segment_limit_when_configured(vendor: tuple[Vendor, str]) -> None:
    state, url = vendor
    p = provider(url, max_segments=1)
    try:
        with pytest.raises(PermanentProviderError) as info:
            await p.send(message(body="x" * 161))
    finally:
        await p.aclose()
    assert info.value.code == "too_many_segments"
    assert state.received == []


async def test_unreachable_vendor_is_transient() -> None:
    p = provider(f"http://127.0.0.1:{free_port()}/v1/sms")
    try:
        with pytest.raises(TransientProviderError):
            await p.send(message())
    finally:
        await p.aclose()


def test_url_is_required() -> None:
    with pytest.raises(ConfigError):
        HttpSmsProvider(ProviderSettings(kind="http"), ProviderContext(base_dir=Path()))
