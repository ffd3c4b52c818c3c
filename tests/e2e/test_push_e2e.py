"""Push and SMS end to end: ``tidings serve`` against the FCM, APNs, Web Push and Twilio fakes.

The fakes run in this process (APNs over HTTP/2 + TLS with a throwaway CA the service trusts
through ``SSL_CERT_FILE``); the service is a real subprocess. Each test uses its own
subscribers, devices and order ids, so the fakes and one service are shared by the module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fakes.apns_server import ApnsServer, device_token, write_p8
from fakes.fcm_server import FcmServer, write_service_account
from fakes.tls import BackgroundServer, TestPki, free_port, make_pki
from fakes.twilio_server import TwilioServer
from fakes.webpush_service import WebPushService, b64url
from testbed.harness import Server, cloudevent, wait_for
from tidings.channels.apns import apns_id

SENDER = "+15550000000"
VENDOR_KEY = "vendor-key-123"
TEMPLATES = {
    "order_paid": {
        "en-US": {
            "title": "Payment received",
            "body": "Order {{ order_id }}: {{ amount | money(currency) }} paid.",
        }
    }
}
RULE = {
    "id": "order-paid-buyer",
    "on": "order.paid",
    "to": "buyer",
    "category": "order_updates",
    "priority": "high",
    "channels": ["push"],
    "fallback": ["sms"],
    "template": "order_paid",
}
FAST_RETRY = {"attempts": 10, "backoff": "50ms", "max_backoff": "100ms"}


@dataclass
class SmsVendor:
    """A second SMS vendor's JSON API: ``X-Api-Key`` auth, ``{to, from, text, id}``."""

    received: list[dict[str, Any]] = field(default_factory=list)

    async def sms(self, request: Request) -> Response:
        if request.headers.get("x-api-key") != VENDOR_KEY:
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        body = json.loads(await request.body())
        if set(body) != {"to", "from", "text", "id"}:
            return JSONResponse({"error": "expected to, from, text, id"}, status_code=422)
        self.received.append(body)
        return JSONResponse({"message_id": f"v-{len(self.received)}"})

    def app(self) -> Starlette:
        """The ASGI app: ``POST /v1/sms``."""
        return Starlette(routes=[Route("/v1/sms", self.sms, methods=["POST"])])


