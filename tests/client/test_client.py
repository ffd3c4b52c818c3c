"""``tidings.client`` against a real ``tidings serve``: emit, batches, errors, retries, kill -9."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from testbed.harness import Server, wait_for
from tidings.client import AsyncClient, Client, Retry, TidingsError


def _order(n: int, buyer: str = "buyer-1") -> dict[str, str]:
    return {"order_id": f"o-{n}", "buyer_id": buyer, "seller_id": "seller-1"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path).start()
    try:
        yield running
    finally:
        running.stop()


def test_emit_is_idempotent_on_its_id(served: Server) -> None:
    with Client(served.url, served.admin_key, source="/shop") as client:
        first = client.emit("order.delivered", _order(1), id="evt-1")
        again = client.emit("order.delivered", _order(1), id="evt-1")
        made = client.emit("order.delivered", _order(2))
        explained = client.request("GET", f"/v1/events/{made.id}?source=/shop")
    assert (first.status, first.duplicate) == (202, False)
    assert (again.status, again.duplicate) == (200, True)
    assert made.id and made.id != "evt-1" and made.source == "/shop"
    assert explained["event"]["data"]["order_id"] == "o-2"


def test_a_refused_event_raises_with_the_problem_body(served: Server) -> None:
    with Client(served.url, served.admin_key) as client:
        with pytest.raises(TidingsError) as caught:
            client.emit("order.paid", {"order_id": "o-1"})  # buyer_id, amount … missing
    assert caught.value.status == 422
    assert caught.value.problem["status"] == 422
    assert "buyer_id" in str(caught.value.problem)
    with Client(served.url, "not-a-key-of-this-service-000000") as client:
        with pytest.raises(TidingsError) as refused:
            client.emit("order.delivered", _order(1))
    assert refused.value.status == 401


def test_emit_many_batches_and_reports_per_item(served: Server) -> None:
    events = [{"type": "order.delivered", "data": _order(n)} for n in range(1500)]
    events[1200] = {"type": "order.paid", "data": {"order_id": "o-bad"}}
    events[3] = {"type": "order.delivered", "data": _order(3), "id": "fixed-3"}
    with Client(served.url, served.admin_key) as client:
        results = client.emit_many(events)
        again = client.emit_many(events[:10])
    assert [r.index for r in results] == list(range(1500))
    assert results[3].id == "fixed-3"
    assert sum(r.status == 202 for r in results) == 1499
    assert results[1200].status == 422 and not results[1200].ok
    assert results[1200].problem and "buyer_id" in str(results[1200].problem)
    # fresh ids make different events; the one with a fixed id is a duplicate now
    assert [r.status for r in again] == [202, 202, 202, 200] + [202] * 6
    with Client(served.url, served.admin_key) as client:
        repeated = client.emit_many([{**events[3]}])
    assert repeated[0].duplicate and repeated[0].status == 200


def test_subscribers_and_devices(served: Server) -> None:
    with Client(served.url, served.admin_key) as client:
        profile = client.subscribers.upsert("buyer-9", email="ann@example.com", locale="en-US")
        device_id = client.subscribers.add_device("buyer-9", "fcm", "fcm-token-0123456789")
        with pytest.raises(TidingsError) as caught:
            client.subscribers.upsert("buyer-9", phone="12345")
        devices = client.request("GET", "/v1/subscribers/buyer-9/devices")
    assert profile["id"] == "buyer-9" and profile["locale"] == "en-US"
    assert [d["device_id"] for d in devices["items"]] == [device_id]
    assert caught.value.status == 422 and caught.value.problem.get("status") == 422


def test_inbox_token_opens_the_inbox(served: Server) -> None:
    with Client(served.url, served.admin_key) as client:
        client.emit("order.delivered", _order(1, "buyer-t"))
        short = client.inbox_token("buyer-t", "15m")
        capped = client.inbox_token("buyer-t", timedelta(days=3))
        with pytest.raises(TidingsError) as caught:
            client.inbox_token("buyer-t", -5)
    with httpx.Client(base_url=served.url, timeout=10) as http:
        items = wait_for(
            lambda: http.get(
                "/v1/inbox", headers={"Authorization": f"Bearer {short.token}"}
            ).json()["items"]
        )
    assert items[0]["title"]
    now = datetime.now(UTC)
    for token, hours in ((short, 0.25), (capped, 24)):  # inbox.max_ttl (24h) caps every token
        expires = datetime.fromisoformat(token.expires_at.replace("Z", "+00:00"))
        assert now < expires <= now + timedelta(hours=hours, minutes=1)
    assert caught.value.status == 422 and caught.value.problem.get("status") == 422


async def test_async_client_waits_out_429(tmp_path: Path) -> None:
    running = Server(tmp_path, config={"api": {"rate_limit": 2, "burst": 1}}).start()
    try:
        async with AsyncClient(
            running.url, running.admin_key, retry=Retry(attempts=20, backoff=0.05)
        ) as client:
            done = [await client.emit("order.delivered", _order(n)) for n in range(4)]
            with pytest.raises(TidingsError):
                await client.emit("order.paid", {})
        async with AsyncClient(running.url, running.admin_key, retry=Retry(attempts=1)) as hasty:
            statuses = set()
            for n in range(6):
                try:
                    await hasty.emit("order.delivered", _order(10 + n))
                    statuses.add(202)
                except TidingsError as exc:
                    statuses.add(exc.status or 0)
    finally:
        running.stop()
    assert [d.status for d in done] == [202] * 4
    assert 429 in statuses  # without retries the limit shows: the retries above waited it out


def test_kill_9_mid_emit_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    results: list[str] = []
    failures: list[BaseException] = []
    total = 150

    def emit_all() -> None:
        retry = Retry(attempts=200, backoff=0.05, max_backoff=0.5)
        with Client(server.url, server.admin_key, timeout=5, retry=retry) as client:
            try:
                for n in range(total):
                    results.append(client.emit("order.delivered", _order(n, "buyer-k")).id)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                failures.append(exc)

    thread = threading.Thread(target=emit_all)
    thread.start()
    restarted = Server(tmp_path)
    restarted.port, restarted.url, restarted.env = server.port, server.url, server.env
    restarted.admin_key = server.admin_key
    try:
        wait_for(lambda: len(results) >= 40, timeout=60, interval=0.005)
        server.kill()
        restarted.start(timeout=60)
        thread.join(90)
        assert not thread.is_alive() and not failures, failures
        assert len(results) == total and len(set(results)) == total
        database = tmp_path / "tidings.db"

        def counts() -> dict[str, int] | None:
            with sqlite3.connect(database) as db:
                rows = db.execute(
                    "select e.event_id, (select count(*) from notifications n"
                    " where n.event_pk = e.id and n.rule_id = 'order-delivered-buyer')"
                    " from events e where e.source = '/tidings-client'"
                ).fetchall()
            found = {row[0]: row[1] for row in rows}
            return found if set(found) == set(results) and all(found.values()) else None

        final = wait_for(counts, timeout=60, interval=0.2)
        assert len(final) == total
        assert set(final.values()) == {1}  # one notification per event: nothing doubled
    finally:
        server.kill()
        restarted.stop()
