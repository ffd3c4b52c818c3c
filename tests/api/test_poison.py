"""One bad event fails only itself (issue 12), embedded and scaled out.

Concurrent POSTs share one coalesced insert; before, a single event the store could not take
(a lone surrogate, a NUL, NaN) failed every request of that insert with a 500. Here 60 valid
and 3 bad events race each other, three rounds over: exactly the 3 bad ones fail (4xx), and
all 180 valid ones are stored and delivered.
"""

from __future__ import annotations

import asyncio
import json
import random

import httpx

from testbed.harness import Server, cloudevent, wait_for

BUYER = "poison-buyer"
STRUCTURED = {"content-type": "application/cloudevents+json"}


def paid(event_id: str, order: str) -> bytes:
    data = {
        "order_id": order,
        "buyer_id": BUYER,
        "seller_id": "poison-seller",
        "amount": "5.00",
        "currency": "CNY",
    }
    return json.dumps(cloudevent("order.paid", event_id, **data)).encode()


def poisons(round_no: int) -> list[bytes]:
    """Three events that decode in Python's json but no store keeps as they are."""
    head = '{"specversion": "1.0", "source": "/shop", "type": "order.paid", '
    data = f'"data": {{"order_id": "o-{round_no}", "buyer_id": "{BUYER}", "seller_id": "s",'
    money = ' "amount": "1.00", "currency": "CNY"'
    return [
        (head + f'"id": "bad-s-{round_no}", ' + data + money + ', "note": "\\ud800"}}').encode(),
        (head + f'"id": "bad-\\u0000-{round_no}", ' + data + money + "}}").encode(),
        (head + f'"id": "bad-n-{round_no}", ' + data + money + ', "tip": NaN}}').encode(),
    ]


async def one_round(server: Server, round_no: int) -> list[tuple[str, int]]:
    bodies = [
        (f"good-{round_no}-{i}", paid(f"good-{round_no}-{i}", f"o-{round_no}-{i}"))
        for i in range(60)
    ]
    bodies += [(f"bad-{round_no}-{i}", body) for i, body in enumerate(poisons(round_no))]
    random.Random(round_no).shuffle(bodies)
    headers = {"Authorization": f"Bearer {server.admin_key}", **STRUCTURED}
    limits = httpx.Limits(max_connections=63)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:

        async def post(name: str, body: bytes) -> tuple[str, int]:
            response = await client.post("/v1/events", content=body, headers=headers)
            return name, response.status_code

        return list(await asyncio.gather(*(post(name, body) for name, body in bodies)))


def inbox_size(server: Server) -> int:
    """The buyer's unread inbox items: one per delivered event (nothing reads them)."""
    response = httpx.get(
        f"{server.url}/v1/inbox/count",
        headers={"Authorization": f"Bearer {server.token(BUYER)}"},
    )
    assert response.status_code == 200, response.text
    return int(response.json()["unread"])


async def test_three_bad_events_among_sixty_fail_alone(server: Server) -> None:
    for round_no in range(3):
        answers = await one_round(server, round_no)
        failed = sorted(name for name, status in answers if status != 202)
        assert failed == [f"bad-{round_no}-{i}" for i in range(3)], answers
        assert all(400 <= status < 500 for name, status in answers if name.startswith("bad"))
    with server.client() as client:
        for round_no in range(3):
            for i in (0, 29, 59):
                found = client.get(f"/v1/events/good-{round_no}-{i}", params={"source": "/shop"})
                assert found.status_code == 200, found.text
    wait_for(lambda: inbox_size(server) == 180, timeout=60)
    assert inbox_size(server) == 180


def test_a_batch_of_one_good_and_one_bad_item_stores_the_good_one(server: Server) -> None:
    good = paid("batch-good", "o-batch").decode()
    bad = poisons(9)[0].decode()
    with server.client() as client:
        response = client.post(
            "/v1/events",
            content=f"[{good}, {bad}]",
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        assert response.status_code == 207, response.text
        results = response.json()["results"]
        assert [(r["id"], r["status"]) for r in results] == [("batch-good", 202), ("bad-s-9", 400)]
        assert results[1]["problem"]["field"] == "/1/data/note"
        assert client.get("/v1/events/batch-good").status_code == 200
        assert client.get("/v1/events/bad-s-9").status_code == 404
    wait_for(lambda: inbox_size(server) == 1, timeout=30)


def test_a_nul_in_the_url_is_a_400_not_a_database_error(server: Server) -> None:
    with server.client() as client:
        for path in (
            "/v1/subscribers/a%00b",
            "/v1/subscribers/a%00b/preferences",
            "/v1/events/a%00b",
            "/v1/notifications?subscriber_id=%00",
        ):
            response = client.get(path)
            assert response.status_code == 400, (path, response.text)
            assert "NUL" in response.json()["detail"]
        assert client.put("/v1/subscribers/a%00b", json={}).status_code == 400


def test_an_id_longer_than_a_subscriber_id_is_refused_not_left_undecided(server: Server) -> None:
    """On PostgreSQL a 300-character buyer_id was accepted, then failed every processing
    attempt (and with it the events processed beside it), undecided for good."""
    data = {
        "order_id": "o-long",
        "buyer_id": "b" * 300,
        "seller_id": "seller-1",
        "amount": "1.00",
        "currency": "CNY",
    }
    with server.client() as client:
        response = client.post("/v1/events", json=cloudevent("order.paid", "long-id", **data))
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "/data/buyer_id"
        data["buyer_id"] = "b" * 256
        response = client.post("/v1/events", json=cloudevent("order.paid", "long-ok", **data))
        assert response.status_code == 202, response.text
        wait_for(lambda: client.get("/v1/events/long-ok").json()["processed_at"], timeout=30)
