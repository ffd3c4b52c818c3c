"""``GET /v1/audit``: writes through the API and the CLI, by key id — against a running service."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testbed.harness import Server, cloudevent, wait_for
from tidings.crypto import hash_api_key
from tidings.store.keys import key_id


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path).start()
    try:
        yield running
    finally:
        running.stop()


def _cli(server: Server, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tidings.cli", *args],
        cwd=server.workdir,
        env=server.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_writes_are_audited_by_key(served: Server) -> None:
    admin = key_id(hash_api_key(served.admin_key))
    with served.client() as http:
        assert http.put("/v1/subscribers/buyer-1", json={"locale": "en-US"}).status_code == 201
        assert http.put("/v1/subscribers/buyer-1", json={"email": "no"}).status_code == 422
        device = {"kind": "fcm", "token": "t" * 32}
        assert http.post("/v1/subscribers/buyer-1/devices", json=device).status_code == 201
        assert http.get("/v1/subscribers/buyer-1").status_code == 200
        event = cloudevent("order.delivered", "e-1", order_id="o", buyer_id="b", seller_id="s")
        assert http.post("/v1/events", json=event).status_code == 202
        assert http.delete("/v1/subscribers/buyer-1").status_code == 204
        trail = http.get("/v1/audit").json()
        mine = http.get("/v1/audit", params={"key_id": admin, "limit": 2}).json()
        about = http.get("/v1/audit", params={"resource": "/v1/subscribers/buyer-1/"}).json()
    rows = [(i["key_id"], i["action"], i["resource"]) for i in trail["items"]]
    assert rows == [
        (admin, "PUT /v1/subscribers/{subscriber_id}", "/v1/subscribers/buyer-1"),
        (admin, "POST /v1/subscribers/{subscriber_id}/devices", "/v1/subscribers/buyer-1/devices"),
        (admin, "DELETE /v1/subscribers/{subscriber_id}", "/v1/subscribers/buyer-1"),
    ]  # the refused PUT, the reads and the event are not there
    assert all(i["at"].endswith("Z") for i in trail["items"])
    assert len(mine["items"]) == 2 and mine["next_cursor"] is not None
    assert [i["action"] for i in about["items"]] == [rows[1][1]]


def test_cli_writes_and_other_keys(served: Server) -> None:
    key = _cli(served, "keys", "create", "--scope", "admin", "--name", "ops")
    created = key_id(hash_api_key(key))
    reader = _cli(served, "keys", "create", "--scope", "read")
    with httpx.Client(
        base_url=served.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as http:
        as_reader = {"Authorization": f"Bearer {reader}"}
        for headers in ({}, as_reader):  # running processes learn new keys within seconds
            wait_for(lambda h=headers: http.get("/v1/subscribers", headers=h).is_success, 30)
        assert http.put("/v1/subscribers/seller-1", json={}).status_code == 201
        trail = http.get("/v1/audit").json()
        refused = http.get("/v1/audit", headers=as_reader)
    rows = [(i["key_id"], i["action"], i["resource"]) for i in trail["items"]]
    assert rows[0] == ("cli", "keys create", created)
    assert rows[1][:2] == ("cli", "keys create")
    assert rows[2] == (created, "PUT /v1/subscribers/{subscriber_id}", "/v1/subscribers/seller-1")
    assert refused.status_code == 403
