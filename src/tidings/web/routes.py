"""The operator's dashboard (``/``), the inbox widget example (``/widget``) and their data.

The pages are hand-written static files; the data comes from the public API plus a few
read-only ``/v1/admin/...`` views that gather what one screen needs in one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from sqlalchemy import func, select, text
from starlette.responses import FileResponse, Response

from tidings import __version__
from tidings.api.admin import dead_letter_json
from tidings.api.deps import Reader, page_limit, reveals_pii
from tidings.api.events import backlog_of, find_event
from tidings.api.events import explain as explain_event
from tidings.api.views import notifications_json, profile_json
from tidings.clock import iso
from tidings.errors import NotFound
from tidings.runtime.service import Service
from tidings.store import dead_letters as dead_letter_rows
from tidings.store import deliveries as delivery_rows
from tidings.store import inbox as inbox_rows
from tidings.store import subscribers as subscriber_rows
from tidings.store.tables import dead_letters, decisions, deliveries, events, notifications
from tidings.web.sampler import Sampler

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
_ASSET = re.compile(r"^[a-z0-9_-]+\.(js|css|svg)$")
_MEDIA = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
# the pages load nothing from elsewhere and run no inline script
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_COUNT_TTL = 2.0  # the deliveries-by-status count scans the table: not more often than this


@contextlib.asynccontextmanager
async def _sampling(app: FastAPI) -> AsyncIterator[None]:
    """Sample the metrics once a second while the app runs, so the charts have a history."""
    svc: Service = app.state.service
    sampler = _sampler_of(app, svc)

    async def loop() -> None:
        while True:
            try:
                sampler.sample(time.time())
            except Exception:  # noqa: BLE001 - a chart gap is better than a dead sampler
                log.exception("dashboard sampling failed")
            await asyncio.sleep(1.0)

    task = asyncio.create_task(loop(), name="dashboard-sampler")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


router = APIRouter(lifespan=_sampling)
admin = APIRouter(prefix="/v1/admin", tags=["dashboard"])


def _sampler_of(app: Any, svc: Service) -> Sampler:
    found: Sampler | None = getattr(app.state, "dashboard_sampler", None)
    if found is None or found.metrics is not svc.metrics:
        found = Sampler(svc.metrics)
        app.state.dashboard_sampler = found
    return found


def _page(name: str) -> Response:
    return FileResponse(
        STATIC / name,
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": _CSP,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


@router.get("/", include_in_schema=False)
async def dashboard() -> Response:
    """The operator's dashboard."""
    return _page("index.html")


