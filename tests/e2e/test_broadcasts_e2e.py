"""Topics and broadcasts through the HTTP API of a running ``tidings serve`` (SPEC §10)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.webhook_receiver import WebhookReceiver
from testbed.harness import Server, cloudevent, wait_for

CONTENT = {
    "en-US": {"title": "Flash sale", "body": "{{ name }} starts now"},
    "zh-CN": {"title": "限时抢购", "body": "{{ name }} 开始啦"},
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path).start()
    try:
        yield running
    finally:
        running.stop()


def inbox(server: Server, subscriber_id: str) -> list[dict[str, Any]]:
    token = server.token(subscriber_id)
    response = httpx.get(
        server.url + "/v1/inbox", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def done(client: httpx.Client, broadcast_id: str) -> dict[str, Any] | None:
    body: dict[str, Any] = client.get(f"/v1/broadcasts/{broadcast_id}").json()
    return body if body["status"] == "done" else None


def test_a_topic_rule_reaches_the_followers_only(server: Server) -> None:
    client = server.client()
    client.put("/v1/subscribers/li", json={"locale": "zh-CN", "timezone": "Asia/Shanghai"})
    client.put("/v1/subscribers/ann", json={"locale": "en-US", "timezone": "Europe/London"})
    client.put("/v1/subscribers/bob", json={"locale": "en-US"})
    # Li taps "notify me" in the widget (inbox token); the shop adds Ann
    token = {"Authorization": f"Bearer {server.token('li')}"}
    followed = httpx.put(server.url + "/v1/inbox/topics/product.sku-9.restock", headers=token)
    assert followed.json() == {"key": "product.sku-9.restock", "following": True}
    added = client.post("/v1/topics/product.sku-9.restock/subscribers", json={"add": ["ann"]})
    assert added.status_code == 200, added.text
    assert client.get("/v1/subscribers/ann/topics").json()["items"] == [
        {"key": "product.sku-9.restock"}
    ]
    mine = httpx.get(server.url + "/v1/inbox/topics", headers=token).json()
    assert mine["items"] == [{"key": "product.sku-9.restock"}]

    event = cloudevent("product.restocked", "restock-1", sku="sku-9", name="Tea set")
    assert client.post("/v1/events", json=event).status_code == 202
    wait_for(lambda: inbox(server, "li") and inbox(server, "ann"), timeout=20)
    assert [i["title"] for i in inbox(server, "li")] == ["到货提醒"]
    assert [i["body"] for i in inbox(server, "ann")] == [
        "Tea set is back in stock. Get it before it is gone!"
    ]
    assert inbox(server, "bob") == []
    (decision,) = client.get("/v1/events/restock-1", params={"source": "/shop"}).json()["decisions"]
    assert decision["rule"] == "product-restocked"
    assert decision["reason"].startswith(
        "fanned out to the subscribers of topic product.sku-9.restock (broadcast "
    )
    broadcast_id = decision["reason"].rsplit(" ", 1)[1].rstrip(")")
    finished = wait_for(lambda: done(client, broadcast_id), timeout=20)
    assert finished["counts"]["sent"] == 2
    assert (finished["rule_id"], finished["category"]) == ("product-restocked", "product_alerts")
    assert finished["audience"] == {"topic": "product.sku-9.restock"}
    why = client.get(f"/v1/broadcasts/{broadcast_id}/recipients/ann").json()
    assert (why["outcome"], why["reason"]) == (
        "sent",
        "sent on inapp (no active device on file for push)",
    )

    # Li unfollows: the next restock reaches Ann only
    assert httpx.delete(server.url + "/v1/inbox/topics/product.sku-9.restock", headers=token)
    event = cloudevent("product.restocked", "restock-2", sku="sku-9", name="Tea set")
    assert client.post("/v1/events", json=event).status_code == 202
    wait_for(lambda: len(inbox(server, "ann")) == 2, timeout=20)
    assert len(inbox(server, "li")) == 1


def test_a_broadcast_by_segment_is_idempotent_and_can_be_cancelled(server: Server) -> None:
    client = server.client()
    for name, locale in (("a", "zh-CN"), ("b", "zh-CN"), ("c", "en-US")):
        client.put(f"/v1/subscribers/{name}", json={"locale": locale, "attributes": {"vip": True}})
    body = {
        "id": "double-11",
        "audience": {"segment": {"locale": "zh-CN", "attributes": {"vip": True}}},
        "category": "marketing",
        "channels": ["inapp"],
        "content": CONTENT,
        "data": {"name": "双十一"},
    }
    created = client.post("/v1/broadcasts", json=body)
    assert created.status_code == 202, created.text
    assert created.json()["id"] == "double-11"
    again = client.post("/v1/broadcasts", json=body)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    finished = wait_for(lambda: done(client, "double-11"), timeout=20)
    assert (finished["audience_size"], finished["counts"]["sent"]) == (2, 2)
    assert [i["body"] for i in inbox(server, "a")] == ["双十一 开始啦"]
    assert inbox(server, "c") == []
    assert client.post("/v1/broadcasts/double-11/pause").status_code == 409
    metrics = client.get("/metrics").text
    assert 'tidings_broadcast_recipients_total{outcome="sent"} 2.0' in metrics

    later = {**body, "id": "next-week", "send_at": "2099-01-01T00:00:00Z"}
    assert client.post("/v1/broadcasts", json=later).json()["status"] == "scheduled"
    assert client.post("/v1/broadcasts/next-week/pause").json()["status"] == "paused"
    assert client.post("/v1/broadcasts/next-week/resume").json()["status"] == "scheduled"
    cancelled = client.post("/v1/broadcasts/next-week/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    listed = [b["id"] for b in client.get("/v1/broadcasts").json()["items"]]
    assert listed == ["next-week", "double-11"]


BAD = [
    ({"audience": {"topic": "no.such.topic"}}, "/audience/topic"),
    ({"audience": {"topic": "empty.topic"}}, "/audience/topic"),
    ({"audience": {"segment": {"locale": "fr-FR"}}}, "/audience/segment"),
    ({"audience": {"segment": {"colour": "red"}}}, "/audience/segment/colour"),
    ({"audience": {"all": True, "topic": "empty.topic"}}, "/audience"),
    ({"audience": {"all": True}, "category": "nope"}, "/category"),
    ({"audience": {"all": True}, "local_time": "25:00"}, "/local_time"),
    ({"audience": {"all": True}, "template": "order_paid"}, "/template"),
    (
        {"audience": {"all": True}, "content": {"en-US": {"title": "{{ nme }}", "body": ""}}},
        "/content",
    ),
]


def test_bad_broadcasts_name_the_field(server: Server) -> None:
    client = server.client()
    client.put("/v1/subscribers/s-1", json={"locale": "en-US"})
    client.put("/v1/topics/empty.topic", json={"name": "nobody"})
    base = {
        "category": "marketing",
        "channels": ["inapp"],
        "content": CONTENT,
        "data": {"name": "x"},
    }
    for body, field in BAD:
        response = client.post("/v1/broadcasts", json={**base, **body})
        assert response.status_code == 422, (body, response.text)
        assert response.json()["field"] == field, body
    assert client.get("/v1/broadcasts").json()["items"] == []


def test_topic_input_limits(server: Server) -> None:
    client = server.client()
    assert client.put("/v1/topics/campaign.1111", json={"name": "Double 11"}).status_code == 201
    too_many = {"add": [f"s-{i}" for i in range(10_001)]}
    response = client.post("/v1/topics/campaign.1111/subscribers", json=too_many)
    assert response.status_code == 422
    assert response.json()["field"] == "/add"
    ten_thousand = {"add": [f"s-{i:05d}" for i in range(10_000)]}
    response = client.post("/v1/topics/campaign.1111/subscribers", json=ten_thousand)
    assert response.json()["added"] == 10_000
    assert client.get("/v1/topics/campaign.1111").json()["subscribers"] == 10_000
    page = client.get("/v1/topics/campaign.1111/subscribers", params={"limit": 2}).json()
    assert page == {
        "items": [{"subscriber_id": "s-00000"}, {"subscriber_id": "s-00001"}],
        "next_cursor": "s-00001",
    }
    response = client.post("/v1/topics/unknown/subscribers", json={"add": ["s-1"]})
    assert response.status_code == 404
    response = client.put("/v1/topics/bad key!", json={})
    assert response.status_code == 422 and response.json()["field"] == "/key"
    assert client.delete("/v1/topics/campaign.1111").status_code == 204
    assert client.get("/v1/topics").json()["items"] == []


def test_a_subscriber_follows_known_or_addressed_topics_only(server: Server) -> None:
    client = server.client()
    assert client.put("/v1/topics/seller.s-7.followers", json={"name": "S7"}).status_code == 201
    headers = {"Authorization": f"Bearer {server.token('li')}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as li:
        # a topic the shop made, and one the restock rule addresses (made by the follow)
        assert li.put("/v1/inbox/topics/seller.s-7.followers").status_code == 200
        assert li.put("/v1/inbox/topics/product.sku-3.restock").status_code == 200
        assert client.get("/v1/topics/product.sku-3.restock").status_code == 200
        # any other key makes no topic
        for key in ("my.own.topic", "product.sku-3.restock.extra", "seller.s-8.followers"):
            response = li.put(f"/v1/inbox/topics/{key}")
            assert response.status_code == 404, response.text
            assert response.json()["field"] == "/key"
            assert client.get(f"/v1/topics/{key}").status_code == 404
        # and a subscriber follows at most 1,000 topics
        for i in range(998):
            assert li.put(f"/v1/inbox/topics/product.p{i}.restock").status_code == 200
        assert li.put("/v1/inbox/topics/product.sku-3.restock").status_code == 200  # again
        response = li.put("/v1/inbox/topics/product.one-more.restock")
        assert response.status_code == 409, response.text
        assert response.json()["field"] == "/key"
        assert client.get("/v1/topics/product.one-more.restock").status_code == 404
        assert li.delete("/v1/inbox/topics/product.p0.restock").status_code == 200
        assert li.put("/v1/inbox/topics/product.one-more.restock").status_code == 200


def test_a_webhook_broadcast_calls_every_endpoint_once(tmp_path: Path) -> None:
    """Two processes decide chunks and send what they decide (born leased): each of the
    audience's endpoints gets one signed call, none twice."""
    size = 150
    cfg = {"providers": {"webhook": [{"kind": "webhook", "allow_private_networks": True}]}}
    with WebhookReceiver() as receiver:
        server = Server(tmp_path, config=cfg, processes=2).start()
        try:
            client = server.client()
            assert client.put("/v1/topics/sellers", json={}).status_code == 201
            ids = [f"s-{i:03d}" for i in range(size)]
            assert client.post("/v1/topics/sellers/subscribers", json={"add": ids}).is_success
            for seller in ids:
                body = {"url": receiver.url, "secret": receiver.secret}
                registered = client.post(f"/v1/subscribers/{seller}/webhooks", json=body)
                assert registered.status_code == 201, registered.text
            launched = client.post(
                "/v1/broadcasts",
                json={
                    "id": "sellers-news",
                    "audience": {"topic": "sellers"},
                    "category": "marketing",
                    "channels": ["webhook"],
                    "content": CONTENT,
                    "data": {"name": "Double 11"},
                },
            )
            assert launched.status_code == 202, launched.text
            finished = wait_for(lambda: done(client, "sellers-news"), timeout=60)
            wait_for(lambda: len(receiver.ids) >= size or None, timeout=60)
            assert finished["counts"]["sent"] == size
            # every outcome committed (a call still owed would be counted apart from these)
            labels = 'channel="webhook",provider="webhook",status="delivered"'
            delivered = f"tidings_deliveries_total{{{labels}}} {size}.0"
            wait_for(lambda: delivered in client.get("/metrics").text or None, timeout=60)
            calls = list(receiver.deliveries)
        finally:
            server.stop()
    assert len(calls) == size
    assert len({call.webhook_id for call in calls}) == size
    assert all(call.verified for call in calls)
    notified = {call.payload["data"]["notification"]["id"] for call in calls}
    assert len(notified) == size
    assert {call.payload["data"]["notification"]["title"] for call in calls} == {"Flash sale"}
