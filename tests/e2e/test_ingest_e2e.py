"""End to end over HTTP: events in, decisions explained, inbox items out (API and SSE)."""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

import httpx
import pytest

from testbed.harness import Server, cloudevent, wait_for

PAID = {
    "order_id": "o-1",
    "buyer_id": "buyer-1",
    "seller_id": "seller-1",
    "amount": "99.00",
    "currency": "CNY",
}


def inbox(server: Server, subscriber: str, **params: Any) -> dict[str, Any]:
    token = server.token(subscriber)
    response = httpx.get(
        f"{server.url}/v1/inbox", params=params, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_event_reaches_the_inbox_in_the_subscribers_language(server: Server) -> None:
    with server.client() as client:
        assert (
            client.put(
                "/v1/subscribers/buyer-1",
                json={
                    "name": "Li Lei",
                    "email": "li@shop.test",
                    "phone": "+8613800138000",
                    "locale": "zh-CN",
                    "timezone": "Asia/Shanghai",
                },
            ).status_code
            == 201
        )
        response = client.post("/v1/events", json=cloudevent("order.paid", "evt-1", **PAID))
        assert response.status_code == 202
        assert response.json() == {
            "id": "evt-1",
            "source": "/shop",
            "status": 202,
            "duplicate": False,
        }
    items = wait_for(lambda: inbox(server, "buyer-1")["items"])
    assert items[0]["title"] == "支付成功"
    assert items[0]["body"] == "订单 o-1 已支付 ¥99.00。"
    seller_items = wait_for(lambda: inbox(server, "seller-1")["items"])
    assert seller_items[0]["title"] == "Order o-1 paid"  # unknown subscriber: default locale


def test_explain_and_notifications(server: Server) -> None:
    with server.client() as client:
        client.put("/v1/subscribers/buyer-1", json={"locale": "en-US"})
        client.put(
            "/v1/subscribers/buyer-1/preferences",
            json={"categories": {"order_updates": {"channels": {"push": False}}}},
        )
        client.post("/v1/events", json=cloudevent("order.paid", "evt-2", **PAID))
        explained = wait_for(
            lambda: (
                client.get("/v1/events/evt-2", params={"source": "/shop"}).json()
                if client.get("/v1/events/evt-2").json().get("processed_at")
                else None
            )
        )
        by_rule = {d["rule"]: d for d in explained["decisions"]}
        assert set(by_rule) == {
            "order-paid-buyer",
            "order-paid-seller",
            "seller-paid-orders-digest",
        }
        buyer = by_rule["order-paid-buyer"]
        assert buyer["outcome"] == "sent" and buyer["recipient"] == "buyer-1"
        assert "opted out of push for order_updates" in buyer["reason"]
        assert "no webhook endpoint on file" in by_rule["order-paid-seller"]["reason"]
        notification_id = buyer["notification_ids"][0]
        detail = client.get(f"/v1/notifications/{notification_id}").json()
        channels = {d["channel"]: d for d in detail["deliveries"]}
        assert "push" not in channels and channels["inapp"]["status"] == "delivered"
        assert set(channels["inapp"]["latency"]) == {"tp", "tc", "td", "total"}
        listed = client.get("/v1/notifications", params={"subscriber_id": "buyer-1"}).json()
        assert [n["id"] for n in listed["items"]] == [notification_id]
        assert listed["next_cursor"] is None


def test_replay_is_idempotent_forever(server: Server) -> None:
    with server.client() as client:
        event = cloudevent("order.paid", "evt-3", **PAID)
        assert client.post("/v1/events", json=event).status_code == 202
        wait_for(lambda: inbox(server, "buyer-1")["items"])
        again = client.post("/v1/events", json=event)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        batch = client.post(
            "/v1/events",
            # evt-4 pays another order: a second order.paid of o-1 would be deduplicated
            content=json.dumps(
                [event, {**event, "id": "evt-4", "data": {**PAID, "order_id": "o-4"}}]
            ),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        assert batch.status_code == 207
        assert [(r["status"], r["duplicate"]) for r in batch.json()["results"]] == [
            (200, True),
            (202, False),
        ]
    wait_for(lambda: len(inbox(server, "buyer-1")["items"]) == 2)
    assert len(inbox(server, "buyer-1")["items"]) == 2


def test_binary_and_batch_modes(server: Server) -> None:
    with server.client() as client:
        binary = client.post(
            "/v1/events",
            json=PAID,
            headers={
                "ce-specversion": "1.0",
                "ce-id": "bin-1",
                "ce-source": "/pos",
                "ce-type": "order.paid",
            },
        )
        assert binary.status_code == 202, binary.text
        events = [
            cloudevent(
                "order.shipped",
                f"ship-{i}",
                order_id=f"o-{i}",
                buyer_id="buyer-9",
                seller_id="seller-1",
            )
            for i in range(50)
        ]
        batch = client.post(
            "/v1/events",
            content=json.dumps(events),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        assert batch.status_code == 202
        assert all(r["status"] == 202 for r in batch.json()["results"])
    wait_for(lambda: len(inbox(server, "buyer-9", limit=100)["items"]) == 50)
    seen: list[str] = []
    cursor = None
    while True:  # pages of 20, newest first, each item once
        params = {"limit": 20, **({"cursor": cursor} if cursor else {})}
        page = inbox(server, "buyer-9", **params)
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 50 and seen == sorted(seen, reverse=True)
    with server.client() as client:
        first = client.get("/v1/notifications", params={"subscriber_id": "buyer-9", "limit": 30})
        rest = client.get(
            "/v1/notifications",
            params={"subscriber_id": "buyer-9", "limit": 30, "cursor": first.json()["next_cursor"]},
        )
    assert len(first.json()["items"]) == 30 and len(rest.json()["items"]) == 20
    assert rest.json()["next_cursor"] is None


def _count_rows(server: Server) -> int:
    with sqlite3.connect(server.workdir / "tidings.db") as db:
        return int(db.execute("select count(*) from events").fetchone()[0])


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One server for tests that only post bad input (nothing may be stored)."""
    running = Server(tmp_path_factory.mktemp("bad-input")).start()
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "/"),
        (
            json.dumps({**cloudevent("order.paid", "x", **PAID), "specversion": "0.3"}).encode(),
            {"content-type": "application/cloudevents+json"},
            422,
            "/specversion",
        ),
        (
            json.dumps(cloudevent("order.paid", "x", order_id="o")).encode(),
            {"content-type": "application/json"},
            422,
            "/data/buyer_id",
        ),
        (
            json.dumps({**cloudevent("order.paid", "x", **PAID), "id": None}).encode(),
            {"content-type": "application/json"},
            422,
            "/id",
        ),
        (b"x" * (1024 * 1024 + 1), {"content-type": "application/json"}, 413, "/"),
        (b"<xml/>", {"content-type": "text/xml"}, 415, None),
    ],
)
def test_bad_input_gets_a_problem_and_stores_nothing(
    shared_server: Server, body: bytes, headers: dict[str, str], status: int, field: str | None
) -> None:
    server = shared_server
    with server.client() as client:
        response = client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    if field is not None:
        assert problem["field"] == field
    assert _count_rows(server) == 0


def test_batch_accepts_the_valid_items_and_reports_the_rest(server: Server) -> None:
    good = cloudevent("order.paid", "ok-1", **PAID)
    bad = cloudevent("order.paid", "bad-1", order_id="o")
    with server.client() as client:
        response = client.post(
            "/v1/events",
            content=json.dumps([bad, good, 7]),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
    assert response.status_code == 207
    results = response.json()["results"]
    assert [r["status"] for r in results] == [422, 202, 422]
    assert results[0]["problem"]["field"] == "/0/data/buyer_id"
    with server.client() as client:
        assert client.get("/v1/events/ok-1", params={"source": "/shop"}).status_code == 200
        assert client.get("/v1/events/bad-1", params={"source": "/shop"}).status_code == 404


def test_auth_and_scopes(tmp_path: Any) -> None:
    server = Server(
        tmp_path,
        env={
            "TIDINGS_API_KEYS": "admin-k-0123456789abcdefghij:admin,"
            "ingest-k-0123456789abcdefghij:events,reader-k-0123456789abcdefghij:read"
        },
    )
    server.admin_key = "admin-k-0123456789abcdefghij"
    server.start()
    try:
        event = cloudevent("order.paid", "a-1", **PAID)
        assert httpx.post(f"{server.url}/v1/events", json=event).status_code == 401
        with server.client("wrong") as client:
            assert client.post("/v1/events", json=event).status_code == 401
        with server.client("reader-k-0123456789abcdefghij") as client:
            denied = client.post("/v1/events", json=event)
            assert denied.status_code == 403
            assert denied.headers["content-type"] == "application/problem+json"
            assert client.get("/v1/notifications").status_code == 200
        with server.client("ingest-k-0123456789abcdefghij") as client:
            assert client.post("/v1/events", json=event).status_code == 202
            assert client.get("/v1/notifications").status_code == 403
            assert client.put("/v1/subscribers/x", json={}).status_code == 403
    finally:
        server.stop()


def test_inbox_tokens_see_only_their_own_items(server: Server) -> None:
    with server.client() as client:
        client.post("/v1/events", json=cloudevent("order.paid", "p-1", **PAID))
    wait_for(lambda: inbox(server, "buyer-1")["items"])
    buyer_item = inbox(server, "buyer-1")["items"][0]["id"]
    other = {"Authorization": f"Bearer {server.cli_token('buyer-2')}"}
    assert httpx.get(f"{server.url}/v1/inbox", headers=other).json()["items"] == []
    assert httpx.post(f"{server.url}/v1/inbox/{buyer_item}/read", headers=other).status_code == 404
    forged = {"Authorization": "Bearer " + server.token("buyer-1")[:-4] + "AAAA"}
    assert httpx.get(f"{server.url}/v1/inbox", headers=forged).status_code == 401
    assert httpx.get(f"{server.url}/v1/inbox").status_code == 401
    with server.client() as client:  # an API key is not an inbox token
        assert client.get("/v1/inbox").status_code == 401


def test_inbox_read_archive_and_counts(server: Server) -> None:
    with server.client() as client:
        for i in range(3):
            client.post(
                "/v1/events",
                json=cloudevent(
                    "order.shipped",
                    f"s-{i}",
                    order_id=f"o{i}",
                    buyer_id="buyer-1",
                    seller_id="seller-1",
                ),
            )
    headers = {"Authorization": f"Bearer {server.token('buyer-1')}"}
    wait_for(lambda: len(inbox(server, "buyer-1")["items"]) == 3)
    count = httpx.get(f"{server.url}/v1/inbox/count", headers=headers).json()
    assert count == {"unread": 3, "unseen": 3}
    first, second, _ = [i["id"] for i in inbox(server, "buyer-1")["items"]]
    assert httpx.post(f"{server.url}/v1/inbox/{first}/read", headers=headers).json()["unread"] == 2
    assert httpx.post(f"{server.url}/v1/inbox/{second}/archive", headers=headers).status_code == 200
    assert len(inbox(server, "buyer-1", status="unread")["items"]) == 1
    assert len(inbox(server, "buyer-1", status="all")["items"]) == 2
    httpx.post(f"{server.url}/v1/inbox/read-all", headers=headers)
    assert httpx.get(f"{server.url}/v1/inbox/count", headers=headers).json()["unread"] == 0


def test_sse_stream_pushes_new_items_live(server: Server) -> None:
    token = server.token("buyer-1")
    received: list[tuple[str, Any]] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.stream(
            "GET",
            f"{server.url}/v1/inbox/stream",
            headers={"Authorization": f"Bearer {token}"},
            timeout=15,
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    received.append((event, json.loads(line[6:])))
                    ready.set()
                    if event == "item":
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert ready.wait(10)
    assert received[0] == ("count", {"unread": 0, "unseen": 0})
    with server.client() as client:
        client.post("/v1/events", json=cloudevent("order.paid", "live-1", **PAID))
    thread.join(10)
    assert received[-1][0] == "item"
    assert received[-1][1]["title"] == "Payment received"


def _stored_bytes(server: Server) -> bytes:
    """Everything the database holds: the SQLite files, or a dump of PostgreSQL's tables."""
    url = server.env["TIDINGS_DATABASE_URL"]
    if url.startswith("sqlite"):
        files = server.workdir.glob("tidings.db*")
        return b"".join(p.read_bytes() for p in files if not p.name.endswith(".key"))
    import asyncio

    import asyncpg

    async def dump() -> bytes:
        conn = await asyncpg.connect(url)
        try:
            chunks = []
            for table in (
                "subscribers",
                "devices",
                "webhook_endpoints",
                "events",
                "notifications",
                "deliveries",
                "inbox_items",
                "decisions",
            ):
                rows = await conn.fetch(f"select t::text as row from {table} t")
                chunks += [r["row"].encode() for r in rows]
            return b"\n".join(chunks)
        finally:
            await conn.close()

    return asyncio.run(dump())


def test_pii_is_encrypted_at_rest_and_erased_on_delete(server: Server) -> None:
    with server.client() as client:
        client.put(
            "/v1/subscribers/buyer-1",
            json={"email": "secret.person@shop.test", "phone": "+8613912345678"},
        )
        client.post(
            "/v1/subscribers/buyer-1/devices", json={"kind": "fcm", "token": "fcm-token-XYZ-123"}
        )
        client.post("/v1/events", json=cloudevent("order.paid", "pii-1", **PAID))
        wait_for(lambda: inbox(server, "buyer-1")["items"])
        raw = _stored_bytes(server)
        assert b"buyer-1" in raw  # the dump really holds the subscriber's rows
        for secret in (b"secret.person", b"8613912345678", b"fcm-token-XYZ"):
            assert secret not in raw
        logs = b"".join(p.read_bytes() for p in server.workdir.glob("*.log"))
        assert logs and b"secret.person" not in logs
        assert client.get("/v1/subscribers/buyer-1").json()["email"] == "secret.person@shop.test"
        assert client.delete("/v1/subscribers/buyer-1").status_code == 204
        assert client.get("/v1/subscribers/buyer-1").status_code == 404
        assert client.get("/v1/subscribers/buyer-1/devices").json()["items"] == []
    assert inbox(server, "buyer-1")["items"] == []


def test_subscriber_validation(server: Server) -> None:
    with server.client() as client:
        bad_phone = client.put("/v1/subscribers/b", json={"phone": "13800138000"})
        assert bad_phone.status_code == 422 and bad_phone.json()["field"] == "/phone"
        bad_tz = client.put("/v1/subscribers/b", json={"timezone": "Mars/Olympus"})
        assert bad_tz.status_code == 422 and bad_tz.json()["field"] == "/timezone"
        required = client.put(
            "/v1/subscribers/b/preferences",
            json={"categories": {"order_updates": {"enabled": False}}},
        )
        assert required.status_code == 409
        ok = client.put(
            "/v1/subscribers/b/preferences",
            json={"channels": {"sms": False}, "categories": {"marketing": {"enabled": False}}},
        )
        assert ok.status_code == 200
        assert client.get("/v1/subscribers/b/preferences").json()["channels"] == {"sms": False}
