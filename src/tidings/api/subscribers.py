"""Subscribers, devices, webhook endpoints and preferences (SPEC §3)."""

from __future__ import annotations

import re
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tidings.api.deps import (
    Admin,
    Listed,
    Reader,
    parsed,
    reachable_url,
    read_json,
    reveals_pii,
    signing_secret,
)
from tidings.api.openapi import PREFERENCES_BODY, json_body
from tidings.api.views import profile_json
from tidings.errors import InvalidInput, NotFound
from tidings.store import privacy
from tidings.store import subscribers as rows
from tidings.strategy import preferences

router = APIRouter(tags=["subscribers"])
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_ID = r"^[A-Za-z0-9_.:@-]{1,256}$"


class Profile(BaseModel):
    """A subscriber's profile as PUT takes it."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=320)
    phone: str | None = None
    wechat_openid: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{6,64}$")
    """The buyer's openid in the shop's WeChat mini program (the ``wechat`` channel)."""
    locale: str | None = None
    timezone: str | None = None
    role: str | None = Field(None, max_length=32)
    attributes: dict[str, Any] = {}

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError("not an email address")
        return value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is not None and not _E164.match(value):
            raise ValueError("not an E.164 phone number (e.g. +8613800138000)")
        return value

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str | None) -> str | None:
        if value is not None and not _LOCALE.match(value):
            raise ValueError("not a BCP-47 language tag (e.g. zh-CN)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError("not an IANA time zone (e.g. Asia/Shanghai)") from exc
        return value


class WebPushKeys(BaseModel):
    """The browser's subscription keys."""

    p256dh: str = Field(min_length=16)
    auth: str = Field(min_length=8)


class WebPushSubscription(BaseModel):
    """A PushSubscription as the browser serialises it."""

    endpoint: str = Field(pattern=r"^https?://")
    keys: WebPushKeys


class DeviceIn(BaseModel):
    """A device registration."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["fcm", "apns", "webpush", "hms", "xiaomi", "oppo", "vivo"]
    """The push service the token belongs to (``hms``/``xiaomi``/``oppo``/``vivo`` in China)."""
    token: str | None = Field(None, min_length=8, max_length=4096)
    subscription: WebPushSubscription | None = None


class EndpointIn(BaseModel):
    """A webhook endpoint registration."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://", max_length=2048)
    secret: str | None = Field(None, pattern=r"^whsec_[A-Za-z0-9+/=]{16,}$")


def _check_id(subscriber_id: str) -> None:
    if not re.match(_ID, subscriber_id):
        raise InvalidInput("a subscriber id is 1-256 characters of A-Z a-z 0-9 _ . : @ -", "/id")


@router.put(
    "/v1/subscribers/{subscriber_id}",
    summary="Create or replace a subscriber",
    openapi_extra=json_body(Profile),
)
async def put_subscriber(
    subscriber_id: str, request: Request, response: Response, svc: Admin
) -> dict[str, Any]:
    """Create or replace the profile; PII is encrypted before it is stored."""
    _check_id(subscriber_id)
    profile = parsed(Profile, await read_json(request))
    now = svc.clock.now()
    created = await svc.store.write(
        lambda conn: rows.upsert(conn, svc.store.cipher, subscriber_id, profile.model_dump(), now)
    )
    response.status_code = 201 if created else 200
    async with svc.store.read() as conn:
        found = await rows.get(conn, svc.store.cipher, subscriber_id)
    assert found is not None
    return profile_json(found, reveals_pii(request))


@router.get("/v1/subscribers", summary="List subscribers")
async def list_subscribers(listed: Listed, request: Request) -> dict[str, Any]:
    """Subscriber ids, paged."""
    svc = listed.svc
    async with svc.store.read() as conn:
        ids, next_cursor = listed.page(await rows.list_ids(conn, listed.cursor, listed.fetch), str)
        found = [await rows.get(conn, svc.store.cipher, i) for i in ids]
    reveal = reveals_pii(request)
    items = [profile_json(profile, reveal) for profile in found if profile is not None]
    return {"items": items, "next_cursor": next_cursor}


@router.get("/v1/subscribers/{subscriber_id}", summary="A subscriber")
async def get_subscriber(subscriber_id: str, request: Request, svc: Reader) -> dict[str, Any]:
    """The profile, decrypted (name, email and phone masked without the ``pii`` scope)."""
    async with svc.store.read() as conn:
        found = await rows.get(conn, svc.store.cipher, subscriber_id)
    if found is None:
        raise NotFound(f"no subscriber {subscriber_id!r}")
    return profile_json(found, reveals_pii(request))


