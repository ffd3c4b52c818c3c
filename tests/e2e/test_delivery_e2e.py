"""Delivery end to end: a real ``tidings serve`` against a real SMTP server (aiosmtpd) and a
webhook receiver that verifies Standard Webhooks signatures. Faults, retries, the breaker,
dead letters and replay, metrics and the per-notification attempt log."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.smtp_sink import SmtpSink
from fakes.webhook_receiver import Reply, WebhookReceiver
from testbed.harness import Server, cloudevent, wait_for

pytestmark = pytest.mark.timeout(90)

TEMPLATES = {
    "plain": {"en-US": {"title": "{{ event.type }} {{ order_id }}", "body": "order {{ order_id }}"}}
}


def order(n: int | str, seller: str = "seller-1", buyer: str = "buyer-1") -> dict[str, Any]:
    return {
        "order_id": f"o-{n}",
        "buyer_id": buyer,
        "seller_id": seller,
        "amount": "9.00",
        "currency": "CNY",
    }


def config(
    *,
    channel: str,
    providers: dict[str, list[dict[str, Any]]],
    attempts: int = 4,
    timeout: str = "2s",
    priority: str = "high",
) -> dict[str, Any]:
    return {
        "categories": {"order_updates": {"required": True}},
        "templates": TEMPLATES,
        "delivery": {
            "retry": {"attempts": attempts, "backoff": "100ms", "max_backoff": "300ms"},
            "timeout": timeout,
        },
        "providers": providers,
        "rules": [
            {
                "id": f"paid-{channel}",
                "on": "order.paid",
                "to": "seller" if channel == "webhook" else "buyer",
                "category": "order_updates",
                "priority": priority,
                "channels": [channel],
                "template": "plain",
            }
        ],
    }


def webhook_providers(**extra: Any) -> dict[str, list[dict[str, Any]]]:
    return {"webhook": [{"kind": "webhook", "allow_private_networks": True, **extra}]}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def start(tmp_path: Path, cfg: dict[str, Any]) -> Server:
    return Server(tmp_path, config=cfg).start()


def register_seller(client: httpx.Client, receiver: WebhookReceiver, seller: str) -> None:
    assert client.put(f"/v1/subscribers/{seller}", json={"name": "Shop"}).status_code in (200, 201)
    response = client.post(
        f"/v1/subscribers/{seller}/webhooks", json={"url": receiver.url, "secret": receiver.secret}
    )
    assert response.status_code == 201, response.text


def register_buyer(client: httpx.Client, buyer: str) -> None:
    body = {"email": f"{buyer}@shop.test", "locale": "en-US"}
    assert client.put(f"/v1/subscribers/{buyer}", json=body).status_code in (200, 201)


def post(client: httpx.Client, event_id: str, **data: Any) -> None:
    response = client.post("/v1/events", json=cloudevent("order.paid", event_id, **data))
    assert response.status_code == 202, response.text


def notification_of(client: httpx.Client, event_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        items = client.get("/v1/notifications", params={"event_id": event_id}).json()["items"]
        if not items:
            return None
        found: dict[str, Any] = client.get(f"/v1/notifications/{items[0]['id']}").json()
        return found

    result: dict[str, Any] = wait_for(find, timeout=15)
    return result


def settled(
    client: httpx.Client, event_id: str, status: str, timeout: float = 20
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        note = notification_of(client, event_id)
        return note if note["deliveries"][0]["status"] == status else None

    result: dict[str, Any] = wait_for(check, timeout=timeout, interval=0.1)
    return result


def metrics(client: httpx.Client) -> dict[str, float]:
    """``/metrics`` as ``{'name{labels}': value}``."""
    text = client.get("/metrics").text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# --- webhooks ---------------------------------------------------------------------------


def test_500_500_200_is_three_attempts_and_one_delivery(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.script(Reply(500), Reply(500), Reply(200))
    server = start(tmp_path, config(channel="webhook", providers=webhook_providers()))
    try:
        with server.client() as client:
            register_seller(client, receiver, "seller-1")
            post(client, "e-1", **order(1))
            note = settled(client, "e-1", "delivered")
            values = metrics(client)
    finally:
        server.stop()
    (delivery,) = note["deliveries"]
    assert note["status"] == "delivered"
    assert delivery["attempts"] == 3 and delivery["provider"] == "webhook"
    log = delivery["attempt_log"]
    assert [a["number"] for a in log] == [1, 2, 3]
    assert [a["outcome"] for a in log] == ["retry", "retry", "delivered"]
    assert "HTTP 500" in log[0]["error"] and log[2]["error"] is None
    latency = delivery["latency"]
    assert all(latency[k] is not None and latency[k] >= 0 for k in ("tp", "tc", "td", "total"))
    # every request verified, all three carried the delivery id as webhook-id
    assert [d.status for d in receiver.deliveries] == [500, 500, 200]
    assert all(d.verified for d in receiver.deliveries)
    assert set(receiver.ids) == {delivery["id"]}
    payload = receiver.deliveries[-1].payload
    assert payload["type"] == "order.paid" and payload["data"]["order_id"] == "o-1"
    assert payload["data"]["notification"]["id"] == note["id"]
    label = 'channel="webhook",provider="webhook"'
    assert values[f'tidings_deliveries_total{{{label},status="pending"}}'] == 2
    assert values[f'tidings_deliveries_total{{{label},status="delivered"}}'] == 1
    for stage in ("produce", "queue", "deliver", "total"):
        assert values[f'tidings_latency_seconds_count{{channel="webhook",stage="{stage}"}}'] == 1
    assert values['tidings_provider_up{provider="webhook"}'] == 1
    assert values["tidings_dead_letters"] == 0
    assert {values[f'tidings_queue_depth{{lane="{lane}"}}'] for lane in ("high", "low")} == {0}


def test_retry_after_is_honoured(tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.script(Reply(429, headers={"Retry-After": "2"}), Reply(200))
    server = start(tmp_path, config(channel="webhook", providers=webhook_providers()))
    try:
        with server.client() as client:
            register_seller(client, receiver, "seller-1")
            post(client, "e-1", **order(1))
            note = settled(client, "e-1", "delivered")
    finally:
        server.stop()
    first, second = note["deliveries"][0]["attempt_log"]
    assert first["outcome"] == "retry" and "HTTP 429" in first["error"]
    # the backoff alone would be at most 100 ms: the wait is the receiver's Retry-After
    assert at(second["started_at"]) - at(first["finished_at"]) >= 1.95
    assert [d.status for d in receiver.deliveries] == [429, 200]


def test_a_hanging_receiver_times_out_and_is_retried(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.script(Reply(200, delay=5))
    cfg = config(channel="webhook", providers=webhook_providers(), timeout="500ms")
    server = start(tmp_path, cfg)
    try:
        with server.client() as client:
            register_seller(client, receiver, "seller-1")
            post(client, "e-1", **order(1))
            sending = wait_for(
                lambda: (n := notification_of(client, "e-1"))["status"] == "sending" and n
            )
            assert sending["deliveries"][0]["status"] == "sending"
            note = settled(client, "e-1", "delivered")
    finally:
        server.stop()
    first, second = note["deliveries"][0]["attempt_log"]
    assert first["outcome"] == "retry" and "timed out" in first["error"]
    assert at(first["finished_at"]) - at(first["started_at"]) < 2
    assert second["outcome"] == "delivered"
    assert len(set(receiver.ids)) == 1  # the receiver saw one webhook-id twice: dedupable


def test_budget_spent_dead_letter_then_replay_by_api_and_cli(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.script(*[Reply(503)] * 6)  # two deliveries × a budget of three attempts
    # six failures in a row: above the breaker's threshold the endpoint's circuit would open
    # and hold the rest back for its cooldown (tests/delivery/test_endpoint_breaker.py)
    providers = webhook_providers(breaker={"threshold": 10})
    server = start(tmp_path, config(channel="webhook", providers=providers, attempts=3))
    try:
        with server.client() as client:
            register_seller(client, receiver, "seller-1")
            post(client, "e-1", **order(1))
            post(client, "e-2", **order(2))
            dead = [settled(client, e, "dead") for e in ("e-1", "e-2")]
            assert all(n["status"] == "dead" for n in dead)
            assert [len(n["deliveries"][0]["attempt_log"]) for n in dead] == [3, 3]
            letters = client.get("/v1/dlq").json()["items"]
            by_delivery = {item["delivery_id"]: item for item in letters}
            ids = [n["deliveries"][0]["id"] for n in dead]
            assert set(by_delivery) == set(ids)
            assert all("HTTP 503" in item["reason"] for item in letters)
            assert metrics(client)["tidings_dead_letters"] == 2

            listed = cli(server, "dlq", "list")
            assert by_delivery[ids[1]]["id"] in listed

            replay = client.post(f"/v1/dlq/{by_delivery[ids[0]]['id']}/replay")
            assert replay.status_code == 202
            assert replay.json()["delivery_id"] == ids[0]
            assert client.post(f"/v1/dlq/{by_delivery[ids[0]]['id']}/replay").status_code == 404
            first = settled(client, "e-1", "delivered", timeout=5)

            out = cli(server, "dlq", "replay", by_delivery[ids[1]]["id"])
            assert "replayed 1" in out
            second = settled(client, "e-2", "delivered", timeout=5)
            assert client.get("/v1/dlq").json()["items"] == []
            assert metrics(client)["tidings_dead_letters"] == 0
    finally:
        server.stop()
    for note in (first, second):
        log = note["deliveries"][0]["attempt_log"]
        assert [a["outcome"] for a in log] == ["retry"] * 3 + ["delivered"]
    delivered = [d.webhook_id for d in receiver.deliveries if d.status == 200]
    assert sorted(delivered) == sorted(ids)


def cli(server: Server, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tidings.cli", *args],
        cwd=server.workdir,
        env={**server.env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_flaky_receiver_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    # a 500 every third request, a 429 now and then: everything arrives, exactly once
    replies = [Reply(500) if i % 3 == 0 else Reply(200) for i in range(60)]
    replies[5] = Reply(429, headers={"Retry-After": "0"})
    receiver.script(*replies)
    sellers = [f"seller-{i}" for i in range(4)]
    server = start(tmp_path, config(channel="webhook", providers=webhook_providers(), attempts=6))
    try:
        with server.client() as client:
            for seller in sellers:
                register_seller(client, receiver, seller)
            for n in range(40):
                post(client, f"e-{n}", **order(n, seller=sellers[n % 4]))
            notes = [settled(client, f"e-{n}", "delivered") for n in range(40)]
    finally:
        server.stop()
    ids = {n["deliveries"][0]["id"] for n in notes}
    answered = Counter(d.webhook_id for d in receiver.deliveries if d.status == 200)
    assert set(answered) == ids
    assert set(answered.values()) == {1}
    assert all(d.verified for d in receiver.deliveries)


def test_provider_concurrency_is_honoured(tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.script(*[Reply(200, delay=0.2)] * 12)
    providers = webhook_providers(concurrency=2, per_endpoint_concurrency=50, rate_limit=20)
    server = start(tmp_path, config(channel="webhook", providers=providers))
    try:
        with server.client() as client:
            register_seller(client, receiver, "seller-1")
            for n in range(12):
                post(client, f"e-{n}", **order(n))
            notes = [settled(client, f"e-{n}", "delivered") for n in range(12)]
    finally:
        server.stop()
    assert receiver.max_in_flight == 2
    assert len(receiver.deliveries) == 12

    starts = sorted(at(n["deliveries"][0]["attempt_log"][0]["started_at"]) for n in notes)
    # concurrency 2 and 200 ms per call: six rounds, whatever the rate limit allows
    assert starts[-1] - starts[0] >= 0.9


def test_rate_limit_spaces_calls(tmp_path: Path, receiver: WebhookReceiver) -> None:
    providers = webhook_providers(rate_limit=5)
    server = start(tmp_path, config(channel="webhook", providers=providers))
    try:
        with server.client() as client:
            register_seller(client, receiver, "seller-1")
            for n in range(10):
                post(client, f"e-{n}", **order(n))
            notes = [settled(client, f"e-{n}", "delivered") for n in range(10)]
    finally:
        server.stop()
    starts = sorted(at(n["deliveries"][0]["attempt_log"][0]["started_at"]) for n in notes)
    # a burst of five, then one every 200 ms: ten calls span at least one second
    assert starts[-1] - starts[0] >= 0.9
    assert len(receiver.deliveries) == 10


def test_a_private_endpoint_is_refused_unless_allowed(tmp_path: Path) -> None:
    server = start(
        tmp_path, config(channel="webhook", providers={"webhook": [{"kind": "webhook"}]})
    )
    try:
        with server.client() as client:
            client.put("/v1/subscribers/seller-1", json={"name": "Shop"})
            for url in ("http://127.0.0.1:9/hook", "http://10.0.0.7/h", "http://localhost/h"):
                response = client.post("/v1/subscribers/seller-1/webhooks", json={"url": url})
                assert response.status_code == 422, response.text
                assert "/url" in response.text
            ok = client.post(
                "/v1/subscribers/seller-1/webhooks", json={"url": "https://erp.example.com/h"}
            )
            assert ok.status_code == 201
    finally:
        server.stop()


# --- email ------------------------------------------------------------------------------


def test_smtp_down_then_back_delivers_once(tmp_path: Path) -> None:
    sink = SmtpSink()  # not started: connections are refused
    providers = {"email": [{**sink.settings(), "breaker": {"threshold": 100}}]}
    server = start(tmp_path, config(channel="email", providers=providers, attempts=30))
    try:
        with server.client() as client:
            register_buyer(client, "buyer-1")
            post(client, "e-1", **order(1))
            wait_for(
                # (views.py leaves attempt_log out until the first attempt)
                lambda: (
                    len(notification_of(client, "e-1")["deliveries"][0].get("attempt_log", [])) >= 2
                )
            )
            sink.start()
            note = settled(client, "e-1", "sent")
    finally:
        server.stop()
        sink.stop()
    (delivery,) = note["deliveries"]
    log = delivery["attempt_log"]
    assert log[-1]["outcome"] == "sent" and all(a["outcome"] == "retry" for a in log[:-1])
    assert all("smtp" in (a["error"] or "smtp") for a in log)
    (mail,) = sink.messages
    assert mail.rcpt_tos == ["buyer-1@shop.test"]
    assert delivery["id"] in mail.message["Message-ID"]


def test_failover_to_the_backup_smtp_and_back(tmp_path: Path) -> None:
    primary, backup = SmtpSink(), SmtpSink()  # the primary is down
    breaker = {"threshold": 3, "cooldown": "1s"}
    providers = {
        "email": [
            {**primary.settings(), "name": "primary", "breaker": breaker},
            {**backup.settings(), "name": "backup", "breaker": breaker},
        ]
    }
    backup.start()
    server = start(tmp_path, config(channel="email", providers=providers, attempts=8))
    try:
        with server.client() as client:
            buyers = [f"buyer-{i}" for i in range(6)]
            for buyer in buyers:
                register_buyer(client, buyer)
            for n, buyer in enumerate(buyers):
                post(client, f"e-{n}", **order(n, buyer=buyer))
            first = [settled(client, f"e-{n}", "sent") for n in range(6)]
            values = metrics(client)
            assert values['tidings_provider_up{provider="primary"}'] == 0
            assert values['tidings_provider_up{provider="backup"}'] == 1

            primary.start()
            time.sleep(1.2)  # the breaker's cooldown
            # after the cooldown one probe goes to the primary, succeeds, and it takes over
            later = []
            for n in range(6, 10):
                post(client, f"e-{n}", **order(n, buyer=buyers[n % 6]))
                later.append(settled(client, f"e-{n}", "sent"))
            values = metrics(client)
    finally:
        server.stop()
        primary.stop()
        backup.stop()
    assert {n["deliveries"][0]["provider"] for n in first} == {"backup"}
    tried_primary = [
        a for n in first for a in n["deliveries"][0]["attempt_log"] if a["provider"] == "primary"
    ]
    assert len(tried_primary) >= 3 and all(a["outcome"] == "retry" for a in tried_primary)
    # once the third failure opened the circuit, no call went to the primary (until cooldown)
    opened = sorted(at(a["finished_at"]) for a in tried_primary)[2]
    assert all(at(a["started_at"]) <= opened for a in tried_primary)
    assert [n["deliveries"][0]["provider"] for n in later] == ["primary"] * 4
    assert values['tidings_provider_up{provider="primary"}'] == 1
    label = 'channel="email",provider="{}",status="sent"'
    assert values[f"tidings_deliveries_total{{{label.format('backup')}}}"] == 6
    assert values[f"tidings_deliveries_total{{{label.format('primary')}}}"] == 4
    # one mail per delivery, across both servers
    mails = primary.messages + backup.messages
    message_ids = [m.message["Message-ID"] for m in mails]
    assert len(message_ids) == len(set(message_ids)) == 10
    for note in first + later:
        (delivery,) = note["deliveries"]
        assert sum(delivery["id"] in mid for mid in message_ids) == 1
    assert re.match(r"<.+@.+>", message_ids[0])
