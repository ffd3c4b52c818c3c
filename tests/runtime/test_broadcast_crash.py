"""``kill -9`` mid-broadcast, then a restart: every recipient exactly once.

Embedded with two processes on one SQLite file (chunks claimed under its write lock), and
scaled out with two workers on PostgreSQL (chunks claimed ``SKIP LOCKED``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from testbed.harness import Server, wait_for
from tests.runtime.test_processes import alive, children
from tidings.config import sqlalchemy_url

CONTENT = {"en-US": {"title": "Sale", "body": "Everything must go"}}
CHECKS = {
    "recipients": "SELECT count(*), count(DISTINCT subscriber_id) FROM broadcast_recipients"
    " WHERE broadcast_id = :b",
    # an in-app recipient is one inbox item (no notification or delivery row)
    "inbox": "SELECT count(*), count(DISTINCT i.subscriber_id) FROM inbox_items i"
    " JOIN broadcast_recipients r ON r.subscriber_id = i.subscriber_id"
    " WHERE r.broadcast_id = :b AND i.notification_id IS NULL",
}


def audience(client: httpx.Client, size: int) -> None:
    """A topic of ``size`` subscribers (ids only: an unknown id still has an inbox)."""
    assert client.put("/v1/topics/everyone", json={}).status_code == 201
    for start in range(0, size, 10_000):
        ids = [f"m-{i:06d}" for i in range(start, min(size, start + 10_000))]
        response = client.post("/v1/topics/everyone/subscribers", json={"add": ids})
        assert response.status_code == 200, response.text


def launch(client: httpx.Client, broadcast_id: str) -> None:
    body = {
        "id": broadcast_id,
        "audience": {"topic": "everyone"},
        "category": "seller_ops",
        "channels": ["inapp"],
        "content": CONTENT,
    }
    response = client.post("/v1/broadcasts", json=body)
    assert response.status_code == 202, response.text


def progress(client: httpx.Client, broadcast_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/broadcasts/{broadcast_id}").json()
    return body


def decided(client: httpx.Client, broadcast_id: str) -> int:
    return sum(progress(client, broadcast_id)["counts"].values())


def mid_way(client: httpx.Client, broadcast_id: str) -> int:
    """Wait until some recipients are decided; how many."""
    return wait_for(lambda: decided(client, broadcast_id) or None, timeout=60, interval=0.02)


def sqlite_counts(database: Path, broadcast_id: str) -> dict[str, tuple[int, int]]:
    with sqlite3.connect(database) as conn:
        return {
            name: tuple(
                conn.execute(
                    sql.replace(":b", "?").replace(":r", "?"),
                    (broadcast_id if ":b" in sql else f"broadcast:{broadcast_id}",),
                ).fetchone()
            )
            for name, sql in CHECKS.items()
        }


def test_kill_9_mid_broadcast_with_two_processes_then_restart(tmp_path: Path) -> None:
    size = 20_000
    server = Server(tmp_path, processes=2).start(timeout=60)
    try:
        client = server.client()
        audience(client, size)
        launch(client, "big-sale")
        seen = mid_way(client, "big-sale")
        assert server.process is not None
        kids = children(server.process.pid)
        server.kill()  # the supervisor, and with it both processes, mid-chunk
        wait_for(lambda: not any(alive(pid) for pid in kids), timeout=60)
        print(f"killed after {seen} of {size}")
        assert seen < size, "the broadcast finished before the kill: make the audience larger"
        server = Server(tmp_path, processes=2)
        server.admin_key = client.headers["Authorization"].split()[1]
        server.env["TIDINGS_API_KEYS"] = f"{server.admin_key}:admin"
        server.start(timeout=60)
        client = server.client()
        finished = wait_for(
            lambda: (b := progress(client, "big-sale"))["status"] == "done" and b, timeout=90
        )
        assert finished["counts"] == {"sent": size, "deferred": 0, "suppressed": 0, "failed": 0}
        assert finished["audience_size"] == size
        counts = sqlite_counts(tmp_path / "tidings.db", "big-sale")
        assert counts == {name: (size, size) for name in CHECKS}
    finally:
        server.stop()


async def pg_counts(url: str, broadcast_id: str) -> list[tuple[int, int]]:
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        async with engine.connect() as conn:
            found = []
            for sql in CHECKS.values():
                parameters = {"b": broadcast_id, "r": f"broadcast:{broadcast_id}"}
                row = (await conn.execute(text(sql), parameters)).one()
                found.append((int(row[0]), int(row[1])))
            return found
    finally:
        await engine.dispose()


@pytest.mark.scaleout
def test_kill_9_of_a_worker_mid_broadcast_in_scale_out(
    tmp_path: Path, services: Any, vhosts: Any
) -> None:
    from testbed.cluster import Cluster, fresh_database

    size = 10_000
    database = fresh_database(services)
    cluster = Cluster(tmp_path, database.url, vhosts.take(), workers=2).start()
    try:
        client = cluster.client()
        audience(client, size)
        launch(client, "flash")
        seen = mid_way(client, "flash")
        cluster.workers[0].kill()  # its open chunk rolls back: the other worker takes it
        print(f"killed after {seen} of {size}")
        assert seen < size, "the broadcast finished before the kill: make the audience larger"
        finished = wait_for(
            lambda: (b := progress(client, "flash"))["status"] == "done" and b, timeout=90
        )
        assert finished["counts"]["sent"] == size, cluster.logs()
        counts = asyncio.run(pg_counts(str(database.url), "flash"))
        assert counts == [(size, size)] * len(CHECKS)
    finally:
        cluster.stop()
        database.drop()