@router.delete("/v1/subscribers/{subscriber_id}", status_code=204, summary="Erase a subscriber")
async def delete_subscriber(subscriber_id: str, svc: Admin) -> Response:
    """Erase PII, devices, endpoints, inbox and preferences (the audit trail keeps ids), blank
    the content of their notifications and cancel whatever is still pending for them."""
    now = svc.clock.now()
    erased = await svc.store.write(lambda conn: privacy.erase(conn, subscriber_id, now))
    if not erased:
        raise NotFound(f"no subscriber {subscriber_id!r}")
    return Response(status_code=204)


@router.post(
    "/v1/subscribers/{subscriber_id}/devices",
    status_code=201,
    summary="Add a device",
    openapi_extra=json_body(DeviceIn),
)
async def add_device(subscriber_id: str, request: Request, svc: Admin) -> dict[str, Any]:
    """Register an FCM/APNs token or a Web Push subscription; ``{device_id}``."""
    _check_id(subscriber_id)
    device = parsed(DeviceIn, await read_json(request))
    keys = None
    if device.kind == "webpush":
        if device.subscription is None:
            raise InvalidInput("a webpush device needs `subscription`", "/subscription")
        token = device.subscription.endpoint
        keys = device.subscription.keys.model_dump()
    else:
        if not device.token:
            raise InvalidInput(f"a {device.kind} device needs `token`", "/token")
        token = device.token
    now = svc.clock.now()
    device_id = await svc.store.write(
        lambda conn: rows.add_device(
            conn, svc.store.cipher, subscriber_id, device.kind, token, keys, now
        )
    )
    return {"device_id": device_id}


@router.get("/v1/subscribers/{subscriber_id}/devices", summary="List devices")
async def list_devices(subscriber_id: str, svc: Reader) -> dict[str, Any]:
    """The subscriber's devices (tokens are never shown)."""
    async with svc.store.read() as conn:
        items = await rows.list_devices(conn, subscriber_id)
    return {"items": items, "next_cursor": None}


@router.delete(
    "/v1/subscribers/{subscriber_id}/devices/{device_id}",
    status_code=204,
    summary="Remove a device",
)
async def remove_device(subscriber_id: str, device_id: str, svc: Admin) -> Response:
    """Forget one device."""
    if not await svc.store.write(lambda conn: rows.remove_device(conn, subscriber_id, device_id)):
        raise NotFound(f"no device {device_id!r} for {subscriber_id!r}")
    return Response(status_code=204)


@router.post(
    "/v1/subscribers/{subscriber_id}/webhooks",
    status_code=201,
    summary="Add a webhook endpoint",
    openapi_extra=json_body(EndpointIn),
)
async def add_webhook(subscriber_id: str, request: Request, svc: Admin) -> dict[str, Any]:
    """Register an endpoint for the ``webhook`` channel; the signing secret is returned once."""
    _check_id(subscriber_id)
    endpoint = parsed(EndpointIn, await read_json(request))
    reachable_url(svc, endpoint.url)
    secret = signing_secret(endpoint.secret)
    now = svc.clock.now()
    endpoint_id = await svc.store.write(
        lambda conn: rows.add_endpoint(
            conn, svc.store.cipher, subscriber_id, endpoint.url, secret, now
        )
    )
    return {"endpoint_id": endpoint_id, "secret": secret}


@router.get("/v1/subscribers/{subscriber_id}/webhooks", summary="List webhook endpoints")
async def list_webhooks(subscriber_id: str, svc: Reader) -> dict[str, Any]:
    """The subscriber's webhook endpoints."""
    async with svc.store.read() as conn:
        items = await rows.list_endpoints(conn, svc.store.cipher, subscriber_id)
    return {"items": items, "next_cursor": None}


@router.get("/v1/subscribers/{subscriber_id}/preferences", summary="Preferences")
async def get_preferences(subscriber_id: str, svc: Reader) -> dict[str, Any]:
    """The stored preferences (empty for a subscriber with none)."""
    async with svc.store.read() as conn:
        found = await rows.get_preferences(conn, subscriber_id)
    if found is None:
        raise NotFound(f"no subscriber {subscriber_id!r}")
    return found


@router.put(
    "/v1/subscribers/{subscriber_id}/preferences",
    summary="Replace preferences",
    openapi_extra=PREFERENCES_BODY,
)
async def put_preferences(subscriber_id: str, request: Request, svc: Admin) -> dict[str, Any]:
    """Replace the preferences; switching off a ``required`` category is ``409``."""
    _check_id(subscriber_id)
    document = preferences.validate(await read_json(request), svc.settings.categories)
    now = svc.clock.now()
    await svc.store.write(lambda conn: rows.put_preferences(conn, subscriber_id, document, now))
    return document
