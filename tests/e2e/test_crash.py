"""``kill -9`` mid-load loses no accepted event and duplicates no notification."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import httpx

from testbed.harness import Server, cloudevent, wait_for


def test_kill_9_mid_load_then_restart(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    accepted: set[str] = set()
    lock = threading.Lock()
    killed = threading.Event()

    def post(worker: int) -> None:
        with httpx.Client(
            base_url=server.url, timeout=5, headers={"Authorization": f"Bearer {server.admin_key}"}
        ) as client:
            for n in range(250):
                event_id = f"evt-{worker}-{n}"
                event = cloudevent(
                    "order.delivered",
                    event_id,
                    order_id=f"o-{worker}-{n}",
                    buyer_id=f"buyer-{worker}",
                    seller_id="seller-1",
                )
                try:
                    response = client.post("/v1/events", json=event)
                except httpx.HTTPError:
                    if killed.is_set():
                        return
                    continue
                if response.status_code == 202:
                    with lock:
                        accepted.add(event_id)

    threads = [threading.Thread(target=post, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(accepted) >= 300, timeout=60, interval=0.005)
    server.kill()
    killed.set()
    for thread in threads:
        thread.join(30)
    assert 300 <= len(accepted) < 1000, len(accepted)

    restarted = Server(tmp_path)
    restarted.port, restarted.url, restarted.admin_key = server.port, server.url, server.admin_key
    restarted.env = server.env
    restarted.start()
    database = tmp_path / "tidings.db"

    def counts() -> dict[str, tuple[int, int]]:
        with sqlite3.connect(database) as db:
            rows = db.execute(
                """select e.event_id,
                          (select count(*) from notifications n where n.event_pk = e.id
                             and n.rule_id = 'order-delivered-buyer'),
                          (select count(*) from inbox_items i join notifications n
                             on i.notification_id = n.id where n.event_pk = e.id)
                   from events e"""
            ).fetchall()
        return {row[0]: (row[1], row[2]) for row in rows}

    try:

        def settled() -> dict[str, tuple[int, int]] | None:
            found = counts()
            done = all(value == (1, 1) for value in found.values())
            return found if done and accepted <= set(found) else None

        try:
            final = wait_for(settled, timeout=60, interval=0.2)
        except AssertionError:
            found = counts()
            wrong = {k: v for k, v in found.items() if v != (1, 1)}
            lost = sorted(accepted - set(found))
            raise AssertionError(
                f"lost {len(lost)} {lost[:5]}; wrong {list(wrong.items())[:5]}; "
                f"log: {restarted.log.read_text()[-2000:]}"
            ) from None
        missing = accepted - set(final)
        assert not missing, f"accepted but lost: {sorted(missing)[:5]}"
        assert all(value == (1, 1) for value in final.values())
        wait_for(lambda: _no_pending(database), timeout=30)  # every due push left too
    finally:
        restarted.stop()


def _no_pending(database: Path) -> bool:
    with sqlite3.connect(database) as db:
        return (
            db.execute(
                "select count(*) from deliveries where status in ('pending', 'sending')"
            ).fetchone()[0]
            == 0
        )
