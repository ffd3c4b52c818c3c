"""Broadcasts: one message to a topic, a segment or everyone (SPEC §10)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidings.api.deps import page, page_limit, read_json, require, service
from tidings.broadcasts import job as jobs
from tidings.clock import iso
from tidings.config import RuleSettings
from tidings.errors import ConfigError, InvalidInput, NotFound
from tidings.events.cloudevents import Event, parse_time
from tidings.ids import new_id
from tidings.runtime.broadcaster import cancel_pending
from tidings.store import audiences
from tidings.store import broadcasts as rows
from tidings.store import topics as topic_rows
from tidings.templates import Templates
from tidings.vocabulary import Channel, Priority

router = APIRouter(tags=["broadcasts"])


class Segment(BaseModel):
    """Subscribers whose profile matches every given field."""

    model_config = ConfigDict(extra="forbid")

    locale: str | None = None
    timezone: str | None = None
    role: str | None = None
    attributes: dict[str, Any] = {}


class Audience(BaseModel):
    """Exactly one of ``topic``, ``segment`` or ``all``."""

    model_config = ConfigDict(extra="forbid")

    topic: str | None = None
    segment: Segment | None = None
    all: Literal[True] | None = None


class BroadcastIn(BaseModel):
    """``POST /v1/broadcasts``."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    audience: Audience
    category: str
    channels: list[Channel] = Field(min_length=1)
    fallback: list[Channel] = []
    priority: Priority = "normal"
    template: str | None = None
    content: dict[str, dict[str, Any]] | None = None
    data: dict[str, Any] = {}
    send_at: str | None = None
    local_time: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    rate: float | None = Field(None, gt=0)
    ttl: str | None = None


def _parse(body: Any) -> BroadcastIn:
    try:
        return BroadcastIn.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "/" + "/".join(str(p) for p in first["loc"])
        raise InvalidInput(first["msg"], field) from exc


def _rule(svc: Any, broadcast_id: str, given: BroadcastIn) -> RuleSettings:
    settings = svc.settings
    if given.category not in settings.categories:
        raise InvalidInput(f"unknown category {given.category!r}", "/category")
    if (given.template is None) == (given.content is None):
        raise InvalidInput("give either `template` or `content`", "/template")
    if given.template is not None and given.template not in settings.templates:
        raise InvalidInput(f"unknown template {given.template!r}", "/template")
    for position, channel in enumerate(given.fallback):
        if channel in given.channels:
            raise InvalidInput(
                f"{channel!r} is both a channel and a fallback", f"/fallback/{position}"
            )
    if given.content is not None:
        _check_content(given.content, given.data, settings.default_locale)
    try:
        return RuleSettings.model_validate(
            {
                "id": f"broadcast:{broadcast_id}",
                "on": jobs.EVENT_TYPE,
                "to": "audience",
                "category": given.category,
                "priority": given.priority,
                "channels": given.channels,
                "fallback": given.fallback,
                "template": given.template or jobs.INLINE,
                "ttl": given.ttl,
            }
        )
    except ValidationError as exc:
        raise InvalidInput(exc.errors()[0]["msg"], "/ttl") from exc


def _check_content(content: dict[str, dict[str, Any]], data: dict[str, Any], default: str) -> None:
    if not content:
        raise InvalidInput("`content` needs at least one locale", "/content")
    for locale, variant in content.items():
        for key in ("title", "body"):
            if not isinstance(variant.get(key), str):
                raise InvalidInput(f"missing {key!r}", f"/content/{locale}/{key}")
    try:
        Templates({jobs.INLINE: content}, default).check(jobs.INLINE, data)
    except ConfigError as exc:
        raise InvalidInput(str(exc), "/content") from exc


async def _check_audience(svc: Any, audience: Audience) -> dict[str, Any]:
    given = [k for k in ("topic", "segment", "all") if getattr(audience, k) is not None]
    if len(given) != 1:
        raise InvalidInput("give exactly one of topic, segment or all", "/audience")
    stored = audience.model_dump(exclude_none=True)
    async with svc.store.read() as conn:
        if audience.topic is not None:
            if await topic_rows.get(conn, audience.topic) is None:
                raise InvalidInput(f"unknown topic {audience.topic!r}", "/audience/topic")
            if not await audiences.any_member(conn, stored):
                raise InvalidInput(
                    f"topic {audience.topic!r} has no subscribers", "/audience/topic"
                )
        elif not await audiences.any_member(conn, stored):
            where = "/audience/segment" if audience.segment is not None else "/audience/all"
            raise InvalidInput("the audience is empty: no subscriber matches", where)
    return stored


async def _progress(conn: Any, found: list[Any]) -> dict[str, dict[str, int]]:
    """Recipients by decision outcome, and deliveries that failed for good, per broadcast."""
    counts = await rows.counts(conn, [r.id for r in found])
    for row in found:
        counts[row.id]["failed"] = await rows.failed(conn, row.event_pk, rows.rule_of(row))
    return counts


