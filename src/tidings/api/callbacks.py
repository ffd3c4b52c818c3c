"""Status callbacks to the shop (SPEC §11): ``POST/GET/DELETE /v1/callbacks``.

The sender loop runs while the app serves (:class:`~tidings.delivery.callbacks.CallbackSender`);
the outbox rows it sends are written where delivery outcomes are committed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tidings.api.deps import (
    Admin,
    parsed,
    private_allowed,
    reachable_url,
    read_json,
    signing_secret,
)
from tidings.delivery.callbacks import CallbackSender, watch
from tidings.errors import NotFound
from tidings.runtime.service import Service
from tidings.store import callbacks as rows
from tidings.store.callbacks import TYPES, StatusType


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
        allow_private=private_allowed(svc),
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


@router.post("/v1/callbacks", status_code=201, summary="Register a status callback")
async def add_callback(request: Request, svc: Admin) -> dict[str, Any]:
    """POST every status change of ``types`` to ``url``; the signing secret is returned once."""
    callback = parsed(CallbackIn, await read_json(request))
    reachable_url(svc, callback.url)
    secret = signing_secret(callback.secret)
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
