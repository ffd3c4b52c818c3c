"""Status callbacks to the shop (SPEC §11): ``POST/GET/DELETE /v1/callbacks``.

The sender loop runs while the app serves (:class:`~tidings.delivery.callbacks.CallbackSender`);
the outbox rows it sends are written where delivery outcomes are committed.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidings.api.deps import Admin, read_json
from tidings.channels.ssrf import ForbiddenDestination, check_url
from tidings.delivery.callbacks import CallbackSender, watch
from tidings.errors import InvalidInput, NotFound
from tidings.runtime.service import Service
from tidings.store import callbacks as rows
from tidings.store.callbacks import TYPES, StatusType


def _allow_private(svc: Service) -> bool:
    """Whether callback URLs may name private addresses (as the webhook providers allow)."""
    return any(
        bool(entry.option("allow_private_networks", False))
        for entry in svc.settings.providers.get("webhook") or []
    )


@asynccontextmanager
async def _sending(app: FastAPI) -> AsyncIterator[None]:
    """Send the outbox while the app serves."""
    svc: Service = app.state.service
    delivery = svc.settings.delivery
    sender = CallbackSender(
        svc.store,
        svc.clock,
        delivery.retry,
        timeout=float(delivery.timeout),
        allow_private=_allow_private(svc),
    )
    sender.start()
    try:
        yield
    finally:
        await sender.aclose()


router = APIRouter(tags=["callbacks"], lifespan=_sending)


class CallbackIn(BaseModel):
    """A callback registration."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://", max_length=2048)
    types: list[StatusType] = Field(default_factory=lambda: list(TYPES), min_length=1)
    secret: str | None = Field(None, pattern=r"^whsec_[A-Za-z0-9+/=]{16,}$")


def _parse(body: Any) -> CallbackIn:
    try:
        return CallbackIn.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(first["msg"], "/" + "/".join(str(p) for p in first["loc"])) from exc


@router.post("/v1/callbacks", status_code=201, summary="Register a status callback")
async def add_callback(request: Request, svc: Admin) -> dict[str, Any]:
    """POST every status change of ``types`` to ``url``; the signing secret is returned once."""
    callback = _parse(await read_json(request))
    try:
        check_url(callback.url, _allow_private(svc))
    except ForbiddenDestination as exc:
        raise InvalidInput(str(exc), "/url") from exc
    secret = callback.secret or "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    types = list(dict.fromkeys(callback.types))
    now = svc.clock.now()
    callback_id = await svc.store.write(
        lambda conn: rows.add(conn, svc.store.cipher, callback.url, secret, types, now)
    )
    await watch(svc.store).refresh()
    return {"id": callback_id, "secret": secret, "url": callback.url, "types": types}


@router.get("/v1/callbacks", summary="List status callbacks")
async def list_callbacks(svc: Admin) -> dict[str, Any]:
    """Every registered callback (without its secret)."""
    async with svc.store.read() as conn:
        items = await rows.listed(conn, svc.store.cipher)
    return {"items": items, "next_cursor": None}


@router.get("/v1/callbacks/{callback_id}", summary="A status callback")
async def get_callback(callback_id: str, svc: Admin) -> dict[str, Any]:
    """One callback, with how many of its messages are pending, sent and dead."""
    async with svc.store.read() as conn:
        found = await rows.get(conn, svc.store.cipher, callback_id)
    if found is None:
        raise NotFound(f"no callback {callback_id!r}")
    return found


@router.delete("/v1/callbacks/{callback_id}", status_code=204, summary="Remove a status callback")
async def remove_callback(callback_id: str, svc: Admin) -> Response:
    """Stop calling back (what was still to send is dropped)."""
    if not await svc.store.write(lambda conn: rows.remove(conn, callback_id)):
        raise NotFound(f"no callback {callback_id!r}")
    await watch(svc.store).refresh()
    return Response(status_code=204)
