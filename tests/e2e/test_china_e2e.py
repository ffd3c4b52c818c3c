"""China end to end: ``tidings serve`` → Huawei, Xiaomi, OPPO, vivo, Aliyun, Tencent, WeChat fakes.

One service (a real subprocess) with every China provider pointed at its fake in this process;
each test uses its own buyers, devices and orders, so the fakes and the service are shared.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fakes.china import aliyun_settings, tencent_settings, wechat_settings
from fakes.china_sms import AliyunSmsServer, TencentSmsServer
from fakes.maker_push import HmsServer, OppoServer, VivoServer, XiaomiServer
from fakes.tls import BackgroundServer
from fakes.wechat_server import WeChatServer
from testbed.harness import Server, cloudevent, wait_for

pytestmark = pytest.mark.timeout(120)
PARAMS = ["order", "amount"]
TEMPLATES = {
    "order_paid": {
        "zh-CN": {"title": "支付成功",
                  "body": "订单 {{ order_id }} 已支付 {{ amount | money(currency) }}。",
                  "url": "shop://orders/{{ order_id }}"},
        "sms": {"template_code": "SMS_100001",
                "params": {"order": "{{ order_id }}", "amount": "{{ amount | money(currency) }}"}},
        "wechat": {"template_id": "tmpl-order-paid", "page": "pages/order/detail?id={{ order_id }}",
                   "data": {"character_string1": "{{ order_id }}",
                            "amount2": "{{ amount | money(currency) }}", "thing3": "支付成功"}},
    }
}  # fmt: skip
RULE = {
    "id": "order-paid-buyer",
    "on": "order.paid",
    "to": "buyer",
    "category": "order_updates",
    "priority": "high",
    "channels": ["push", "wechat"],
    "fallback": ["sms"],
    "template": "order_paid",
}
FAST_RETRY = {"attempts": 6, "backoff": "50ms", "max_backoff": "100ms"}


@dataclass
class Fakes:
    """Every China fake, running."""

    hms: HmsServer
    xiaomi: XiaomiServer
    oppo: OppoServer
    vivo: VivoServer
    aliyun: AliyunSmsServer
    tencent: TencentSmsServer
    wechat: WeChatServer


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[Fakes, dict[str, Any]]]:
    found = Fakes(
        HmsServer(), XiaomiServer(), OppoServer(), VivoServer(), AliyunSmsServer(),
        # one approved template code on both clouds, so that either can send the same SMS
        TencentSmsServer(templates={"SMS_100001": PARAMS}), WeChatServer(),
    )  # fmt: skip
    servers = {name: BackgroundServer(getattr(found, name).app()) for name in vars(found)}
    started: list[BackgroundServer] = []
    try:
        for server in servers.values():
            started.append(server.start())
        url = {name: server.url for name, server in servers.items()}
        from fakes.china import MAKERS

        push = [{"kind": m.kind, **m.settings(getattr(found, m.kind), url[m.kind])} for m in MAKERS]
        providers = {
            "push": push,
            "sms": [
                {"kind": "aliyun_sms", **aliyun_settings(found.aliyun, url["aliyun"])},
                {"kind": "tencent_sms", **tencent_settings(found.tencent, url["tencent"])},
            ],
            "wechat": [{"kind": "wechat", **wechat_settings(found.wechat, url["wechat"])}],
        }
        yield found, providers
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture(scope="module")
def engine(
    fakes: tuple[Fakes, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    _, providers = fakes
    config = {
        "default_locale": "zh-CN",
        "categories": {"order_updates": {"required": True}},
        "templates": TEMPLATES,
        "rules": [RULE],
        "providers": providers,
        "delivery": {"retry": FAST_RETRY},
    }
    server = Server(tmp_path_factory.mktemp("china"), config=config).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(engine: Server) -> Iterator[httpx.Client]:
    with engine.client() as http:
        yield http


def openid(n: int) -> str:
    return f"oTest{n:023d}"


def buyer(client: httpx.Client, name: str, phone: str, wechat: str | None = None) -> None:
    profile = {"phone": phone, "locale": "zh-CN", "wechat_openid": wechat}
    response = client.put(f"/v1/subscribers/{name}", json=profile)
    assert response.status_code in (200, 201), response.text


def device(client: httpx.Client, name: str, kind: str, token: str) -> str:
    response = client.post(f"/v1/subscribers/{name}/devices", json={"kind": kind, "token": token})
    assert response.status_code == 201, response.text
    return str(response.json()["device_id"])


def pay(client: httpx.Client, order: str, name: str) -> None:
    event = cloudevent(
        "order.paid", f"evt-{order}", order_id=order, buyer_id=name, seller_id="s-1",
        amount="99.00", currency="CNY",
    )  # fmt: skip
    assert client.post("/v1/events", json=event).status_code == 202


def deliveries(client: httpx.Client, order: str, count: int) -> list[dict[str, Any]]:
    """The notification's deliveries once there are ``count`` and none is still waiting."""

    def done() -> list[dict[str, Any]] | None:
        items = client.get("/v1/notifications", params={"event_id": f"evt-{order}"}).json()
        if not items["items"]:
            return None
        note = client.get(f"/v1/notifications/{items['items'][0]['id']}").json()
        found: list[dict[str, Any]] = note["deliveries"]
        waiting = {"pending", "sending", "scheduled"} & {d["status"] for d in found}
        return found if len(found) == count and not waiting else None

    return wait_for(done, timeout=30)  # type: ignore[no-any-return]


