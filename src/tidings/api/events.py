"""Events: accepting them (structured, binary, batch CloudEvents: the work of ``POST /v1/events``,
served by :mod:`tidings.api.intake`), listing them and explaining what each caused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary

from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import json_input
from tidings.api.deps import Listed, Reader
from tidings.api.problems import ApiError, problem_body
from tidings.api.views import notifications_json
from tidings.clock import iso
from tidings.errors import InvalidInput, NotFound
from tidings.events.cloudevents import (
    Event,
    checked,
    parse_batch,
    parse_binary,
    parse_structured,
)
from tidings.events.poison import apart
from tidings.runtime.backlog import Backlog
from tidings.runtime.service import Service
from tidings.store import deliveries as delivery_rows
from tidings.store import events as event_rows
from tidings.strategy import outcomes

_BACKLOGS: WeakKeyDictionary[Service, Backlog] = WeakKeyDictionary()


@asynccontextmanager
async def _backlog(app: FastAPI) -> AsyncIterator[None]:
    """Keep the backlog estimate of the app's service fresh while the app serves."""
    svc: Service = app.state.service
    backlog = Backlog(svc.store, svc.clock, svc.metrics, svc.settings.intake.max_backlog)
    await backlog.start()
    _BACKLOGS[svc] = backlog
    try:
        yield
    finally:
        _BACKLOGS.pop(svc, None)
        await backlog.aclose()


def backlog_of(svc: Service) -> Backlog | None:
    """The backlog estimate of ``svc``'s intake (``None`` unless its app is being served)."""
    return _BACKLOGS.get(svc)


router = APIRouter(tags=["events"], lifespan=_backlog)
_STRUCTURED = {"application/cloudevents+json", "application/json"}
_BATCH = "application/cloudevents-batch+json"


def _decode(body: bytes) -> Any:
    return json_input.decode(body)


async def ingest(svc: Service, headers: Mapping[str, str], body: bytes) -> tuple[int, Any]:
    """Accept one event (structured or binary mode) or a batch: ``(status, JSON body)``.

    Transport-independent (:mod:`tidings.api.intake` serves the route with it). Raises
    :class:`ApiError` / :class:`InvalidInput` for the problem responses.
    """
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    raw, refused = json_input.decode_batch(body) if content_type == _BATCH else (None, {})
    count = len(raw) if isinstance(raw, list) else 1
    backlog = _BACKLOGS.get(svc)
    if backlog is not None and not await backlog.admit(count):
        raise ApiError(
            503,
            f"the backlog of undecided events is at its limit ({backlog.limit}): "
            "retry after the time in Retry-After; events already accepted are being decided",
            {"Retry-After": str(backlog.retry_after())},
        )
    try:
        if content_type == _BATCH:
            return await _batch(svc, raw, refused)
        return await _single(svc, headers, body, content_type)
    finally:
        if backlog is not None:
            backlog.settle(count)


async def _single(
    svc: Service, headers: Mapping[str, str], body: bytes, content_type: str
) -> tuple[int, Any]:
    if "ce-specversion" in headers:
        if content_type and "json" not in content_type:
            raise ApiError(415, "binary mode accepts only JSON data")
        event = checked(parse_binary(headers, _decode(body) if body else {}))
    elif content_type in _STRUCTURED or not content_type:
        event = checked(parse_structured(_decode(body)))
    else:
        raise ApiError(
            415,
            f"unsupported content type {content_type!r}: send "
            "application/cloudevents+json, application/json or " + _BATCH,
        )
    (result,) = await svc.accept([event])
    status = 200 if result.duplicate else 202
    return status, {
        "id": event.id,
        "source": event.source,
        "status": status,
        "duplicate": result.duplicate,
    }


async def _batch(svc: Service, raw: Any, refused: dict[int, InvalidInput]) -> tuple[int, Any]:
    parsed = parse_batch(raw, refused)
    valid: list[tuple[int, Event]] = []
    results: list[dict[str, Any] | None] = [None] * len(parsed)
    for index, item in enumerate(parsed):
        if isinstance(item, InvalidInput):
            results[index] = _refused(index, _item_id(raw[index]), item)
            continue
        try:
            valid.append((index, checked(item, f"/{index}")))
        except InvalidInput as exc:
            results[index] = _refused(index, item.id, exc)
    if valid:
        # a store that refuses one event fails that item alone (SPEC §2: per-item results)
        accepted = await apart([event for _, event in valid], svc.accept)
        for (index, event), result in zip(valid, accepted, strict=True):
            if isinstance(result, InvalidInput):
                results[index] = _refused(index, event.id, result)
                continue
            results[index] = {
                "index": index,
                "id": event.id,
                "status": 200 if result.duplicate else 202,
                "duplicate": result.duplicate,
            }
    status = 202 if all(r is not None and r["status"] == 202 for r in results) else 207
    return status, {"results": results}


