"""The strategy end to end over HTTP, with short windows: delay + cancel, digest, quiet hours,
caps, stale events, ttl, timed fallback, and deferred work surviving a ``kill -9``."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from testbed.harness import Server, cloudevent, free_port, wait_for

ORDER = {
    "order_id": "o-1",
    "buyer_id": "buyer-1",
    "seller_id": "seller-1",
    "amount": "9.00",
    "currency": "CNY",
}
TEMPLATES = {
    "plain": {
        "en-US": {"title": "{{ event.type }} {{ order_id }}", "body": "order {{ order_id }}"}
    },
    "digest": {
        "en-US": {
            "title": "You have {{ count }} new paid orders",
            "body": "{% for e in events %}{{ e.order_id }} {% endfor %}",
        },
        "zh-CN": {"title": "您有 {{ count }} 个新的已付款订单", "body": "{{ count }}"},
    },
}
CATEGORIES = {
    "order_updates": {"required": True},
    "marketing": {"quiet_hours": True, "cap": {"count": 2, "per": "1d"}},
}


def config(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "categories": CATEGORIES,
        "templates": TEMPLATES,
        **extra,
        "rules": [{"to": "buyer", "channels": ["inapp"], "template": "plain", **r} for r in rules],
    }


REMINDER = {
    "id": "unpaid-reminder",
    "on": "order.created",
    "delay": "1s",
    "cancel_on": ["order.paid", "order.cancelled"],
}


def explain(client: httpx.Client, event_id: str) -> dict[str, Any] | None:
    body = client.get(f"/v1/events/{event_id}").json()
    return body if body.get("processed_at") else None


def decisions(client: httpx.Client, event_id: str) -> list[dict[str, Any]]:
    return wait_for(lambda: explain(client, event_id))["decisions"]  # type: ignore[no-any-return]


_TOKENS: dict[tuple[str, str], str] = {}


def inbox(server: Server, subscriber: str) -> list[dict[str, Any]]:
    """The subscriber's inbox (the token is minted once: ``tidings token`` is a subprocess)."""
    key = (server.admin_key, subscriber)
    if key not in _TOKENS:
        _TOKENS[key] = server.token(subscriber)
    response = httpx.get(
        f"{server.url}/v1/inbox?status=all", headers={"Authorization": f"Bearer {_TOKENS[key]}"}
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


def notification(client: httpx.Client, notification_id: str) -> dict[str, Any]:
    return client.get(f"/v1/notifications/{notification_id}").json()  # type: ignore[no-any-return]


def test_delay_cancelled_by_a_later_event(tmp_path: Path) -> None:
    server = Server(tmp_path, config=config(REMINDER)).start()
    try:
        with server.client() as client:
            client.post("/v1/events", json=cloudevent("order.created", "e-1", **ORDER))
            (deferred,) = decisions(client, "e-1")
            assert deferred["outcome"] == "deferred" and "until" in deferred
            assert deferred["reason"].startswith("delayed 1s until ")
            assert notification(client, deferred["notification_ids"][0])["status"] == "scheduled"
            client.post("/v1/events", json=cloudevent("order.paid", "e-2", **ORDER))
            (cancelled,) = wait_for(
                lambda: [d for d in decisions(client, "e-1") if d["outcome"] == "cancelled"]
            )
            assert cancelled["reason"] == "cancelled by order.paid e-2"
            note = notification(client, cancelled["notification_ids"][0])
            assert note["status"] == "cancelled"
            assert {d["status"] for d in note["deliveries"]} == {"cancelled"}
            wait_for(lambda: client.get("/v1/events/e-2").json().get("processed_at"))
        assert inbox(server, "buyer-1") == []
    finally:
        server.stop()


def test_an_uncancelled_delay_fires(tmp_path: Path) -> None:
    server = Server(tmp_path, config=config(REMINDER)).start()
    try:
        with server.client() as client:
            client.post("/v1/events", json=cloudevent("order.created", "e-1", **ORDER))
            (deferred,) = decisions(client, "e-1")
            (item,) = wait_for(lambda: inbox(server, "buyer-1"), timeout=10)
            assert item["title"] == "order.created o-1"
            note = notification(client, deferred["notification_ids"][0])
            assert note["status"] == "delivered"
    finally:
        server.stop()


def test_deferred_work_survives_kill_9_and_a_cancel_accepted_before_wins(tmp_path: Path) -> None:
    long = {**REMINDER, "delay": "15m"}
    server = Server(tmp_path, config=config(long)).start()
    with server.client() as client:
        client.post("/v1/events", json=cloudevent("order.created", "e-1", **ORDER))
        client.post(
            "/v1/events", json=cloudevent("order.created", "e-2", **{**ORDER, "order_id": "o-2"})
        )
        decisions(client, "e-1")
        decisions(client, "e-2")
        assert (
            client.post(
                "/v1/events",
                json=cloudevent("order.cancelled", "e-3", **{**ORDER, "order_id": "o-2"}),
            ).status_code
            == 202
        )
    server.kill()  # maybe before e-3 was processed: it was accepted, so it must still win
    later = Server(tmp_path, config=config(long), env={"TIDINGS_CLOCK_OFFSET": "16m"})
    later.admin_key, later.env["TIDINGS_API_KEYS"] = (
        server.admin_key,
        server.env["TIDINGS_API_KEYS"],
    )
    later.start()
    try:
        (item,) = wait_for(lambda: inbox(later, "buyer-1"), timeout=10)
        assert item["title"] == "order.created o-1"
        with later.client() as client:
            (second,) = wait_for(
                lambda: [d for d in decisions(client, "e-2") if d["outcome"] == "cancelled"]
            )
            assert second["reason"] == "cancelled by order.cancelled e-3"
        assert [i["title"] for i in inbox(later, "buyer-1")] == ["order.created o-1"]
    finally:
        later.stop()


def test_digest_folds_a_window_of_events_into_one_notification(tmp_path: Path) -> None:
    rule = {
        "id": "seller-new-orders",
        "on": "order.paid",
        "to": "seller",
        "template": "digest",
        "digest": {"window": "1s"},
    }
    server = Server(tmp_path, config=config(rule)).start()
    try:
        with server.client() as client:
            client.put("/v1/subscribers/seller-1", json={"locale": "en-US"})
            batch = [
                cloudevent("order.paid", f"e-{n}", **{**ORDER, "order_id": f"o-{n}"})
                for n in range(3)
            ]
            for event in batch:
                assert client.post("/v1/events", json=event).status_code == 202
            made = [decisions(client, f"e-{n}")[0] for n in range(3)]
            assert made[0]["outcome"] == "deferred"
            digest_id = made[0]["notification_ids"][0]
            assert [(d["outcome"], d["notification_ids"]) for d in made[1:]] == [
                ("digested", [digest_id])
            ] * 2
            assert made[2]["reason"] == f"folded into digest {digest_id} (3 events so far)"
            (item,) = wait_for(lambda: inbox(server, "seller-1"), timeout=10)
            assert item["title"] == "You have 3 new paid orders"
            assert item["body"].split() == ["o-0", "o-1", "o-2"]
            client.post("/v1/events", json=cloudevent("order.paid", "e-9", **ORDER))
            assert decisions(client, "e-9")[0]["outcome"] == "deferred"  # the next window
    finally:
        server.stop()


def test_quiet_hours_caps_and_required_categories(tmp_path: Path) -> None:
    promo = {"id": "promo", "on": "promo.sent", "category": "marketing"}
    paid = {"id": "paid", "on": "order.paid"}
    server = Server(tmp_path, config=config(promo, paid)).start()
    tz = ZoneInfo("Asia/Shanghai")
    local = datetime.now(tz)
    start = (local - timedelta(hours=1)).strftime("%H:%M")
    end = (local + timedelta(hours=1)).strftime("%H:%M")
    try:
        with server.client() as client:
            client.put("/v1/subscribers/buyer-1", json={"timezone": "Asia/Shanghai"})
            client.put(
                "/v1/subscribers/buyer-1/preferences",
                json={"quiet_hours": {"start": start, "end": end}},
            )
            for n in range(3):
                client.post(
                    "/v1/events", json=cloudevent("promo.sent", f"p-{n}", buyer_id="buyer-1")
                )
            client.post("/v1/events", json=cloudevent("order.paid", "e-1", **ORDER))
            first, second, third = (decisions(client, f"p-{n}")[0] for n in range(3))
            assert first["outcome"] == second["outcome"] == "deferred"
            assert first["reason"].startswith(f"quiet hours until {end} Asia/Shanghai")
            assert third["outcome"] == "suppressed"
            assert third["reason"] == "over the cap of 2 per 1d for marketing"
            (required,) = decisions(client, "e-1")
            assert required["outcome"] == "sent"
        assert [i["title"] for i in inbox(server, "buyer-1")] == ["order.paid o-1"]
    finally:
        server.stop()


def test_a_late_event_made_stale_by_the_life_cycle_is_suppressed(tmp_path: Path) -> None:
    rules = [{"id": "refunded", "on": "refund.completed"}, {"id": "shipped", "on": "order.shipped"}]
    server = Server(tmp_path, config=config(*rules)).start()
    try:
        with server.client() as client:
            client.post(
                "/v1/events", json=cloudevent("refund.completed", "e-1", refund_id="r-1", **ORDER)
            )
            assert decisions(client, "e-1")[0]["outcome"] == "sent"
            client.post("/v1/events", json=cloudevent("order.shipped", "e-2", **ORDER))
            (stale,) = decisions(client, "e-2")
            assert stale["outcome"] == "suppressed"
            assert stale["reason"] == (
                "stale: refund.completed e-1 was already processed for o-1, "
                "so this order.shipped is no longer news"
            )
    finally:
        server.stop()


def test_ttl_expires_an_undelivered_notification(tmp_path: Path) -> None:
    rule = {"id": "shipped", "on": "order.shipped", "channels": ["email"], "ttl": "2s"}
    smtp = {
        "kind": "smtp",
        "host": "127.0.0.1",
        "port": free_port(),
        "from": "shop@shop.test",
        "retry": {"attempts": 50, "backoff": "200ms", "max_backoff": "300ms"},
    }
    server = Server(tmp_path, config=config(rule, providers={"email": [smtp]})).start()
    try:
        with server.client() as client:
            client.put("/v1/subscribers/buyer-1", json={"email": "buyer@shop.test"})
            client.post("/v1/events", json=cloudevent("order.shipped", "e-1", **ORDER))
            (decision,) = decisions(client, "e-1")
            note_id = decision["notification_ids"][0]
            note = wait_for(
                lambda: (n := notification(client, note_id))["status"] == "expired" and n,
                timeout=10,
            )
            (email,) = note["deliveries"]
            assert email["status"] == "expired" and email["attempts"] >= 1
    finally:
        server.stop()


def test_timed_fallback_only_for_an_unread_inapp_item(tmp_path: Path) -> None:
    rule = {
        "id": "shipped",
        "on": "order.shipped",
        "channels": ["inapp"],
        "fallback": ["email"],
        "fallback_after": "2s",
    }
    server = Server(tmp_path, config=config(rule)).start()
    try:
        with server.client() as client:
            for buyer in ("buyer-1", "buyer-2"):
                client.put(f"/v1/subscribers/{buyer}", json={"email": f"{buyer}@shop.test"})
            for n, buyer in enumerate(("buyer-1", "buyer-2")):
                client.post(
                    "/v1/events",
                    json=cloudevent(
                        "order.shipped",
                        f"e-{n}",
                        **{**ORDER, "order_id": f"o-{n}", "buyer_id": buyer},
                    ),
                )
            (item,) = wait_for(lambda: inbox(server, "buyer-1"))
            token = server.token("buyer-1")
            read = httpx.post(
                f"{server.url}/v1/inbox/{item['id']}/read",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert read.status_code == 200, read.text

            def fallback(event_id: str) -> dict[str, Any] | None:
                (decision,) = decisions(client, event_id)
                note = notification(client, decision["notification_ids"][0])
                email = [d for d in note["deliveries"] if d["channel"] == "email"]
                return (
                    email[0]
                    if email and email[0]["status"] not in ("scheduled", "pending", "sending")
                    else None
                )

            read_one = wait_for(lambda: fallback("e-0"), timeout=10)
            unread_one = wait_for(lambda: fallback("e-1"), timeout=10)
            assert read_one["status"] == "suppressed" and read_one["fallback"] is True
            assert read_one["last_error"] == "read in the in-app inbox before the fallback time"
            assert unread_one["status"] == "sent" and unread_one["provider"] == "console"
    finally:
        server.stop()