@router.get("/widget", include_in_schema=False)
async def widget() -> Response:
    """The inbox widget, embedded in an example shop page."""
    return _page("widget.html")


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    """A script, style sheet or icon of the pages."""
    match = _ASSET.match(name)
    path = STATIC / name
    if match is None or not path.is_file():
        raise NotFound(f"no asset {name!r}")
    return FileResponse(
        path,
        media_type=_MEDIA[match.group(1)],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


# --- the dashboard's data ------------------------------------------------------------------


@admin.get("/overview", summary="Live figures for the dashboard")
async def overview(request: Request, svc: Reader, since: float | None = None) -> dict[str, Any]:
    """Rates and latencies per second, deliveries by status, queues, providers, console."""
    sampler = _sampler_of(request.app, svc)
    wall = time.time()
    if sampler.last_at is None or wall - sampler.last_at >= 0.9:
        sampler.sample(wall)  # also keeps the series going where no lifespan sampler runs
    async with svc.store.read() as conn:
        waiting = await dead_letter_rows.waiting(conn)
        by_status = await _deliveries_by_status(request.app, conn, wall)
        sent = await _console_sends(conn) if _has_console(svc) else []
    return {
        "now": wall,
        "version": __version__,
        "role": svc.role,
        "uptime": max(0.0, svc.clock.now() - svc.started_at),
        "series": sampler.series(since),
        "deliveries": by_status,
        "queues": _queue_depths(svc),
        "backlog": _backlog(svc),
        "providers": svc.dispatcher.providers(),
        "dead_letters": int(waiting),
        "console": sent,
    }


def _has_console(svc: Service) -> bool:
    return any(p["kind"] == "console" for p in svc.dispatcher.providers())


async def _console_sends(conn: Any, limit: int = 20) -> list[dict[str, Any]]:
    """What the ``console`` provider recorded last, newest first, from the store: every
    process of the service sends (``--processes N``), and in scale-out the workers do."""
    d, n = deliveries, notifications
    query = (
        select(d.c.id, d.c.channel, d.c.destination_kind, n.c.subscriber_id, n.c.content)
        .select_from(d.join(n, n.c.id == d.c.notification_id))
        .where(d.c.provider == "console", d.c.status.in_(["sent", "delivered"]))
        .limit(limit)
    )
    # SQLite walks the table backwards from its newest row and stops at the limit; elsewhere
    # the creation time orders them
    order = (
        text("deliveries.rowid DESC") if conn.dialect.name == "sqlite" else d.c.created_at.desc()
    )
    rows = await conn.execute(query.order_by(order))
    return [
        {
            "delivery_id": row.id,
            "channel": row.channel,
            "destination": row.destination_kind,
            "subscriber_id": row.subscriber_id,
            "title": str((row.content or {}).get("title", "")),
            "body": str((row.content or {}).get("body", "")),
        }
        for row in rows
    ]


def _queue_depths(svc: Service) -> dict[str, int]:
    """Tickets waiting per lane, in every process of the service (each holds its own lanes)."""
    depths = svc.broker.depth()
    metrics = svc.metrics
    for lane, depth in depths.items():
        metrics.child(metrics.queue_depth, lane).set(depth)
    if metrics.shared_dir is None:
        return {str(lane): depth for lane, depth in depths.items()}
    family = metrics.families().get("tidings_queue_depth")
    found: dict[str, int] = dict.fromkeys(depths, 0)
    for sample in family.samples if family is not None else ():
        found[sample.labels["lane"]] = round(sample.value)
    return found


def _backlog(svc: Service) -> dict[str, Any] | None:
    """Accepted events waiting for a decision (all processes), the oldest one's age, the limit."""
    backlog = backlog_of(svc)
    if backlog is None:
        return None
    return {"events": backlog.undecided, "age_seconds": backlog.age(), "limit": backlog.limit}


async def _deliveries_by_status(app: Any, conn: Any, wall: float) -> list[dict[str, Any]]:
    cached: tuple[float, list[dict[str, Any]]] | None = getattr(app.state, "dashboard_counts", None)
    if cached is not None and wall - cached[0] < _COUNT_TTL:
        return cached[1]
    rows = await conn.execute(
        select(deliveries.c.channel, deliveries.c.status, func.count()).group_by(
            deliveries.c.channel, deliveries.c.status
        )
    )
    found = [{"channel": c, "status": s, "count": int(n)} for c, s, n in rows]
    app.state.dashboard_counts = (wall, found)
    return found


@admin.get("/events/recent", summary="The latest events with their outcomes")
async def recent_events(
    svc: Reader,
    limit: int | None = None,
    type: str | None = None,
) -> dict[str, Any]:
    """The newest events first, each with a count of its decisions per outcome."""
    size = page_limit(limit, 25, 200)
    query = select(events).order_by(events.c.id.desc()).limit(size)
    if type:
        query = query.where(events.c.type == type)
    async with svc.store.read() as conn:
        rows = list((await conn.execute(query)).all())
        outcomes: dict[str, Counter[str]] = {r.id: Counter() for r in rows}
        if rows:
            found = await conn.execute(
                select(decisions.c.event_pk, decisions.c.outcome, func.count())
                .where(decisions.c.event_pk.in_(list(outcomes)))
                .group_by(decisions.c.event_pk, decisions.c.outcome)
            )
            for pk, outcome, n in found:
                outcomes[pk][outcome] += int(n)
    return {
        "items": [
            {
                "pk": r.id,
                "id": r.event_id,
                "source": r.source,
                "type": r.type,
                "subject": r.subject,
                "received_at": iso(r.received_at),
                "processed_at": iso(r.processed_at),
                "outcomes": dict(outcomes[r.id]),
            }
            for r in rows
        ]
    }


@admin.get("/events/{event_pk}/explain", summary="Event → decisions → notifications → attempts")
async def explain(event_pk: str, svc: Reader, source: str | None = None) -> dict[str, Any]:
    """The whole story of one event (by row id, or CloudEvents id and optional source)."""
    async with svc.store.read() as conn:
        row = await find_event(conn, event_pk, source)
        return await explain_event(conn, row, svc.clock.now(), with_notifications=True)


@admin.get("/dead-letters", summary="Dead letters with their event and recipient")
async def dead_letter_list(svc: Reader, limit: int | None = None) -> dict[str, Any]:
    """Dead letters waiting for replay, newest first, with what they were about."""
    size = page_limit(limit, 50, 200)
    query = (
        select(
            dead_letters,
            notifications.c.subscriber_id,
            notifications.c.rule_id,
            notifications.c.event_pk,
            events.c.type.label("event_type"),
            deliveries.c.attempts,
        )
        .join(deliveries, deliveries.c.id == dead_letters.c.delivery_id, isouter=True)
        .join(notifications, notifications.c.id == deliveries.c.notification_id, isouter=True)
        .join(events, events.c.id == notifications.c.event_pk, isouter=True)
        .where(dead_letters.c.replayed_at.is_(None))
        .order_by(dead_letters.c.id.desc())
        .limit(size)
    )
    async with svc.store.read() as conn:
        rows = list((await conn.execute(query)).all())
    return {
        "items": [
            {
                **dead_letter_json(r),
                "subscriber_id": r.subscriber_id,
                "rule": r.rule_id,
                "event_pk": r.event_pk,
                "event_type": r.event_type,
                "attempts": r.attempts,
            }
            for r in rows
        ]
    }


@admin.get("/subscribers/{subscriber_id}", summary="A subscriber at a glance")
async def subscriber_view(subscriber_id: str, request: Request, svc: Reader) -> dict[str, Any]:
    """Profile (masked without the ``pii`` scope), devices, webhooks, preferences, inbox and
    notifications."""
    async with svc.store.read() as conn:
        profile = await subscriber_rows.get(conn, svc.store.cipher, subscriber_id)
        if profile is None:
            raise NotFound(f"no subscriber {subscriber_id!r}")
        devices = await subscriber_rows.list_devices(conn, subscriber_id)
        hooks = await subscriber_rows.list_endpoints(conn, svc.store.cipher, subscriber_id)
        preferences = await subscriber_rows.get_preferences(conn, subscriber_id) or {}
        counts = await inbox_rows.counts(conn, subscriber_id)
        items = await inbox_rows.list_items(conn, subscriber_id, "all", None, 10)
        newest = (
            (
                await conn.execute(
                    select(notifications.c.id)
                    .where(notifications.c.subscriber_id == subscriber_id)
                    .order_by(notifications.c.id.desc())
                    .limit(15)
                )
            )
            .scalars()
            .all()
        )
        notes = await delivery_rows.notifications_by_id(conn, list(newest))
        shown = await notifications_json(
            conn, [notes[i] for i in newest if i in notes], svc.clock.now()
        )
    profile = profile_json(profile, reveals_pii(request))
    profile["created_at"] = iso(profile.get("created_at"))
    profile["updated_at"] = iso(profile.get("updated_at"))
    return {
        "profile": profile,
        "devices": [
            {**d, "created_at": iso(d["created_at"]), "deactivated_at": iso(d["deactivated_at"])}
            for d in devices
        ],
        # the host is enough to recognise an ERP; paths and queries may carry secrets
        "webhooks": [
            {"endpoint_id": h["endpoint_id"], "host": _host(h["url"]), "active": h["active"]}
            for h in hooks
        ],
        "preferences": preferences,
        "inbox": {**counts, "items": [inbox_rows.item_json(r) for r in items]},
        "notifications": shown,
    }


def _host(url: str | None) -> str:
    found = re.match(r"^[a-z]+://([^/?#@]*@)?([^/?#]+)", url or "", re.IGNORECASE)
    return found.group(2) if found else "?"


router.include_router(admin)
