"""China providers scaled out: ``tidings serve --role api`` and one ``tidings worker`` on
PostgreSQL + RabbitMQ, every China provider pointed at its fake in this process.

The worker sends (the API process only takes the events): pushes to each maker and the
WeChat subscribe message leave from the worker's pool, a dead device token is deactivated
with the maker's code, and the SMS fallback goes out signed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testbed.cluster import Cluster, fresh_database
from testbed.services import Services
from tests.e2e.test_china_e2e import (
    FAST_RETRY,
    RULE,
    TEMPLATES,
    Fakes,
    buyer,
    deliveries,
    device,
    fakes,  # noqa: F401  (module fixture: every China fake, running)
    openid,
    pay,
)

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def cluster(
    fakes: tuple[Fakes, dict[str, Any]],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    services: Services,
    vhosts: Any,
) -> Iterator[Cluster]:
    _, providers = fakes
    config = {
        "default_locale": "zh-CN",
        "categories": {"order_updates": {"required": True}},
        "templates": TEMPLATES,
        "rules": [RULE],
        "providers": providers,
        "delivery": {"retry": FAST_RETRY},
    }
    database = fresh_database(services)
    workdir: Path = tmp_path_factory.mktemp("china-scaleout")
    try:
        running = Cluster(workdir, database.url, vhosts.take(), config=config).start()
        try:
            yield running
        finally:
            running.stop()
    finally:
        database.drop()


@pytest.fixture
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    with cluster.client() as http:
        yield http


def test_the_worker_pushes_to_every_maker_and_wechat(
    client: httpx.Client,
    fakes: tuple[Fakes, dict[str, Any]],  # noqa: F811
    cluster: Cluster,
) -> None:
    f, _ = fakes
    name, order, wx = "so-all", "ord-so-1", openid(11)
    buyer(client, name, "+8613800138111", wx)
    f.wechat.subscribe(wx, "tmpl-order-paid")
    tokens = {kind: f"{kind}-so-token-{'a' * 40}" for kind in ("hms", "xiaomi", "oppo", "vivo")}
    ids = {device(client, name, kind, token): kind for kind, token in tokens.items()}
    pay(client, order, name)

    found = deliveries(client, order, 5)
    assert all(d["status"] == "sent" for d in found), (found, cluster.logs())
    assert {ids[d["device_id"]] for d in found if d["channel"] == "push"} == set(tokens)
    assert [m for m in f.hms.sent if m["token"] == [tokens["hms"]]]
    assert [m for m in f.xiaomi.sent if m["registration_id"] == tokens["xiaomi"]]
    assert [m for m in f.oppo.sent if m["target_value"] == tokens["oppo"]]
    assert [m for m in f.vivo.sent if m["regId"] == tokens["vivo"]]
    (wechat,) = [m for m in f.wechat.sent if m["touser"] == wx]
    assert wechat["data"]["character_string1"] == {"value": order}
    # the stable token: however many processes ask, WeChat issued one
    assert f.wechat.tokens_issued == 1


def test_a_dead_token_is_deactivated_and_the_sms_goes_out_from_the_worker(
    client: httpx.Client,
    fakes: tuple[Fakes, dict[str, Any]],  # noqa: F811
) -> None:
    f, _ = fakes
    name, order = "so-dead", "ord-so-2"
    buyer(client, name, "+8613800138112")
    dead = f"oppo-so-dead-{'d' * 40}"
    f.oppo.dead.add(dead)
    device(client, name, "oppo", dead)
    pay(client, order, name)

    found = deliveries(client, order, 2)
    (push,) = [d for d in found if d["channel"] == "push"]
    (sms,) = [d for d in found if d["channel"] == "sms"]
    assert push["status"] == "failed"
    assert (sms["status"], sms["fallback"]) == ("sent", True)
    (text,) = [s for s in f.aliyun.sent if s["OutId"] == sms["id"]]
    assert text["PhoneNumbers"] == "13800138112"
    (gone,) = [
        d for d in client.get(f"/v1/subscribers/{name}/devices").json()["items"] if not d["active"]
    ]
    assert "10000" in gone["deactivated_reason"] and dead not in gone["deactivated_reason"]