def broadcast_json(
    row: Any, counts: dict[str, int], rules: Sequence[RuleSettings] = ()
) -> dict[str, Any]:
    """A broadcast as the API and the dashboard show it (``rules``: the configured ones, for
    a topic rule's broadcast)."""
    message = row.message if isinstance(row.message, dict) else {}
    rule = message.get("rule") or next(
        (r.model_dump(mode="json") for r in rules if r.id == message.get("rule_id")), {}
    )
    return {
        "id": row.id,
        "status": row.status,
        "audience": row.audience,
        "rule_id": row.rule_id,
        "category": rule.get("category"),
        "channels": rule.get("channels"),
        "local_time": message.get("local_time"),
        "rate": row.rate,
        "audience_size": row.audience_size,
        "counts": {"sent": 0, "deferred": 0, "suppressed": 0, "failed": 0, **counts},
        "send_at": iso(row.send_at),
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
    }


@router.post("/v1/broadcasts", status_code=202, summary="Start a broadcast")
async def create_broadcast(
    request: Request, response: Response, _: str = Depends(require("admin"))
) -> dict[str, Any]:
    """Send one message to an audience; idempotent on ``id``."""
    given = _parse(await read_json(request))
    svc = service(request)
    broadcast_id = given.id or new_id()
    async with svc.store.read() as conn:
        existing = await rows.get(conn, broadcast_id)
    if existing is not None:
        response.status_code = 200
        return {"id": existing.id, "status": existing.status, "duplicate": True}
    rule = _rule(svc, broadcast_id, given)
    audience = await _check_audience(svc, given.audience)
    now = svc.clock.now()
    send_at = None if given.send_at is None else parse_time(given.send_at, "send_at")
    event = Event(broadcast_id, jobs.SOURCE, jobs.EVENT_TYPE, given.data)
    event_pk = new_id()
    row = rows.new_row(
        broadcast_id,
        event_pk,
        audience,
        jobs.message(rule, given.content, given.local_time),
        now,
        send_at=send_at,
        rate=given.rate,
    )

    raced = await svc.store.write(lambda conn: rows.create(conn, row, event))
    if raced is not None:
        response.status_code = 200
        return {"id": raced.id, "status": raced.status, "duplicate": True}
    _wake(svc)
    return {"id": broadcast_id, "status": row["status"]}


def _wake(svc: Any) -> None:
    broadcaster = getattr(svc, "broadcaster", None)
    if broadcaster is not None:
        broadcaster.wake()


@router.get("/v1/broadcasts", summary="List broadcasts")
async def list_broadcasts(
    request: Request,
    cursor: str | None = None,
    limit: int | None = None,
    _: str = Depends(require("read")),
) -> dict[str, Any]:
    """Broadcasts with their progress, newest id first."""
    size = page_limit(limit, 20, 100)
    svc = service(request)
    async with svc.store.read() as conn:
        found, next_cursor = page(await rows.list_rows(conn, cursor, size + 1), size)
        counts = await _progress(conn, found)
    return {
        "items": [broadcast_json(r, counts[r.id], svc.settings.rules) for r in found],
        "next_cursor": next_cursor,
    }


@router.get("/v1/broadcasts/{broadcast_id}", summary="A broadcast and its progress")
async def get_broadcast(
    broadcast_id: str, request: Request, _: str = Depends(require("read"))
) -> dict[str, Any]:
    """Status, audience size and counts of recipients by outcome."""
    svc = service(request)
    async with svc.store.read() as conn:
        row = await rows.get(conn, broadcast_id)
        if row is None:
            raise NotFound(f"no broadcast {broadcast_id!r}")
        counts = await _progress(conn, [row])
    return broadcast_json(row, counts[broadcast_id], svc.settings.rules)


@router.post("/v1/broadcasts/{broadcast_id}/{action}", summary="Pause, resume or cancel")
async def change_broadcast(
    broadcast_id: str,
    action: Literal["pause", "resume", "cancel"],
    request: Request,
    _: str = Depends(require("admin")),
) -> dict[str, Any]:
    """Pause (no new chunk starts), resume, or cancel (deferred messages cancelled too)."""
    svc = service(request)
    now = svc.clock.now()
    row, problem = await svc.store.write(
        lambda conn: rows.change_status(conn, broadcast_id, action, now)
    )
    if row is None:
        raise NotFound(f"no broadcast {broadcast_id!r}")
    if problem is not None:
        raise InvalidInput(problem, "/status", status=409)
    if action == "cancel":
        while True:
            cancelled = await svc.store.write(lambda conn: cancel_pending(conn, row, now))
            svc.metrics.count_recipients(cancelled.settled)
            if cancelled.found < 500:
                break
    if action == "resume":
        _wake(svc)
    async with svc.store.read() as conn:
        counts = await _progress(conn, [row])
    return broadcast_json(row, counts[broadcast_id], svc.settings.rules)


@router.get(
    "/v1/broadcasts/{broadcast_id}/recipients/{subscriber_id}", summary="A recipient's decision"
)
async def recipient(
    broadcast_id: str, subscriber_id: str, request: Request, _: str = Depends(require("read"))
) -> dict[str, Any]:
    """What the broadcast decided for one subscriber, and why."""
    async with service(request).store.read() as conn:
        if await rows.get(conn, broadcast_id) is None:
            raise NotFound(f"no broadcast {broadcast_id!r}")
        found = await rows.recipient(conn, broadcast_id, subscriber_id)
    if found is None:
        raise NotFound(f"broadcast {broadcast_id!r} has not decided for {subscriber_id!r}")
    return {
        "broadcast_id": broadcast_id,
        "subscriber_id": subscriber_id,
        "outcome": found.outcome,
        "reason": found.reason,
        "until": iso(found.until),
        "notification_id": found.notification_id,
        "decided_at": iso(found.created_at),
    }
