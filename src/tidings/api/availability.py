"""``GET /v1/availability`` (SPEC §13): MTBF, MTTR and availability per provider, channel and
for the service, over 1 h, 24 h and 7 d."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from tidings.api.deps import require, service
from tidings.runtime.uptime import read_report

router = APIRouter(tags=["availability"])


@router.get("/v1/availability", summary="Availability: MTBF, MTTR, MTBF / (MTBF + MTTR)")
async def get_availability(request: Request, _: str = Depends(require("read"))) -> dict[str, Any]:
    """The service, each provider (per channel it serves) and each channel, per window.

    From the circuit breakers' open/close history and the service's own up time; MTBF and
    MTTR are ``null`` in a window with no failure (availability 1).
    """
    svc = service(request)
    return await read_report(svc.store, svc.breakers, svc.clock.now())
