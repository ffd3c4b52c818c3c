"""Every route of ``/openapi.json`` × every credential answers as ``scope_table`` says
(SPEC §1: 401 without a working key, 403 without the scope, ``admin`` implies every scope)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from testbed.harness import Server, wait_for
from tests.api.keys_cli import create, key_id, keys
from tests.api.scope_table import CREDENTIALS, ROUTES, expected

CONFIG = {"providers": {"webhook": [{"kind": "webhook", "allow_private_networks": True}]}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("scopes"), config=CONFIG).start()
    try:
        yield running
    finally:
        running.stop()


def answer(server: Server, key: str, path: str = "/v1/notifications") -> httpx.Response:
    return httpx.get(server.url + path, headers={"Authorization": f"Bearer {key}"})


def credentials(server: Server) -> dict[str, str | None]:
    """A key per credential of the table: made with ``tidings keys``, as an operator does."""
    made: dict[str, str | None] = {"none": None, "wrong": "tid_" + "x" * 40}
    for scope in ("events", "read", "pii", "tokens"):
        made[scope] = create(server, scope)
    made["admin"] = server.admin_key
    expiring = create(server, "read", name="expiring", expires="3s")
    revoked = create(server, "read", name="revoked")
    wait_for(lambda: answer(server, revoked).status_code == 200)
    keys(server, "revoke", key_id(server, "revoked"))
    wait_for(lambda: answer(server, revoked).status_code == 401)
    # known to the service (not "invalid") and refused as expired
    wait_for(lambda: "expired" in answer(server, expiring).text)
    made["expired"], made["revoked"] = expiring, revoked
    # every process learns a made key within a second or two: wait until each one counts
    scoped = [made[scope] or "" for scope in ("events", "read", "pii", "tokens")]
    wait_for(lambda: all(answer(server, key).status_code != 401 for key in scoped))
    return made


def fill(value: Any, name: str) -> Any:
    """``value`` with ``{c}`` replaced by the credential's name, throughout."""
    if isinstance(value, str):
        return value.replace("{c}", name)
    if isinstance(value, dict):
        return {k: fill(v, name) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, name) for v in value]
    return value


def resources(api: httpx.Client) -> dict[str, dict[str, str]]:
    """Per credential, the ids its calls name: a subscriber, device, topic, callback …"""
    event = fill(ROUTES["POST /v1/events"].body, "setup")
    assert api.post("/v1/events", json=event).status_code == 202
    wait_for(lambda: api.get("/v1/notifications", params={"subscriber_id": "m-admin"}).json())
    note = api.get("/v1/notifications").json()["items"][0]["id"]
    pk = api.get("/v1/admin/events/recent").json()["items"][0]["pk"]
    found = {}
    for name in CREDENTIALS:
        subscriber = f"m-{name}"
        assert api.put(f"/v1/subscribers/{subscriber}", json={"name": "M"}).status_code == 201
        device = api.post(
            f"/v1/subscribers/{subscriber}/devices",
            json={"kind": "fcm", "token": f"matrix-token-{name}"},
        ).json()["device_id"]
        assert api.put(f"/v1/topics/t-{name}", json={"name": "T"}).status_code == 201
        hook = api.post("/v1/callbacks", json={"url": f"http://127.0.0.1:9/setup-{name}"})
        assert hook.status_code == 201, hook.text
        found[name] = {
            "subscriber_id": subscriber,
            "device_id": device,
            "key": f"t-{name}",
            "callback_id": hook.json()["id"],
            "event_id": "matrix-setup",
            "notification_id": note,
            "event_pk": pk,
            "dead_id": "no-such-dead-letter",
            "broadcast_id": "no-such-broadcast",
            "action": "pause",
            "item_id": "no-such-item",
        }
    return found


def routes(server: Server) -> list[tuple[str, str]]:
    """``(method, path)`` of every route the service documents; deletions last, the most
    specific first (a device goes before its subscriber)."""
    spec = httpx.get(server.url + "/openapi.json").json()
    found = [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]
    return sorted(found, key=lambda r: (r[0] == "DELETE", -len(r[1]) if r[0] == "DELETE" else 0))


def test_every_route_answers_every_credential_as_the_table_says(server: Server) -> None:
    documented = routes(server)
    missing = [f"{m} {p}" for m, p in documented if f"{m} {p}" not in ROUTES]
    assert not missing, f"routes without a scope_table entry: {missing}"
    stale = set(ROUTES) - {f"{m} {p}" for m, p in documented}
    assert not stale, f"scope_table entries for routes that are gone: {sorted(stale)}"
    made = credentials(server)
    with server.client() as api:
        ids = resources(api)
    wrong = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for method, path in documented:
            route = ROUTES[f"{method} {path}"]
            for name, key in made.items():
                headers = {} if key is None else {"Authorization": f"Bearer {key}"}
                body = fill(route.body, name)
                response = client.request(
                    method,
                    path.format(**ids[name]),
                    headers=headers,
                    json=body if route.body is not None else None,
                )
                if response.status_code not in expected(route, name):
                    wrong.append(
                        f"{method} {path} as {name}: {response.status_code}"
                        f" (expected {sorted(expected(route, name))}) {response.text[:120]}"
                    )
    assert not wrong, "\n".join(wrong)
