"""Topics: named audiences and their subscribers (SPEC §10); followed from the inbox too."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidings.api.deps import page, page_limit, read_json, require, service
from tidings.api.inbox import subscriber
from tidings.errors import InvalidInput, NotFound
from tidings.store import topics as rows
from tidings.strategy.topics import KEY, addressed

router = APIRouter(tags=["topics"])
_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,256}$")
MAX_FOLLOWED = 1000
"""Topics one subscriber may follow with its inbox token."""


class TopicIn(BaseModel):
    """A topic as PUT takes it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200)
    description: str = Field("", max_length=2000)


class MembersIn(BaseModel):
    """Subscribers to add to and remove from a topic, up to 10,000 ids each a call."""

    model_config = ConfigDict(extra="forbid")

    add: list[str] = Field([], max_length=rows.MAX_IDS)
    remove: list[str] = Field([], max_length=rows.MAX_IDS)


def _parse(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "/" + "/".join(str(p) for p in first["loc"][:1])
        raise InvalidInput(first["msg"], field) from exc


def check_key(key: str) -> None:
    """``422`` for a key that is not a topic key."""
    if not KEY.match(key):
        raise InvalidInput("a topic key is 1-256 characters of A-Z a-z 0-9 _ . : @ -", "/key")


async def _known(request: Request, key: str) -> None:
    async with service(request).store.read() as conn:
        if await rows.get(conn, key) is None:
            raise NotFound(f"no topic {key!r}")


@router.put("/v1/topics/{key}", summary="Create or update a topic")
async def put_topic(
    key: str, request: Request, response: Response, _: str = Depends(require("admin"))
) -> dict[str, Any]:
    """Create or update a topic's name and description."""
    check_key(key)
    topic: TopicIn = _parse(TopicIn, await read_json(request))
    svc = service(request)
    now = svc.clock.now()
    found, created = await svc.store.write(
        lambda conn: rows.put(conn, key, topic.name or key, topic.description, now)
    )
    response.status_code = 201 if created else 200
    return dict(found)


@router.get("/v1/topics", summary="List topics")
async def list_topics(
    request: Request,
    cursor: str | None = None,
    limit: int | None = None,
    _: str = Depends(require("read")),
) -> dict[str, Any]:
    """Topics in key order."""
    size = page_limit(limit)
    async with service(request).store.read() as conn:
        found, next_cursor = page(
            await rows.list_topics(conn, cursor, size + 1), size, lambda r: str(r.key)
        )
    return {"items": [rows.topic_json(r) for r in found], "next_cursor": next_cursor}


@router.get("/v1/topics/{key}", summary="A topic")
async def get_topic(
    key: str, request: Request, _: str = Depends(require("read"))
) -> dict[str, Any]:
    """A topic with how many subscribers follow it."""
    async with service(request).store.read() as conn:
        found = await rows.get(conn, key)
        if found is None:
            raise NotFound(f"no topic {key!r}")
        found["subscribers"] = await rows.count_members(conn, key)
    return found


@router.delete("/v1/topics/{key}", status_code=204, summary="Delete a topic")
async def delete_topic(key: str, request: Request, _: str = Depends(require("admin"))) -> Response:
    """Delete a topic and who follows it."""
    if not await service(request).store.write(lambda conn: rows.remove(conn, key)):
        raise NotFound(f"no topic {key!r}")
    return Response(status_code=204)


@router.post("/v1/topics/{key}/subscribers", summary="Add and remove subscribers")
async def change_members(
    key: str, request: Request, _: str = Depends(require("admin"))
) -> dict[str, Any]:
    """``{"add": [ids…], "remove": [ids…]}``, up to 10,000 ids each."""
    body = await read_json(request)
    for name in ("add", "remove"):
        value = body.get(name) if isinstance(body, dict) else None
        if isinstance(value, list) and len(value) > rows.MAX_IDS:
            raise InvalidInput(
                f"at most {rows.MAX_IDS} ids a call ({len(value)} given)", f"/{name}"
            )
    change: MembersIn = _parse(MembersIn, body)
    for name, ids in (("add", change.add), ("remove", change.remove)):
        for index, subscriber_id in enumerate(ids):
            if not _ID.match(subscriber_id):
                raise InvalidInput("not a subscriber id", f"/{name}/{index}")
    await _known(request, key)
    svc = service(request)
    now = svc.clock.now()

    async def apply(conn: Any) -> None:
        await rows.add_members(conn, key, change.add, now)
        await rows.remove_members(conn, key, change.remove)

    await svc.store.write(apply)
    return {"topic": key, "added": len(set(change.add)), "removed": len(set(change.remove))}


@router.get("/v1/topics/{key}/subscribers", summary="A topic's subscribers")
async def list_members(
    key: str,
    request: Request,
    cursor: str | None = None,
    limit: int | None = None,
    _: str = Depends(require("read")),
) -> dict[str, Any]:
    """Subscriber ids following the topic, in id order."""
    await _known(request, key)
    size = page_limit(limit, 100, 1000)
    async with service(request).store.read() as conn:
        found, next_cursor = page(await rows.members(conn, key, cursor, size + 1), size, str)
    return {"items": [{"subscriber_id": i} for i in found], "next_cursor": next_cursor}


@router.get("/v1/subscribers/{subscriber_id}/topics", summary="A subscriber's topics")
async def topics_of(
    subscriber_id: str,
    request: Request,
    cursor: str | None = None,
    limit: int | None = None,
    _: str = Depends(require("read")),
) -> dict[str, Any]:
    """The topic keys the subscriber follows."""
    return await _topics_page(request, subscriber_id, cursor, limit)


async def _topics_page(
    request: Request, subscriber_id: str, cursor: str | None, limit: int | None
) -> dict[str, Any]:
    size = page_limit(limit, 100, 1000)
    async with service(request).store.read() as conn:
        keys = await rows.of_subscriber(conn, subscriber_id, cursor, size + 1)
    found, next_cursor = page(keys, size, str)
    return {"items": [{"key": k} for k in found], "next_cursor": next_cursor}


@router.get("/v1/inbox/topics", summary="The topics this subscriber follows")
async def my_topics(
    request: Request,
    cursor: str | None = None,
    limit: int | None = None,
    me: str = Depends(subscriber),
) -> dict[str, Any]:
    """The inbox token's subscriber's topics."""
    return await _topics_page(request, me, cursor, limit)


@router.put("/v1/inbox/topics/{key}", summary="Follow a topic")
async def follow(key: str, request: Request, me: str = Depends(subscriber)) -> dict[str, Any]:
    """Follow ``key`` ("notify me when it is back in stock").

    A subscriber follows a topic the shop made, or one a topic rule addresses (``to:
    topic:product.{sku}.restock`` lets it follow ``product.sku-1.restock`` before anyone made
    it: the topic is made then); any other key is ``404``. At most
    :data:`MAX_FOLLOWED` topics a subscriber (``409`` past it).
    """
    check_key(key)
    svc = service(request)
    now = svc.clock.now()
    address = addressed(svc.settings.rules, key)

    async def apply(conn: Any) -> None:
        if await rows.follows(conn, key, me):
            return
        if await rows.get(conn, key) is None:
            if address is None:
                raise InvalidInput(
                    f"no topic {key!r}: a subscriber follows a topic the shop made, or one a"
                    " topic rule addresses",
                    "/key",
                    status=404,
                )
            await rows.ensure(conn, key, now)
        if await rows.count_followed(conn, me) >= MAX_FOLLOWED:
            raise InvalidInput(
                f"a subscriber follows at most {MAX_FOLLOWED} topics", "/key", status=409
            )
        await rows.add_members(conn, key, [me], now)

    await svc.store.write(apply)
    return {"key": key, "following": True}


@router.delete("/v1/inbox/topics/{key}", summary="Unfollow a topic")
async def unfollow(key: str, request: Request, me: str = Depends(subscriber)) -> dict[str, Any]:
    """Stop following ``key``."""
    await service(request).store.write(lambda conn: rows.remove_members(conn, key, [me]))
    return {"key": key, "following": False}
