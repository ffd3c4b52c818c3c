"""Backpressure (SPEC §2): past ``intake.max_backlog`` undecided events, intake answers 503.

``tidings serve --role api`` on the embedded broker commits events but never decides them, so
its backlog grows one event per 202, deterministically; the same database served with
``--role all`` decides them, and the backlog drains. Scaled out (PostgreSQL + RabbitMQ), an API
with no worker fills up the same way, and the first worker drains it.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from testbed.cluster import Cluster, fresh_database
from testbed.harness import Server, cloudevent, wait_for
from testbed.services import Services
from tidings.api.app import create_app
from tidings.config import build_settings
from tidings.runtime.service import Service

LIMIT = 3
CONFIG = {"intake": {"max_backlog": LIMIT}}
_ids = itertools.count()


def paid(event_id: str) -> dict[str, Any]:
    """An ``order.paid`` CloudEvent (its own subject, so no ordering ties them together)."""
    return cloudevent(
        "order.paid",
        event_id,
        order_id=f"o-{event_id}",
        buyer_id="buyer-1",
        seller_id="seller-1",
        amount="10.00",
        currency="CNY",
    )


def gauge(http: httpx.Client, name: str) -> float:
    """One unlabelled gauge off ``/metrics``."""
    text = http.get("/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} missing from /metrics"
    return float(found.group(1))


def stored(http: httpx.Client, event_id: str) -> bool:
    """Whether the event is in the store (the explain view finds it)."""
    response = http.get(f"/v1/events/{event_id}", params={"source": "/shop"})
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


def assert_refused(response: httpx.Response) -> None:
    """A 503 problem with a Retry-After between 1 and 30 seconds."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 503
    assert 1 <= int(response.headers["retry-after"]) <= 30


def fill(http: httpx.Client) -> tuple[list[str], httpx.Response, str]:
    """Post events until one is refused: the accepted ids, the refusal, the refused id.

    Every process counts its own admissions at once and the others' at its next refresh
    (every 100 ms), so a request reaching another process may still be admitted meanwhile:
    the backlog ends at or a little over the limit, never under it.
    """
    accepted: list[str] = []
    for _ in range(50):
        event_id = f"evt-{next(_ids)}"
        response = http.post("/v1/events", json=paid(event_id))
        if response.status_code == 503:
            return accepted, response, event_id
        assert response.status_code == 202, response.text
        accepted.append(event_id)
    raise AssertionError(f"no 503 after {len(accepted)} events over a limit of {LIMIT}")


def refuse_while_full(server: Server) -> list[str]:
    """Fill ``server``'s backlog (nothing decides) and check every mode is refused; the ids
    accepted."""
    with server.client() as http:
        accepted, refusal, refused_id = fill(http)
        assert len(accepted) >= LIMIT
        assert_refused(refusal)
        assert not stored(http, refused_id)
        assert all(stored(http, event_id) for event_id in accepted)

        # a batch arriving over the limit is refused whole: none of it is stored
        response = http.post(
            "/v1/events",
            content=json.dumps([paid("batch-1"), paid("batch-2")]),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        assert_refused(response)
        assert not stored(http, "batch-1")
        assert not stored(http, "batch-2")

        # binary mode alike
        response = http.post(
            "/v1/events",
            json=paid("binary-1")["data"],
            headers={
                "ce-specversion": "1.0",
                "ce-id": "binary-1",
                "ce-source": "/shop",
                "ce-type": "order.paid",
            },
        )
        assert_refused(response)
        assert not stored(http, "binary-1")

        assert wait_for(lambda: gauge(http, "tidings_backlog_events") == len(accepted))
        assert wait_for(lambda: gauge(http, "tidings_backlog_age_seconds") > 0)
    return accepted


def drained(server: Server, accepted: list[str]) -> None:
    """Every accepted event decided, the gauges at 0, and intake open again."""
    with server.client() as http:
        wait_for(lambda: gauge(http, "tidings_backlog_events") == 0, timeout=60)
        wait_for(lambda: gauge(http, "tidings_backlog_age_seconds") == 0)
        for event_id in accepted:
            story = http.get(f"/v1/events/{event_id}", params={"source": "/shop"}).json()
            assert story["processed_at"] is not None
            assert story["decisions"], story
        response = http.post("/v1/events", json=paid("after-the-drain"))
        assert response.status_code == 202, response.text


def test_over_the_limit_intake_refuses_stores_nothing_and_the_backlog_drains(
    tmp_path: Path,
) -> None:
    api = Server(tmp_path, CONFIG, role="api")
    try:
        api.start()
        accepted = refuse_while_full(api)
    finally:
        api.stop()

    # the same database served with the workers: what was accepted is decided, intake reopens
    full = Server(tmp_path, CONFIG, role="all")
    try:
        full.start()
        drained(full, accepted)
    finally:
        full.stop()


@pytest.mark.scaleout
def test_scaled_out_the_api_refuses_until_a_worker_drains_the_backlog(
    tmp_path: Path, services: Services, vhosts: Any
) -> None:
    database = fresh_database(services)
    cluster = Cluster(tmp_path, database.url, vhosts.take(), workers=0, config=CONFIG)
    try:
        cluster.start()
        accepted = refuse_while_full(cluster)
        cluster.add_worker()
        drained(cluster, accepted)
    finally:
        cluster.stop()
        database.drop()


def test_the_dashboard_shows_the_backlog(tmp_path: Path) -> None:
    api = Server(tmp_path, CONFIG, role="api")
    try:
        api.start()
        with api.client() as http:
            accepted, _, _ = fill(http)

            def backlog() -> Any:
                found = http.get("/v1/admin/overview").json()["backlog"]
                return found if found["events"] == len(accepted) else None

            shown = wait_for(backlog)
            assert shown["limit"] == LIMIT
            assert shown["age_seconds"] > 0
    finally:
        api.stop()


async def test_the_fastapi_route_refuses_alike(tmp_path: Path) -> None:
    """The route the app itself serves (without the express lane in front): same 503."""
    key = "route-test-admin-key-0123456789"
    settings = build_settings(
        {
            "database": f"sqlite:///{tmp_path / 'tidings.db'}",
            "api_keys": [{"key": key, "scopes": ["admin"]}],
            **CONFIG,
        },
        {},
        "test",
    )
    app = create_app(Service(settings, role="api", base_dir=tmp_path))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://tidings.test",
            headers={"Authorization": f"Bearer {key}"},
        ) as http,
    ):
        for index in range(LIMIT):
            response = await http.post("/v1/events", json=paid(f"route-{index}"))
            assert response.status_code == 202, response.text
        refused = await http.post("/v1/events", json=paid("route-refused"))
        assert_refused(refused)
        gone = await http.get("/v1/events/route-refused", params={"source": "/shop"})
        assert gone.status_code == 404
