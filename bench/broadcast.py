"""Broadcast benchmark (issue 13): one in-app broadcast to N subscribers, on this machine.

For each audience size, on a fresh ``tidings serve --processes 1`` (SQLite):
- the audience is made beforehand, in bulk: a topic filled 10,000 ids a call
  (``POST /v1/topics/{key}/subscribers``), the first ``--profiles`` of them also registered
  with a locale and a time zone (``PUT /v1/subscribers/{id}``);
- ``POST /v1/broadcasts`` (in-app, inline content); the time to the first recipient's inbox item
  (``GET /v1/inbox`` polled with a token from ``tidings token``);
- recipients decided and committed per second, from the broadcast's ``started_at`` and
  ``finished_at`` (``GET /v1/broadcasts/{id}``), next to raw SQLite 100-row batched inserts
  measured in the same run (``bench.baselines.raw_sqlite``);
- the server's RSS, sampled while the broadcast runs (its peak), and its lifetime peak.

The bench drives the product as a user does (HTTP and the CLI); it never reads its tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.baselines import raw_sqlite
from bench.ingest import KEY, TidingsProcess

TOPIC = "campaign.bench"
ZONES = ("Asia/Shanghai", "America/New_York", "Europe/London", "Asia/Tokyo")


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def _audience(base: str, size: int, profiles: int) -> float:
    """Fill the topic (and register ``profiles`` subscribers); seconds it took."""
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
        (await client.put(f"/v1/topics/{TOPIC}", json={"name": "bench"})).raise_for_status()
        for start in range(0, size, 10_000):
            ids = [f"m-{i:07d}" for i in range(start, min(size, start + 10_000))]
            response = await client.post(f"/v1/topics/{TOPIC}/subscribers", json={"add": ids})
            response.raise_for_status()
        queue = iter(range(profiles))

        async def register() -> None:
            for i in queue:
                body = {"locale": "zh-CN" if i % 2 else "en-US", "timezone": ZONES[i % 4]}
                (await client.put(f"/v1/subscribers/m-{i:07d}", json=body)).raise_for_status()

        await asyncio.gather(*(register() for _ in range(16)))
    return time.perf_counter() - started


def _token(server: TidingsProcess, subscriber_id: str) -> str:
    env = {
        **os.environ,
        "TIDINGS_DATABASE_URL": f"sqlite:///{server.workdir / 'tidings.db'}",
        "TIDINGS_INBOX_SECRET": "bench-inbox-secret-0123456789",
    }
    output = subprocess.run(
        [sys.executable, "-m", "tidings.cli", "token", subscriber_id, "--ttl", "1h"],
        cwd=server.workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(w for w in output.split() if w.count(".") == 2)


def _broadcast(server: TidingsProcess, size: int) -> dict[str, Any]:
    """POST the broadcast; follow it to the end; the figures."""
    base = f"http://127.0.0.1:{server.port}"
    token = _token(server, "m-0000000")
    body = {
        "id": f"bench-{size}",
        "audience": {"topic": TOPIC},
        "category": "marketing",
        "channels": ["inapp"],
        "content": {
            "en-US": {"title": "Double 11", "body": "{{ name }} starts now"},
            "zh-CN": {"title": "双十一", "body": "{{ name }} 现在开始"},
        },
        "data": {"name": "The flash sale"},
    }
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    reader = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    try:
        posted = time.perf_counter()
        admin.post("/v1/broadcasts", json=body).raise_for_status()
        first_item = None
        while time.perf_counter() - posted < 30:
            if reader.get("/v1/inbox").json()["items"]:
                first_item = time.perf_counter() - posted
                break
            time.sleep(0.005)
        peak = 0.0
        while True:
            state = admin.get(f"/v1/broadcasts/{body['id']}").json()
            peak = max(peak, server.rss_mb()[0])
            if state["status"] in ("done", "cancelled"):
                break
            time.sleep(0.25)
        wall = _epoch(state["finished_at"]) - _epoch(state["started_at"])
        decided = sum(state["counts"].values())
        return {
            "audience": size,
            "decided": decided,
            "counts": state["counts"],
            "seconds": round(wall, 2),
            "recipients_per_second": round(decided / wall) if wall else None,
            "first_inbox_item_s": None if first_item is None else round(first_item, 3),
            "rss_during_mb": round(peak, 1),
            "rss_lifetime_peak_mb": round(server.rss_mb()[1], 1),
        }
    finally:
        admin.close()
        reader.close()


def run(sizes: list[int], profiles: int) -> dict[str, Any]:
    """Every figure, with the raw SQLite ceiling measured in the same run."""
    ceiling = raw_sqlite.run(3.0, "NORMAL", 100)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            server = TidingsProcess(Path(tmp))
            try:
                made = asyncio.run(
                    _audience(f"http://127.0.0.1:{server.port}", size, min(profiles, size))
                )
                figures = _broadcast(server, size)
                figures["setup_s"] = round(made, 1)
                figures["profiles"] = min(profiles, size)
                figures["vs_raw_sqlite"] = round(
                    (figures["recipients_per_second"] or 0) / ceiling["per_second"], 3
                )
                rows.append(figures)
            finally:
                server.stop()
    return {"raw_sqlite_rows_per_second": round(ceiling["per_second"]), "runs": rows}


def main() -> None:
    """Print a Markdown table and the JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--sizes", default="100000", help="audience sizes, comma-separated (default 100000)"
    )
    parser.add_argument(
        "--profiles",
        type=int,
        default=20_000,
        help="how many of the audience are also registered subscribers (default 20000)",
    )
    args = parser.parse_args()
    outcome = run([int(s) for s in args.sizes.split(",")], args.profiles)
    ceiling = outcome["raw_sqlite_rows_per_second"]
    print(
        "| audience | profiles | decided | recipients/s | vs raw SQLite 100-row inserts "
        "| POST → first inbox item | RSS during (peak) | RSS lifetime peak |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in outcome["runs"]:
        print(
            f"| {r['audience']} | {r['profiles']} | {r['decided']} | {r['recipients_per_second']} "
            f"| {r['vs_raw_sqlite']:.0%} (of {ceiling} rows/s) | {r['first_inbox_item_s']} s "
            f"| {r['rss_during_mb']} MiB | {r['rss_lifetime_peak_mb']} MiB |"
        )
    print(json.dumps(outcome))


if __name__ == "__main__":
    main()
