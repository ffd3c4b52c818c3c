"""Keys made and revoked with ``tidings keys`` count in every running process, embedded and
scaled out (PostgreSQL + RabbitMQ, the API process beside a worker), without a restart."""

from __future__ import annotations

import uuid

import httpx

from testbed.harness import Server, wait_for
from tests.api.keys_cli import create, key_id, keys


def test_a_made_key_works_masks_pii_and_stops_once_revoked(server: Server) -> None:
    buyer = f"buyer-{uuid.uuid4().hex[:6]}"
    with server.client() as admin:
        profile = {"name": "Li Wei", "email": "li@shop.test", "phone": "+8613800138000"}
        assert admin.put(f"/v1/subscribers/{buyer}", json=profile).status_code == 201
    name = f"ops-{uuid.uuid4().hex[:6]}"
    key = create(server, "read", name=name)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as reader:
        wait_for(lambda: reader.get(f"/v1/subscribers/{buyer}").status_code == 200)
        assert reader.get(f"/v1/subscribers/{buyer}").json()["email"] == "l***@shop.test"
        assert reader.put(f"/v1/subscribers/{buyer}", json=profile).status_code == 403
        keys(server, "revoke", key_id(server, name))
        wait_for(lambda: reader.get(f"/v1/subscribers/{buyer}").status_code == 401)
