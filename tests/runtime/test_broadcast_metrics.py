"""``tidings_broadcast_recipients_total`` on ``/metrics``: recipients counted when decided, and
a deferred one again when it settles — fired by the scheduler (``sent``) or cancelled with
its broadcast (``cancelled``). The service runs in process on a clock the test moves on."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from tests.runtime.test_broadcaster import at, clock_at
from tidings.api.app import create_app
from tidings.config import build_settings, builtin_config_text, parse_yaml
from tidings.runtime.service import Service

KEY = "broadcast-metrics-admin-key-0123456789"
CONTENT = {"en-US": {"title": "Sale", "body": "{{ name }} is on"}}


async def counted(http: httpx.AsyncClient) -> dict[str, float]:
    """``tidings_broadcast_recipients_total`` by outcome, off ``/metrics``."""
    text = (await http.get("/metrics")).text
    found = re.findall(r'^tidings_broadcast_recipients_total\{outcome="(\w+)"\} (\S+)$', text, re.M)
    return {outcome: float(value) for outcome, value in found}


async def wait_counted(http: httpx.AsyncClient, expected: dict[str, float]) -> None:
    """Until ``/metrics`` counts ``expected`` (60 s at most)."""
    for _ in range(600):
        if await counted(http) == expected:
            return
        await asyncio.sleep(0.1)
    assert await counted(http) == expected


async def test_deferred_recipients_are_counted_again_when_they_settle(tmp_path: Path) -> None:
    raw = parse_yaml(builtin_config_text())
    raw["database"] = f"sqlite:///{tmp_path / 'tidings.db'}"
    raw["api_keys"] = [{"key": KEY, "scopes": ["admin"]}]
    settings = build_settings(raw, {}, "test")
    clock = clock_at(at("2026-03-10 12:00"))  # 08:00 in New York, 12:00 in London
    app = create_app(Service(settings, clock=clock, base_dir=tmp_path))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://tidings.test",
            headers={"Authorization": f"Bearer {KEY}"},
        ) as http,
    ):
        for name, zone in (("ny", "America/New_York"), ("ldn", "Europe/London")):
            made = await http.put(f"/v1/subscribers/{name}", json={"timezone": zone})
            assert made.status_code in (200, 201), made.text
        body = {
            "id": "morning",
            "audience": {"all": True},
            "category": "marketing",
            "channels": ["inapp"],
            "content": CONTENT,
            "data": {"name": "Spring sale"},
            "local_time": "10:00",  # ahead today in New York, tomorrow in London
        }
        created = await http.post("/v1/broadcasts", json=body)
        assert created.status_code == 202, created.text
        await wait_counted(http, {"deferred": 2.0})

        # New York's 10:00: the scheduler fires its recipient
        clock.advance(at("2026-03-10 10:00", "America/New_York") + 1 - clock.now())
        await wait_counted(http, {"deferred": 2.0, "sent": 1.0})

        # cancelled before London's 10:00: its recipient is cancelled with the broadcast
        cancelled = await http.post("/v1/broadcasts/morning/cancel")
        assert cancelled.status_code == 200, cancelled.text
        await wait_counted(http, {"deferred": 2.0, "sent": 1.0, "cancelled": 1.0})
        why = await http.get("/v1/broadcasts/morning/recipients/ldn")
        assert why.json()["outcome"] == "cancelled"
