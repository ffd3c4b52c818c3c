"""Operations: dead letters, health, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.responses import Response

from tidings.api.deps import Admin, Listed, Reader, service
from tidings.clock import iso
from tidings.errors import NotFound
from tidings.store import dead_letters as dead_letter_rows
from tidings.store import deliveries as delivery_rows

router = APIRouter(tags=["operations"])


@router.get("/v1/dlq", summary="Dead letters")
async def list_dlq(listed: Listed) -> dict[str, Any]:
    """Deliveries whose retry budget is spent, waiting for replay."""
    return listed.answer(await listed.rows(delivery_rows.list_dead_letters), dead_letter_json)


def dead_letter_json(row: Any) -> dict[str, Any]:
    """A dead letter as the API shows it."""
    return {
        "id": row.id,
        "delivery_id": row.delivery_id,
        "channel": row.channel,
        "provider": row.provider,
        "reason": row.reason,
        "created_at": iso(row.created_at),
    }


@router.post("/v1/dlq/{dead_id}/replay", status_code=202, summary="Replay a dead letter")
async def replay(dead_id: str, svc: Admin) -> dict[str, Any]:
    """Give the delivery a fresh retry budget and queue it now."""
    now = svc.clock.now()
    delivery_id = await svc.store.write(
        lambda conn: delivery_rows.replay_dead_letter(conn, dead_id, now)
    )
    if delivery_id is None:
        raise NotFound(f"no dead letter {dead_id!r} waiting for replay")
    svc.scheduler.wake()
    return {"id": dead_id, "delivery_id": delivery_id, "status": "pending"}


@router.get("/healthz", summary="Liveness", tags=["operations"])
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness")
async def readyz(request: Request) -> Response:
    """The database answers (and, for a worker, providers are known)."""
    svc = service(request)
    try:
        async with svc.store.read() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return Response(
            f'{{"status": "unavailable", "reason": "{type(exc).__name__}"}}',
            503,
            media_type="application/json",
        )
    return Response('{"status": "ready"}', media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(svc: Reader) -> Response:
    """The Prometheus text exposition (an API key with ``read``: scrape with a bearer token)."""
    async with svc.store.read() as conn:
        svc.metrics.dead_letters.set(await dead_letter_rows.waiting(conn))
    for lane, depth in svc.broker.depth().items():
        svc.metrics.queue_depth.labels(lane).set(depth)
    svc.dispatcher.refresh_gauges()  # a breaker turns half-open by time alone
    return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
