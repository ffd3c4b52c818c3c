"""``GET /v1/events``: filters, paging, scope — against a running service."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from testbed.harness import Server, cloudevent


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path).start()
    try:
        yield running
    finally:
        running.stop()


def test_list_events_by_type_subject_and_since(served: Server) -> None:
    with served.client() as http:
        for n in range(5):
            order = dict(order_id=f"o-{n % 2}", buyer_id="b-1", seller_id="s-1")
            sent = http.post("/v1/events", json=cloudevent("order.delivered", f"d-{n}", **order))
            assert sent.status_code == 202
        http.post("/v1/events", json=cloudevent("order.shipped", "s-0", **order))
        everything = http.get("/v1/events").json()
        delivered = http.get("/v1/events", params={"type": "order.delivered", "limit": 2}).json()
        rest = http.get(
            "/v1/events",
            params={"type": "order.delivered", "limit": 2, "cursor": delivered["next_cursor"]},
        ).json()
        of_o0 = http.get("/v1/events", params={"subject": "o-0"}).json()
        later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        none_yet = http.get("/v1/events", params={"since": later}).json()
        earlier = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        since = http.get("/v1/events", params={"since": earlier}).json()
        bad_since = http.get("/v1/events", params={"since": "yesterday"})
    assert [i["event"]["id"] for i in everything["items"]] == [
        "d-0", "d-1", "d-2", "d-3", "d-4", "s-0"
    ]  # fmt: skip
    assert everything["next_cursor"] is None
    assert [i["event"]["id"] for i in delivered["items"]] == ["d-0", "d-1"]
    assert [i["event"]["id"] for i in rest["items"]] == ["d-2", "d-3"]
    assert rest["next_cursor"] is not None
    assert [i["event"]["id"] for i in of_o0["items"]] == ["d-0", "d-2", "d-4", "s-0"]
    assert none_yet == {"items": [], "next_cursor": None}
    assert len(since["items"]) == 6 and since["items"][0]["received_at"].endswith("Z")
    assert bad_since.status_code == 400
    assert bad_since.headers["content-type"].startswith("application/problem+json")


def test_list_events_needs_the_read_scope(served: Server) -> None:
    with served.client(key="wrong-key-000000000000000000000") as http:
        assert http.get("/v1/events").status_code == 401