@dataclass
class Fakes:
    """Every fake provider, running, with the provider config entries that point at them."""

    pki: TestPki
    fcm: FcmServer
    apns: ApnsServer
    webpush: WebPushService
    vapid_public: str
    twilio: TwilioServer
    vendor: SmsVendor
    push: list[dict[str, Any]]
    twilio_entry: dict[str, Any]
    vendor_entry: dict[str, Any]


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fakes]:
    keys = tmp_path_factory.mktemp("keys")
    pki = make_pki(keys / "pki")
    fcm_port = free_port()
    fcm_url = f"http://127.0.0.1:{fcm_port}"
    fcm = FcmServer(write_service_account(keys / "fcm.json", f"{fcm_url}/token"), retry_after=2)
    apns = ApnsServer(write_p8(keys / "apns.p8"))
    vapid = ec.generate_private_key(ec.SECP256R1())
    (keys / "vapid.pem").write_bytes(
        vapid.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    vapid_public = b64url(
        vapid.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )
    twilio = TwilioServer()
    vendor = SmsVendor()
    webpush_port = free_port()
    webpush = WebPushService(f"http://127.0.0.1:{webpush_port}")
    servers = [
        BackgroundServer(fcm.app(), port=fcm_port),
        BackgroundServer(apns.app(), engine="hypercorn", pki=pki),
        BackgroundServer(webpush.app(), port=webpush_port),
        BackgroundServer(twilio.app()),
        BackgroundServer(vendor.app()),
    ]
    started: list[BackgroundServer] = []
    try:
        for server in servers:
            started.append(server.start())
        _, apns_server, _, twilio_server, vendor_server = servers
        push = [
            {"kind": "fcm", "base_url": fcm_url, "service_account_file": str(keys / "fcm.json")},
            {
                "kind": "apns",
                "base_url": apns_server.url,
                "team_id": apns.team_id,
                "key_id": apns.key_id,
                "private_key_file": str(keys / "apns.p8"),
                "topic": apns.topic,
            },
            {
                "kind": "webpush",
                "vapid_private_key_file": str(keys / "vapid.pem"),
                "subject": "mailto:ops@shop.test",
            },
        ]
        twilio_entry = {
            "kind": "twilio",
            "base_url": twilio_server.url,
            "account_sid": twilio.account_sid,
            "auth_token": twilio.auth_token,
            "from": SENDER,
        }
        vendor_entry = {
            "kind": "http",
            "url": f"{vendor_server.url}/v1/sms",
            "headers": {"X-Api-Key": VENDOR_KEY},
            "from": "Shop",
        }
        yield Fakes(
            pki, fcm, apns, webpush, vapid_public, twilio, vendor, push, twilio_entry,
            vendor_entry,
        )  # fmt: skip
    finally:
        for server in reversed(started):
            server.stop()


def start_engine(workdir: Path, fakes: Fakes, sms: list[dict[str, Any]]) -> Server:
    config = {
        "categories": {"order_updates": {"required": True}},
        "templates": TEMPLATES,
        "rules": [RULE],
        "providers": {"push": fakes.push, "sms": sms},
        "delivery": {"retry": FAST_RETRY},
    }
    return Server(workdir, config=config, env={"SSL_CERT_FILE": str(fakes.pki.ca_file)}).start()


@pytest.fixture(scope="module")
def engine(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with every push provider and Twilio as the only SMS provider."""
    server = start_engine(tmp_path_factory.mktemp("engine"), fakes, [fakes.twilio_entry])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(engine: Server) -> Iterator[httpx.Client]:
    with engine.client() as http:
        yield http


def paid(order_id: str, buyer_id: str) -> dict[str, Any]:
    return cloudevent(
        "order.paid",
        f"evt-{order_id}",
        order_id=order_id,
        buyer_id=buyer_id,
        seller_id="seller-1",
        amount="12.50",
        currency="USD",
    )


def register(client: httpx.Client, buyer: str, **device: Any) -> str:
    response = client.post(f"/v1/subscribers/{buyer}/devices", json=device)
    assert response.status_code == 201, response.text
    return str(response.json()["device_id"])


def put_buyer(client: httpx.Client, buyer: str, phone: str) -> None:
    response = client.put(f"/v1/subscribers/{buyer}", json={"phone": phone, "locale": "en-US"})
    assert response.status_code in (200, 201), response.text


def the_notification(client: httpx.Client, event_id: str) -> dict[str, Any]:
    """The rule's one notification for ``event_id``, once the event is processed."""

    def found() -> list[dict[str, Any]] | None:
        items = client.get("/v1/notifications", params={"event_id": event_id}).json()["items"]
        return items or None

    (item,) = wait_for(found)
    return client.get(f"/v1/notifications/{item['id']}").json()  # type: ignore[no-any-return]


def settled(client: httpx.Client, note_id: str, count: int) -> dict[str, Any]:
    """The notification once it has ``count`` deliveries and none of them is still waiting."""

    def done() -> dict[str, Any] | None:
        note: dict[str, Any] = client.get(f"/v1/notifications/{note_id}").json()
        statuses = [d["status"] for d in note["deliveries"]]
        if len(statuses) == count and not {"pending", "sending"} & set(statuses):
            return note
        return None

    return wait_for(done, timeout=15)  # type: ignore[no-any-return]


def sms_to(fakes: Fakes, phone: str) -> list[dict[str, str]]:
    return [form for form in fakes.twilio.sent if form["To"] == phone]


def test_a_buyer_gets_order_paid_on_every_device(client: httpx.Client, fakes: Fakes) -> None:
    buyer, order, phone = "buyer-all", "order-1001", "+8613800138001"
    put_buyer(client, buyer, phone)
    fcm_token = "fcm-" + "b" * 150
    apns_token = device_token()
    subscription = fakes.webpush.subscribe(application_server_key=fakes.vapid_public)
    devices = {
        register(client, buyer, kind="fcm", token=fcm_token): "fcm",
        register(client, buyer, kind="apns", token=apns_token): "apns",
        register(client, buyer, kind="webpush", subscription=subscription): "webpush",
    }
    assert client.post("/v1/events", json=paid(order, buyer)).status_code == 202

    note = the_notification(client, f"evt-{order}")
    note = settled(client, note["id"], 3)
    title, body = "Payment received", f"Order {order}: $12.50 paid."
    assert (note["title"], note["body"]) == (title, body)
    by_device = {d["device_id"]: d for d in note["deliveries"]}
    assert set(by_device) == set(devices)
    for device_id, kind in devices.items():
        delivery = by_device[device_id]
        assert (delivery["channel"], delivery["destination"]) == ("push", kind)
        assert (delivery["status"], delivery["provider"]) == ("sent", kind), delivery

    (fcm_message,) = [m for m in fakes.fcm.sent if m["token"] == fcm_token]
    assert fcm_message["notification"] == {"title": title, "body": body}
    assert fcm_message["android"]["collapse_key"] == order
    assert fcm_message["android"]["priority"] == "HIGH"
    assert fcm_message["data"]["order_id"] == order

    (apns_push,) = [r for r in fakes.apns.received if r["token"] == apns_token]
    apns_delivery = next(d for d in note["deliveries"] if d["destination"] == "apns")
    assert apns_push["headers"]["apns-priority"] == "10"
    assert apns_push["headers"]["apns-collapse-id"] == order
    assert apns_push["headers"]["apns-id"] == apns_id(apns_delivery["id"])
    assert apns_push["payload"]["aps"]["alert"] == {"title": title, "body": body}

    sub_id = subscription["endpoint"].rsplit("/", 1)[1]
    (web,) = [r for r in fakes.webpush.received if r["sub_id"] == sub_id]
    shown = json.loads(web["plaintext"])
    assert (shown["title"], shown["body"]) == (title, body)
    assert web["headers"]["urgency"] == "high"

    # every push arrived, so the sms fallback never fired
    assert not any(d["fallback"] for d in note["deliveries"])
    assert sms_to(fakes, phone) == []


def test_a_dead_fcm_token_is_deactivated_and_sms_takes_over(
    client: httpx.Client, fakes: Fakes
) -> None:
    buyer, order, phone = "buyer-dead", "order-2001", "+8613800138002"
    put_buyer(client, buyer, phone)
    dead_token = "fcm-" + "d" * 150
    fakes.fcm.dead.add(dead_token)
    device_id = register(client, buyer, kind="fcm", token=dead_token)
    client.post("/v1/events", json=paid(order, buyer))

    note = the_notification(client, f"evt-{order}")
    note = settled(client, note["id"], 2)
    push, sms = sorted(note["deliveries"], key=lambda d: d["fallback"])
    assert (push["channel"], push["status"], push["fallback"]) == ("push", "failed", False)
    assert "UNREGISTERED" in push["last_error"]
    assert (sms["channel"], sms["status"], sms["fallback"]) == ("sms", "sent", True)
    assert sms["provider"] == "twilio"

    (device,) = client.get(f"/v1/subscribers/{buyer}/devices").json()["items"]
    assert device["device_id"] == device_id and device["active"] is False
    assert dead_token not in json.dumps(device)
    (text,) = sms_to(fakes, phone)
    assert (text["From"], text["Body"]) == (SENDER, f"Order {order}: $12.50 paid.")

    # the next order finds no active device: sms at once, and FCM is not called again
    calls = len(fakes.fcm.sent)
    client.post("/v1/events", json=paid("order-2002", buyer))
    wait_for(lambda: len(sms_to(fakes, phone)) == 2)
    assert len(fakes.fcm.sent) == calls


def test_dead_devices_among_live_ones_are_deactivated_without_fallback(
    client: httpx.Client, fakes: Fakes
) -> None:
    buyer, order, phone = "buyer-mixed", "order-2101", "+8613800138021"
    put_buyer(client, buyer, phone)
    dead_fcm, dead_apns = "fcm-" + "e" * 150, device_token()
    fakes.fcm.dead.add(dead_fcm)
    fakes.apns.unregistered.add(dead_apns)
    gone_web = fakes.webpush.subscribe()
    fakes.webpush.unsubscribe(gone_web["endpoint"])
    dead = {
        register(client, buyer, kind="fcm", token=dead_fcm),
        register(client, buyer, kind="apns", token=dead_apns),
        register(client, buyer, kind="webpush", subscription=gone_web),
    }
    live = register(client, buyer, kind="apns", token=device_token())
    client.post("/v1/events", json=paid(order, buyer))

    note = settled(client, the_notification(client, f"evt-{order}")["id"], 4)
    status = {d["device_id"]: d["status"] for d in note["deliveries"]}
    assert status == {**dict.fromkeys(dead, "failed"), live: "sent"}
    active = {
        d["device_id"]: d["active"]
        for d in client.get(f"/v1/subscribers/{buyer}/devices").json()["items"]
    }
    assert active == {**dict.fromkeys(dead, False), live: True}
    # one device was reached, so the sms fallback stays quiet
    assert sms_to(fakes, phone) == []


def test_no_device_falls_back_to_sms_at_once(client: httpx.Client, fakes: Fakes) -> None:
    buyer, order, phone = "buyer-none", "order-3001", "+8613800138003"
    put_buyer(client, buyer, phone)
    client.post("/v1/events", json=paid(order, buyer))

    note = settled(client, the_notification(client, f"evt-{order}")["id"], 1)
    (sms,) = note["deliveries"]
    assert (sms["channel"], sms["status"], sms["provider"]) == ("sms", "sent", "twilio")
    (decision,) = client.get(f"/v1/events/evt-{order}").json()["decisions"]
    assert decision["outcome"] == "sent"
    assert "falling back to sms" in decision["reason"]
    (text,) = sms_to(fakes, phone)
    assert text["Body"] == f"Order {order}: $12.50 paid."


def test_fcm_quota_exceeded_waits_for_retry_after(client: httpx.Client, fakes: Fakes) -> None:
    buyer, order = "buyer-quota", "order-5001"
    put_buyer(client, buyer, "+8613800138005")
    token = "fcm-" + "q" * 150
    fakes.fcm.quota.add(token)
    register(client, buyer, kind="fcm", token=token)
    client.post("/v1/events", json=paid(order, buyer))

    note_id = the_notification(client, f"evt-{order}")["id"]

    def first_attempt() -> bool:
        deliveries = client.get(f"/v1/notifications/{note_id}").json()["deliveries"]
        # no attempt yet: the view leaves attempt_log out rather than giving []
        return any(d.get("attempt_log") for d in deliveries)

    wait_for(first_attempt)
    fakes.fcm.quota.discard(token)  # the quota recovers; the retry must still wait
    note = settled(client, note_id, 1)
    (delivery,) = note["deliveries"]
    assert delivery["status"] == "sent"
    first, second = delivery["attempt_log"]
    assert first["outcome"] == "retry" and "QUOTA_EXCEEDED" in first["error"]
    assert second["outcome"] == "sent"
    waited = stamp(second["started_at"]) - stamp(first["finished_at"])
    assert waited >= fakes.fcm.retry_after, waited
    assert len([m for m in fakes.fcm.sent if m["token"] == token]) == 1


def test_phone_numbers_must_be_e164(client: httpx.Client) -> None:
    for bad in ("13800138000", "+86 138 0013 8000", "+0123456789", "+86-13800138000"):
        response = client.put("/v1/subscribers/buyer-e164", json={"phone": bad})
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["field"] == "/phone"
        assert "E.164" in response.json()["detail"]
    assert client.get("/v1/subscribers/buyer-e164").status_code == 404
    assert client.put(
        "/v1/subscribers/buyer-e164", json={"phone": "+8613800138000"}
    ).status_code in (
        200,
        201,
    )


def test_twilio_500_fails_over_to_the_http_vendor(fakes: Fakes, tmp_path: Path) -> None:
    buyer, order, phone = "buyer-failover", "order-4001", "+8613800138004"
    fakes.twilio.failing.add(phone)
    server = start_engine(tmp_path, fakes, [fakes.twilio_entry, fakes.vendor_entry])
    try:
        with server.client() as client:
            put_buyer(client, buyer, phone)
            client.post("/v1/events", json=paid(order, buyer))
            note = settled(client, the_notification(client, f"evt-{order}")["id"], 1)
    finally:
        server.stop()
        fakes.twilio.failing.discard(phone)
    (sms,) = note["deliveries"]
    assert (sms["status"], sms["provider"]) == ("sent", "http"), sms
    log = sms["attempt_log"]
    # a retry starts with the provider after the one that failed: the vendor takes attempt 2
    assert [a["provider"] for a in log] == ["twilio", "http"]
    assert all(a["outcome"] == "retry" and "20500" in a["error"] for a in log[:-1])
    assert log[-1]["outcome"] == "sent"
    assert sms_to(fakes, phone) == []
    (text,) = [m for m in fakes.vendor.received if m["to"] == phone]
    assert text["id"] == sms["id"] and text["text"] == f"Order {order}: $12.50 paid."


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_twilio_500_fails_over_within_a_small_retry_budget(fakes: Fakes, tmp_path: Path) -> None:
    buyer, order, phone = "buyer-budget", "order-4101", "+8613800138041"
    fakes.twilio.failing.add(phone)
    twilio = {**fakes.twilio_entry, "retry": {**FAST_RETRY, "attempts": 3}}
    server = start_engine(tmp_path, fakes, [twilio, fakes.vendor_entry])
    try:
        with server.client() as client:
            put_buyer(client, buyer, phone)
            client.post("/v1/events", json=paid(order, buyer))
            note = settled(client, the_notification(client, f"evt-{order}")["id"], 1)
    finally:
        server.stop()
        fakes.twilio.failing.discard(phone)
    (sms,) = note["deliveries"]
    assert (sms["status"], sms["provider"]) == ("sent", "http"), sms
    assert [m["to"] for m in fakes.vendor.received].count(phone) == 1
