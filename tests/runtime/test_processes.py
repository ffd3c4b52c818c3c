"""``tidings serve --processes N``: N processes on one port and one SQLite database.

Real processes throughout: a supervisor and its children, ``kill -9`` of one child mid-load,
a webhook receiver that verifies every signature, SSE streams served by different processes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.webhook_receiver import WebhookReceiver
from testbed.harness import Server, cloudevent, wait_for

CONFIG: dict[str, Any] = {
    "categories": {"order_updates": {"required": True}},
    "templates": {
        "plain": {"en-US": {"title": "paid {{ order_id }}", "body": "order {{ order_id }}"}}
    },
    "delivery": {"retry": {"attempts": 8, "backoff": "100ms", "max_backoff": "500ms"}},
    "providers": {"webhook": [{"kind": "webhook", "allow_private_networks": True}]},
    "rules": [
        {
            "id": "paid-seller",
            "on": "order.paid",
            "to": "seller",
            "category": "order_updates",
            "channels": ["webhook"],
            "template": "plain",
        },
        {
            "id": "paid-buyer",
            "on": "order.paid",
            "to": "buyer",
            "category": "order_updates",
            "channels": ["inapp"],
            "template": "plain",
        },
    ],
}


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (from /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def start(tmp_path: Path, processes: int, config: dict[str, Any] | None = None) -> Server:
    server = Server(tmp_path, config=config or CONFIG, processes=processes)
    server.start(timeout=60)
    assert server.process is not None
    wait_for(lambda: len(children(server.process.pid)) == processes, timeout=60)
    return server


def test_kill_9_of_one_process_mid_load_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    server = start(tmp_path, 3)
    try:
        assert server.process is not None
        with server.client() as client:
            assert client.put("/v1/subscribers/seller-1", json={"name": "Shop"}).status_code in (
                200,
                201,
            )
            hook = {"url": receiver.url, "secret": receiver.secret}
            assert client.post("/v1/subscribers/seller-1/webhooks", json=hook).status_code == 201
        accepted: set[str] = set()
        lock = threading.Lock()

        def post(worker: int) -> None:
            with server.client() as client:
                for n in range(150):
                    event_id = f"evt-{worker}-{n}"
                    body = cloudevent(
                        "order.paid",
                        event_id,
                        order_id=f"o-{worker}-{n}",
                        buyer_id=f"buyer-{worker}",
                        seller_id="seller-1",
                        amount="9.00",
                        currency="CNY",
                    )
                    for _ in range(50):  # the same id again after a dropped connection
                        try:
                            response = client.post("/v1/events", json=body)
                        except httpx.HTTPError:
                            time.sleep(0.05)
                            continue
                        if response.status_code in (200, 202):
                            with lock:
                                accepted.add(event_id)
                            break
                        time.sleep(0.05)  # 503 under backpressure: come back later

        threads = [threading.Thread(target=post, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(accepted) >= 150, timeout=120, interval=0.01)
            before = children(server.process.pid)
            victim = before[1]
            os.kill(victim, signal.SIGKILL)
        finally:
            for thread in threads:
                thread.join(120)
        assert len(accepted) == 600, len(accepted)
        # a new process took the dead one's place
        wait_for(
            lambda: (
                victim not in children(server.process.pid)
                and len(children(server.process.pid)) == 3
            ),
            timeout=60,
        )

        database = tmp_path / "tidings.db"

        def settled() -> bool:
            with sqlite3.connect(database) as db:
                open_rows = db.execute(
                    "select count(*) from deliveries where status not in ('sent', 'delivered')"
                ).fetchone()[0]
                events = db.execute("select count(*) from events").fetchone()[0]
            return open_rows == 0 and events == 600 and _per_event(receiver) == 600

        wait_for(settled, timeout=120, interval=0.2)
        with sqlite3.connect(database) as db:
            per_rule = db.execute(
                "select e.event_id, n.rule_id, count(*) from events e"
                " join notifications n on n.event_pk = e.id group by e.event_id, n.rule_id"
            ).fetchall()
            inbox = db.execute("select count(*) from inbox_items").fetchone()[0]
        assert {row[0] for row in per_rule} == accepted
        assert len(per_rule) == 1200 and all(row[2] == 1 for row in per_rule)
        assert inbox == 600
        # at the receiver: one webhook-id per event; any repeat carries the same id (a call
        # in flight when its process died, sent again: the receiver deduplicates it)
        ids_per_event: dict[str, set[str]] = defaultdict(set)
        for delivery in receiver.deliveries:
            assert delivery.verified
            ids_per_event[json.loads(delivery.body)["data"]["event_id"]].add(delivery.webhook_id)
        assert set(ids_per_event) == accepted
        assert all(len(ids) == 1 for ids in ids_per_event.values())
        repeats = sum(Counter(receiver.ids).values()) - len(set(receiver.ids))
        # only what the dead process had in flight (born-leased calls are capped at 512)
        assert repeats <= 512, repeats
    finally:
        server.stop()


def _per_event(receiver: WebhookReceiver) -> int:
    return len({json.loads(d.body)["data"]["event_id"] for d in list(receiver.deliveries)})


def test_sse_streams_see_items_whichever_process_made_them(tmp_path: Path) -> None:
    server = start(tmp_path, 2)
    token = server.token("buyer-1")
    streams: dict[str, list[dict[str, Any]]] = {}
    stop = threading.Event()
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def listen(process: str, response: httpx.Response) -> None:
        try:
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "item":
                    with lock:
                        streams[process].append(json.loads(line[6:]))
                if stop.is_set():
                    return
        except httpx.HTTPError:
            return

    clients: list[httpx.Client] = []
    threads = []
    try:
        # new connections until one stream is served by each process
        for _ in range(40):
            if len(streams) == 2:
                break
            client = httpx.Client(timeout=httpx.Timeout(30, read=60))
            clients.append(client)
            request = client.build_request(
                "GET", f"{server.url}/v1/inbox/stream", headers={"Authorization": f"Bearer {token}"}
            )
            response = client.send(request, stream=True)
            responses.append(response)
            process = response.headers["x-tidings-process"]
            if process in streams:
                response.close()
                continue
            streams[process] = []
            thread = threading.Thread(target=listen, args=(process, response), daemon=True)
            thread.start()
            threads.append(thread)
        assert sorted(streams) == ["0", "1"], sorted(streams)
        posted = set()
        for n in range(10):  # each on a new connection: both processes accept some
            body = cloudevent(
                "order.paid",
                f"sse-{n}",
                order_id=f"o-{n}",
                buyer_id="buyer-1",
                seller_id="seller-1",
                amount="9.00",
                currency="CNY",
            )
            response = httpx.post(
                f"{server.url}/v1/events",
                json=body,
                headers={"Authorization": f"Bearer {server.admin_key}"},
            )
            assert response.status_code == 202, response.text
            posted.add(f"paid o-{n}")

        def complete() -> bool:
            with lock:
                return all({i["title"] for i in items} >= posted for items in streams.values())

        wait_for(complete, timeout=60, interval=0.1)
        with lock:
            for items in streams.values():
                titles = [i["title"] for i in items]
                assert len(titles) == len(set(titles)) == 10  # each item once per stream
    finally:
        stop.set()
        for response in responses:
            response.close()
        for client in clients:
            client.close()
        server.stop()


def test_the_processes_die_with_their_supervisor(tmp_path: Path) -> None:
    server = start(tmp_path, 2)
    assert server.process is not None
    kids = children(server.process.pid)
    try:
        server.kill()  # kill -9 of the supervisor: nothing is left serving the port
        wait_for(lambda: not any(alive(pid) for pid in kids), timeout=60)
    finally:
        for pid in kids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
