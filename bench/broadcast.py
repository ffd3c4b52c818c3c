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

Then ``--webhooks`` subscribers (default 100,000) each with a webhook endpoint on a local sink
(``bench.webhook_sink``, its own process): a broadcast on the ``webhook`` channel to all of them,
timed from the POST until the sink has counted every delivery (duplicates counted too), next to
the sink's own ceiling (a bare keep-alive client, ``bench.delivery.ceiling``) measured in the
same run.

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
from bench.delivery import Sink, Tidings, ceiling
from bench.ingest import KEY, TidingsProcess
from bench.webhook_sink import SECRET

TOPIC = "campaign.bench"
HOOKS_TOPIC = "sellers.bench"
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


def _webhook_config(sink_port: int) -> dict[str, Any]:
    """A category without quiet hours or caps and the webhook provider for a local sink."""
    return {
        "categories": {"announcements": {"description": "Shop announcements"}},
        "providers": {
            "webhook": [
                {
                    "kind": "webhook",
                    "allow_private_networks": True,
                    # one sink stands in for every subscriber's endpoint
                    "per_endpoint_concurrency": 64,
                    "max_connections": 64,
                }
            ]
        },
        "rules": [],
    }


async def _endpoints(base: str, size: int, sink_port: int) -> float:
    """A topic of ``size`` subscribers, each with an endpoint on the sink; seconds it took."""
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
        (await client.put(f"/v1/topics/{HOOKS_TOPIC}", json={"name": "hooks"})).raise_for_status()
        for start in range(0, size, 10_000):
            ids = [f"w-{i:07d}" for i in range(start, min(size, start + 10_000))]
            added = await client.post(f"/v1/topics/{HOOKS_TOPIC}/subscribers", json={"add": ids})
            added.raise_for_status()
        queue = iter(range(size))

        async def register() -> None:
            for i in queue:
                body = {"url": f"http://127.0.0.1:{sink_port}/hooks/{i}", "secret": SECRET}
                for attempt in range(5):
                    try:
                        got = await client.post(f"/v1/subscribers/w-{i:07d}/webhooks", json=body)
                        break
                    except httpx.TransportError:  # a kept-alive connection closed under us
                        if attempt == 4:
                            raise
                got.raise_for_status()

        await asyncio.gather(*(register() for _ in range(32)))
    return time.perf_counter() - started


def webhooks(size: int) -> dict[str, Any]:
    """A webhook broadcast to ``size`` subscribers against the sink, and the sink's ceiling."""
    sink = Sink("webhook")
    try:
        bare = ceiling("webhook", sink.port, 4.0, 64)
        with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
            # as a user runs it: a process per core, each sending what it decides
            server = Tidings(Path(tmp), _webhook_config(sink.port), processes=None)
            try:
                setup = asyncio.run(_endpoints(server.url, size, sink.port))
                sink.reset()
                body = {
                    "id": "bench-webhooks",
                    "audience": {"topic": HOOKS_TOPIC},
                    "category": "announcements",
                    "channels": ["webhook"],
                    "content": {"en-US": {"title": "Double 11", "body": "{{ name }} starts now"}},
                    "data": {"name": "The flash sale"},
                }
                posted = time.perf_counter()
                server.client.post("/v1/broadcasts", json=body).raise_for_status()
                decided_s = None
                while sink.count.value < size and time.perf_counter() - posted < 1800:
                    if decided_s is None:
                        state = server.client.get("/v1/broadcasts/bench-webhooks").json()
                        if state["status"] == "done":
                            decided_s = time.perf_counter() - posted
                    time.sleep(0.25)
                wall = time.perf_counter() - posted
                state = server.client.get("/v1/broadcasts/bench-webhooks").json()
                if decided_s is None and state["status"] == "done":
                    decided_s = wall  # decided before the first look
            finally:
                server.stop()
    finally:
        sink.stop()
    delivered = int(sink.count.value)
    return {
        "subscribers": size,
        "delivered": delivered,
        "duplicates": int(sink.dups.value),
        "bad_signatures": int(sink.bad.value),
        "counts": state["counts"],
        "seconds": round(wall, 2),
        "all_decided_s": None if decided_s is None else round(decided_s, 2),
        "recipients_per_second": round(delivered / wall),
        "sink_ceiling_per_second": round(bare),
        "vs_sink": round(delivered / wall / bare, 3) if bare else None,
        "setup_s": round(setup, 1),
    }


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
        "--sizes",
        default="100000",
        help="in-app audience sizes, comma-separated (default 100000; 0 skips them)",
    )
    parser.add_argument(
        "--profiles",
        type=int,
        default=20_000,
        help="how many of the audience are also registered subscribers (default 20000)",
    )
    parser.add_argument(
        "--webhooks",
        type=int,
        default=100_000,
        help="subscribers of the webhook broadcast (default 100000; 0 skips it)",
    )
    args = parser.parse_args()
    outcome = run([int(s) for s in args.sizes.split(",") if int(s) > 0], args.profiles)
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
            f"| {r['rss_during_mb']} MiB | {r['rss_lifetime_peak_mb']} MiB |",
            flush=True,
        )
    if args.webhooks:
        hooks = outcome["webhooks"] = webhooks(args.webhooks)
        print()
        print(
            "| webhook subscribers | delivered | duplicates | recipients/s (POST → last arrival) "
            "| vs the sink alone | all decided after |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        print(
            f"| {hooks['subscribers']} | {hooks['delivered']} | {hooks['duplicates']} "
            f"| {hooks['recipients_per_second']} | {hooks['vs_sink']:.0%} "
            f"(of {hooks['sink_ceiling_per_second']} requests/s) | {hooks['all_decided_s']} s |"
        )
    print(json.dumps(outcome))


if __name__ == "__main__":
    main()
