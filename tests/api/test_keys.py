"""API keys (SPEC §1, issue 12): the configured set, keys kept in the database, minimum
lengths, the encrypted inbox secret, private files, /metrics and PII masking by scope."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testbed.harness import Server, wait_for
from tests.api.keys_cli import create, key_id, keys, private
from tidings.crypto import load_or_create_key

EXTRA = "extra-configured-key-0123456789"


def answer(server: Server, key: str, path: str = "/v1/notifications") -> httpx.Response:
    return httpx.get(server.url + path, headers={"Authorization": f"Bearer {key}"})


def status(server: Server, key: str, path: str = "/v1/notifications") -> int:
    return answer(server, key, path).status_code


def test_a_key_removed_from_the_config_stops_working_and_never_comes_back(
    tmp_path: Path,
) -> None:
    first = Server(tmp_path)
    first.env["TIDINGS_API_KEYS"] += f",{EXTRA}:read"
    first.start()
    try:
        assert status(first, EXTRA) == 200
    finally:
        first.stop()
    second = Server(tmp_path)  # the same database, EXTRA no longer configured
    second.admin_key = first.admin_key
    second.env["TIDINGS_API_KEYS"] = f"{first.admin_key}:admin"
    second.start()
    try:
        assert status(second, EXTRA) == 401
        assert status(second, first.admin_key) == 200
    finally:
        second.stop()
    third = Server(tmp_path, env={"TIDINGS_API_KEYS": ""})  # none configured at all
    third.start()
    try:
        assert status(third, EXTRA) == 401
        assert status(third, first.admin_key) == 401
        generated = re.search(r"shown once\):\s*(tid_\S+)", third.log.read_text())
        assert generated, "no admin key was generated for a service with none left"
        assert status(third, generated.group(1)) == 200
    finally:
        third.stop()


def serve_once(tmp_path: Path, env: dict[str, str], processes: int = 1) -> tuple[int, str]:
    server = Server(tmp_path, env=env)
    done = subprocess.run(
        [sys.executable, "-m", "tidings.cli", "serve", "--port", str(server.port)]
        + ["--processes", str(processes)],
        cwd=tmp_path,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TIDINGS_API_KEYS": "short-key-123:admin"}, "TIDINGS_API_KEYS item 1"),
        ({"TIDINGS_INBOX_SECRET": "short-key-123"}, "TIDINGS_INBOX_SECRET"),
    ],
)
def test_short_keys_and_secrets_are_refused_at_start_naming_where_without_the_value(
    tmp_path: Path, env: dict[str, str], named: str, processes: int
) -> None:
    code, output = serve_once(tmp_path, env, processes)
    assert code == 2, output
    assert named in output and "at least 24" in output
    assert "short-key-123" not in output
    assert "Traceback" not in output


def test_a_configured_key_in_the_yaml_is_named_by_its_place(tmp_path: Path) -> None:
    server = Server(tmp_path, config={"api_keys": [{"key": "tiny", "scopes": ["read"]}]})
    done = subprocess.run(
        [sys.executable, "-m", "tidings.cli", "serve", "--port", str(server.port)]
        + ["--processes", "1", "--config", str(server.config_path)],
        cwd=tmp_path,
        env={**server.env, "TIDINGS_API_KEYS": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "api_keys[0]" in done.stderr and "tiny" not in done.stderr.replace("tidings", "")


def test_the_generated_inbox_secret_is_stored_encrypted_and_the_files_are_private(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path, env={"TIDINGS_INBOX_SECRET": ""}).start()
    try:
        token = server.cli_token("buyer-enc")
        inbox = httpx.get(server.url + "/v1/inbox", headers={"Authorization": f"Bearer {token}"})
        assert inbox.status_code == 200  # the CLI and the service read one secret
    finally:
        server.stop()
    database = tmp_path / "tidings.db"
    with sqlite3.connect(database) as conn:
        (stored,) = conn.execute("SELECT value FROM meta WHERE key = 'inbox_secret'").fetchone()
    assert stored.startswith("v2:")
    secret = load_or_create_key(None, tmp_path / "tidings.db.key").decrypt(stored)
    assert secret and len(secret) >= 24
    for path in tmp_path.glob("tidings.db*"):
        assert private(path), path
        assert secret.encode() not in path.read_bytes(), path


async def test_a_secret_stored_in_plain_text_by_an_older_version_is_encrypted(
    tmp_path: Path,
) -> None:
    from tidings.store import Store
    from tidings.store import keys as key_rows

    store = Store.open(f"sqlite:///{tmp_path / 'old.db'}", None)
    await store.start()
    try:
        await store.write(lambda c: key_rows.set_meta(c, "inbox_secret", "plain-old-secret-xyz"))
        read = await store.write(lambda c: key_rows.inbox_secret(c, store.cipher))
        assert read == "plain-old-secret-xyz"
        async with store.read() as conn:
            stored = await key_rows.get_meta(conn, "inbox_secret")
        assert stored and stored.startswith("v2:") and "plain-old" not in stored
        assert await store.write(lambda c: key_rows.inbox_secret(c, store.cipher)) == read
    finally:
        await store.aclose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("keys")).start()
    try:
        yield running
    finally:
        running.stop()


def test_keys_made_in_the_database_work_expire_are_revoked_and_listed(server: Server) -> None:
    reader = create(server, "read", name="grafana")
    wait_for(lambda: status(server, reader) == 200)
    assert status(server, reader, "/metrics") == 200
    # a key is stored hashed: it appears nowhere in the database file
    assert reader.encode() not in (server.workdir / "tidings.db").read_bytes()
    listed = keys(server, "list").stdout
    assert "grafana" in listed and "read" in listed and reader not in listed
    # the first use is stamped (cheaply: at most once a minute per key)
    wait_for(
        lambda: re.search(
            r"grafana.*\d{2}:\d{2}:\d{2}Z.*\d{2}:\d{2}:\d{2}Z", keys(server, "list").stdout
        )
    )
    assert keys(server, "revoke", key_id(server, "grafana")).returncode == 0
    wait_for(lambda: status(server, reader) == 401)
    assert "grafana" in keys(server, "list").stdout  # kept, as revoked

    brief = create(server, "read", name="brief", expires="3s")
    # known to the service (not "invalid API key") and refused once it expires
    wait_for(lambda: "has expired" in answer(server, brief).text)
    refused = keys(server, "create", "--scope", "everything", check=False)
    assert refused.returncode != 0 and "unknown scope" in refused.stderr


def test_metrics_needs_the_read_scope(server: Server) -> None:
    events = create(server, "events")
    wait_for(lambda: status(server, events, "/v1/events/none") == 403)
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert status(server, events, "/metrics") == 403
    assert status(server, server.admin_key, "/metrics") == 200
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert httpx.get(server.url + "/readyz").status_code == 200


def test_pii_is_masked_without_the_pii_scope(server: Server) -> None:
    buyer = f"buyer-{uuid.uuid4().hex[:6]}"
    profile = {"name": "Li Wei", "email": "li.wei@shop.test", "phone": "+8613800138000"}
    with server.client() as admin:
        assert admin.put(f"/v1/subscribers/{buyer}", json=profile).status_code == 201
        assert admin.get(f"/v1/subscribers/{buyer}").json()["email"] == "li.wei@shop.test"
    reader, pii = create(server, "read"), create(server, "read", "pii")
    wait_for(lambda: status(server, pii) == 200)
    with server.client(reader) as client:
        shown = client.get(f"/v1/subscribers/{buyer}").json()
        listed = client.get("/v1/subscribers").json()["items"]
        card = client.get(f"/v1/admin/subscribers/{buyer}").json()["profile"]
    assert (shown["name"], shown["email"], shown["phone"]) == (
        "L***",
        "l***@shop.test",
        "+86******8000",
    )
    assert all("li.wei@shop.test" not in str(item) for item in listed)
    assert (card["name"], card["email"], card["phone"]) == (
        "L***",
        "l***@shop.test",
        "+86******8000",
    )
    with server.client(pii) as client:
        assert client.get(f"/v1/subscribers/{buyer}").json()["phone"] == "+8613800138000"
        card = client.get(f"/v1/admin/subscribers/{buyer}").json()["profile"]
        assert card["email"] == "li.wei@shop.test" and card["name"] == "Li Wei"


async def test_a_worker_without_keys_changes_no_stored_key(tmp_path: Path) -> None:
    from tidings.config import load_settings
    from tidings.crypto import hash_api_key
    from tidings.runtime.service import Service
    from tidings.store import keys as key_rows

    def settings(api_keys: str) -> Any:
        env = {"TIDINGS_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
        return load_settings(env={**env, "TIDINGS_API_KEYS": api_keys})

    async def run(api_keys: str, role: str) -> tuple[str | None, dict[str, Any]]:
        service = Service(settings(api_keys), role=role)
        await service.start()
        try:
            async with service.store.read() as conn:
                return service.generated_admin_key, await key_rows.all_keys(conn)
        finally:
            await service.aclose()

    generated, stored = await run(f"{EXTRA}:read", "api")
    assert generated is None and hash_api_key(EXTRA) in stored
    generated, stored = await run("", "worker")  # workers are often given no API keys
    assert generated is None and set(stored) == {hash_api_key(EXTRA)}
    generated, stored = await run("", "api")
    assert generated and set(stored) == {hash_api_key(generated)}


def test_the_key_ring_holds_this_process_configured_keys_and_the_made_ones() -> None:
    from tidings.runtime.keyring import KeyRing
    from tidings.store.keys import ApiKey

    made = ApiKey("made", frozenset({"read"}), "created", 1.0)
    theirs = ApiKey("theirs", frozenset({"admin"}), "config", 1.0)  # another config's key
    mine_revoked = ApiKey("mine", frozenset({"read"}), "config", 1.0, revoked_at=2.0)
    gone = ApiKey("gone", frozenset({"read"}), "created", 1.0, revoked_at=2.0)
    ring = KeyRing()
    stored = {k.digest: k for k in (made, theirs, mine_revoked, gone)}
    ring.replace(stored, {"mine": frozenset({"read"}), "new": frozenset({"events"})})
    assert set(ring) == {"made", "new"}
    assert ring["new"].allows("events") and not ring["new"].allows("read")