def _refused(index: int, event_id: Any, exc: InvalidInput) -> dict[str, Any]:
    return {
        "index": index,
        "id": event_id,
        "status": exc.status,
        "duplicate": False,
        "problem": problem_body(exc),
    }


def _item_id(item: Any) -> Any:
    """The id of a refused item, if it is one to echo (text that encodes, or a number)."""
    found = item.get("id") if isinstance(item, dict) else None
    if isinstance(found, str):
        return found if json_input.is_text(found) else None
    return found if isinstance(found, (int, float)) and not isinstance(found, bool) else None


async def find_event(conn: AsyncConnection, event_id: str, source: str | None) -> Any:
    """The one event row a CloudEvents id (and source) or a row id names; 404/409 otherwise."""
    rows = await event_rows.find(conn, event_id, source)
    if not rows:
        raise NotFound(f"no event {event_id!r}" + (f" from {source!r}" if source else ""))
    if len(rows) > 1:
        raise ApiError(409, "several sources sent this id: add ?source=")
    return rows[0]


async def explain(
    conn: AsyncConnection, row: Any, now: float, *, with_notifications: bool = False
) -> dict[str, Any]:
    """An event and one decision per matched rule and recipient, with the reasons.

    ``with_notifications`` adds every notification with its deliveries and attempts (the
    dashboard's explain view); otherwise only their count.
    """
    made = await event_rows.decisions_of(conn, row.id)
    notes = await delivery_rows.list_notifications(
        conn, subscriber_id=None, event_pk=row.id, status=None, after=None, limit=1000
    )
    by_note = await _channel_outcomes(conn, [n.id for n in notes])
    story: dict[str, Any] = {
        **_event_json(row),
        "decisions": [
            {
                "rule": d.rule_id or None,
                "recipient": d.recipient_id,
                "outcome": d.outcome,
                "reason": outcomes.followed(
                    d.reason, d.outcome, [c for n in d.notification_ids for c in by_note.get(n, [])]
                ),
                **({"until": iso(d.until)} if d.until is not None else {}),
                "notification_ids": d.notification_ids,
            }
            for d in made
        ],
        "notification_count": len(notes),
    }
    if with_notifications:
        story["notifications"] = await notifications_json(conn, notes, now, with_attempts=True)
    return story


@router.get("/v1/events", summary="List events")
async def list_events(
    listed: Listed,
    type: str | None = None,
    subject: str | None = None,
    since: str | None = None,
) -> dict[str, Any]:
    """Accepted events, oldest first: of a ``type``, of a ``subject``, received ``since``."""
    found = await listed.rows(
        event_rows.listed, type=type, subject=subject, since=since_time(since)
    )
    return listed.answer(found, _event_json)


def _event_json(row: Any) -> dict[str, Any]:
    return {
        "pk": row.id,
        "event": row.envelope,
        "received_at": iso(row.received_at),
        "processed_at": iso(row.processed_at),
    }


def since_time(value: str | None) -> float | None:
    """``?since=`` as epoch seconds: an ISO 8601 time (UTC when it names no zone)."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(
            "`since` is an ISO 8601 time, e.g. 2026-12-02T08:00:00Z", "since", status=400
        ) from exc
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


async def _channel_outcomes(
    conn: AsyncConnection, notification_ids: list[str]
) -> dict[str, list[outcomes.ChannelOutcome]]:
    """What became of each notification's deliveries, for the reasons to follow."""
    found: dict[str, list[outcomes.ChannelOutcome]] = {}
    for d in await delivery_rows.deliveries_of(conn, notification_ids) if notification_ids else []:
        found.setdefault(d.notification_id, []).append(
            outcomes.ChannelOutcome(d.channel, d.status, bool(d.is_fallback), d.last_error)
        )
    return found


@router.get("/v1/events/{event_id}", summary="Explain what an event caused")
async def get_event(event_id: str, svc: Reader, source: str | None = None) -> dict[str, Any]:
    """The event and one decision per matched rule and recipient, with reasons."""
    async with svc.store.read() as conn:
        return await explain(conn, await find_event(conn, event_id, source), svc.clock.now())