def test_order_paid_reaches_every_maker_and_wechat(
    client: httpx.Client, fakes: tuple[Fakes, dict[str, Any]]
) -> None:
    f, _ = fakes
    name, order, wx = "cn-all", "ord-cn-1", openid(1)
    buyer(client, name, "+8613800138101", wx)
    f.wechat.subscribe(wx, "tmpl-order-paid")
    tokens = {kind: f"{kind}-token-{'a' * 40}" for kind in ("hms", "xiaomi", "oppo", "vivo")}
    ids = {device(client, name, kind, token): kind for kind, token in tokens.items()}
    pay(client, order, name)

    found = deliveries(client, order, 5)
    for d in found:
        assert d["status"] == "sent", d
        if d["channel"] == "push":
            assert d["provider"] == ids[d["device_id"]] == d["destination"]
    assert {d["channel"] for d in found} == {"push", "wechat"}
    (hms,) = [m for m in f.hms.sent if m["token"] == [tokens["hms"]]]
    assert hms["android"]["notification"]["title"] == "支付成功"
    assert hms["android"]["notification"]["body"] == f"订单 {order} 已支付 ¥99.00。"
    assert hms["android"]["notification"]["click_action"]["intent"] == f"shop://orders/{order}"
    assert [m for m in f.xiaomi.sent if m["registration_id"] == tokens["xiaomi"]]
    assert [m for m in f.oppo.sent if m["target_value"] == tokens["oppo"]]
    assert [m for m in f.vivo.sent if m["regId"] == tokens["vivo"]]
    (wechat,) = [m for m in f.wechat.sent if m["touser"] == wx]
    assert wechat["data"]["amount2"] == {"value": "¥99.00"}
    assert wechat["page"] == f"pages/order/detail?id={order}"
    assert not [s for s in f.aliyun.sent if s["OutId"] in {d["id"] for d in found}]


def test_dead_maker_tokens_are_deactivated_with_the_makers_reason_and_sms_takes_over(
    client: httpx.Client, fakes: tuple[Fakes, dict[str, Any]]
) -> None:
    f, _ = fakes
    name, order = "cn-dead", "ord-cn-2"
    buyer(client, name, "+8613800138102")
    dead = {kind: f"{kind}-dead-{'d' * 40}" for kind in ("hms", "xiaomi", "oppo", "vivo")}
    for kind, token in dead.items():
        getattr(f, kind).dead.add(token)
        device(client, name, kind, token)
    pay(client, order, name)

    found = deliveries(client, order, 5)
    push = [d for d in found if d["channel"] == "push"]
    (sms,) = [d for d in found if d["channel"] == "sms"]
    assert all(d["status"] == "failed" for d in push)
    assert (sms["status"], sms["provider"], sms["fallback"]) == ("sent", "aliyun_sms", True)
    (text,) = [s for s in f.aliyun.sent if s["OutId"] == sms["id"]]
    assert text["PhoneNumbers"] == "13800138102" and text["TemplateCode"] == "SMS_100001"
    reasons = {
        d["kind"]: d["deactivated_reason"]
        for d in client.get(f"/v1/subscribers/{name}/devices").json()["items"]
        if not d["active"]
    }
    assert set(reasons) == set(dead)
    for kind, code in (
        ("hms", "80300007"),
        ("xiaomi", "20301"),
        ("oppo", "10000"),
        ("vivo", "10302"),
    ):
        assert code in reasons[kind]
        assert dead[kind] not in reasons[kind]


def test_sms_fails_over_from_a_rate_limited_aliyun_to_tencent(
    client: httpx.Client, fakes: tuple[Fakes, dict[str, Any]]
) -> None:
    f, _ = fakes
    name, order = "cn-failover", "ord-cn-3"
    buyer(client, name, "+8613800138103")
    f.aliyun.limited.add("13800138103")  # isv.BUSINESS_LIMIT_CONTROL
    pay(client, order, name)  # no device, no openid: sms at once

    (sms,) = deliveries(client, order, 1)
    assert (sms["channel"], sms["status"], sms["provider"]) == ("sms", "sent", "tencent_sms")
    log = sms["attempt_log"]
    assert [(a["provider"], a["outcome"]) for a in log] == [
        ("aliyun_sms", "retry"),
        ("tencent_sms", "sent"),
    ]
    assert "isv.BUSINESS_LIMIT_CONTROL" in log[0]["error"]
    (text,) = [s for s in f.tencent.sent if s["SessionContext"] == sms["id"]]
    # in the config's order (the harness writes the YAML with sorted keys: amount, order)
    assert text["TemplateParamSet"] == ["¥99.00", order]


def test_no_wechat_subscription_left_is_suppressed_with_the_reason(
    client: httpx.Client, fakes: tuple[Fakes, dict[str, Any]]
) -> None:
    f, _ = fakes
    name, order, wx = "cn-nosub", "ord-cn-4", openid(4)
    buyer(client, name, "+8613800138104", wx)
    device(client, name, "hms", f"hms-live-{'b' * 40}")
    pay(client, order, name)

    found = deliveries(client, order, 2)
    (wechat,) = [d for d in found if d["channel"] == "wechat"]
    assert wechat["status"] == "suppressed"
    assert wechat["last_error"] == "the buyer has no subscription left for this template"
    assert not [d for d in found if d["channel"] == "sms"]


def test_device_kinds_and_openids_are_validated(client: httpx.Client) -> None:
    bad_openid = client.put("/v1/subscribers/cn-bad", json={"wechat_openid": "not an openid!"})
    assert bad_openid.status_code == 422
    assert "wechat_openid" in bad_openid.json().get("field", bad_openid.text)
    buyer(client, "cn-bad", "+8613800138105", openid(5))
    unknown = client.post(
        "/v1/subscribers/cn-bad/devices", json={"kind": "meizu", "token": "m" * 40}
    )
    assert unknown.status_code == 422
    no_token = client.post("/v1/subscribers/cn-bad/devices", json={"kind": "vivo"})
    assert no_token.status_code == 422
