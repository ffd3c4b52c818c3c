"""PII key rotation (``tidings keys rotate-pii``, issue 12): every ciphertext names its key,
the old format still reads, and reads keep working while a rotation runs."""

from __future__ import annotations

import base64
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from testbed.harness import Server
from tidings.crypto import Cipher
from tidings.errors import StoreError
from tidings.runtime.rotation import rotate_pii
from tidings.store import Store
from tidings.store import subscribers as rows
from tidings.store.tables import subscribers

PROFILE = {"name": "Li Wei", "email": "li@shop.test", "phone": "+8613800138000"}


def legacy_ciphertext(key: bytes, plaintext: str) -> str:
    """A field as tidings sealed it before key ids: ``v1:`` + base64(nonce + AES-GCM)."""
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), None)
    return "v1:" + base64.urlsafe_b64encode(nonce + sealed).decode()


async def stored_fields(store: Store) -> list[str]:
    async with store.read() as conn:
        found = await conn.execute(
            subscribers.select().with_only_columns(
                subscribers.c.name_enc, subscribers.c.email_enc, subscribers.c.phone_enc
            )
        )
        return [value for row in found for value in row if value is not None]


async def read(store: Store, subscriber_id: str) -> dict[str, str]:
    async with store.read() as conn:
        found = await rows.get(conn, store.cipher, subscriber_id)
    assert found is not None
    return found


async def test_rotation_re_encrypts_every_field_and_retires_the_old_key(database_url: str) -> None:
    key = os.urandom(32)
    store = Store(database_url, Cipher(key))
    await store.start()
    try:
        for n in range(5):
            await store.write(lambda c, n=n: rows.upsert(c, store.cipher, f"b{n}", PROFILE, 1.0))
        # a row written before key ids existed
        legacy = legacy_ciphertext(key, "old@shop.test")
        await store.write(
            lambda c: c.execute(
                subscribers.update().where(subscribers.c.id == "b0").values(email_enc=legacy)
            )
        )
        first = await rotate_pii(store, settle=0, batch=2)  # several batches per table
        after_first = await stored_fields(store)
        assert after_first and all(v.startswith(f"v2:{first.key_id}:") for v in after_first)
        assert (await read(store, "b0"))["email"] == "old@shop.test"
        assert (await read(store, "b3"))["phone"] == PROFILE["phone"]

        second = await rotate_pii(store, settle=0)
        assert second.retired == [first.key_id] and second.fields == len(after_first)
        assert all(v.startswith(f"v2:{second.key_id}:") for v in await stored_fields(store))
        with pytest.raises(StoreError):  # the retired key is gone: its ciphertexts no longer read
            store.cipher.decrypt(after_first[0])
        # another process (same master key) learns the data keys from the database
        other = Store(database_url, Cipher(key))
        await other.start()
        try:
            assert (await read(other, "b4"))["name"] == "Li Wei"
        finally:
            await other.aclose()
    finally:
        await store.aclose()


def test_reads_and_writes_keep_working_while_a_rotation_runs(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    try:
        with server.client() as api:
            for n in range(20):
                assert api.put(f"/v1/subscribers/s{n}", json=PROFILE).status_code == 201
            rotation = subprocess.Popen(
                [sys.executable, "-m", "tidings.cli", "keys", "rotate-pii"],
                cwd=tmp_path,
                env=server.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                reads = 0
                while rotation.poll() is None:
                    answer = api.get(f"/v1/subscribers/s{reads % 20}")
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["email"] == PROFILE["email"]
                    created = api.put(f"/v1/subscribers/new{reads}", json=PROFILE)
                    assert created.status_code == 201, created.text
                    reads += 1
                output = rotation.communicate(timeout=60)[0]
            finally:
                if rotation.poll() is None:
                    rotation.kill()
                    rotation.wait()
            assert rotation.returncode == 0, output
            assert reads > 20, "the rotation ended before the reads could overlap it"
            kid = re.search(r"PII key (\w+): (\d+) fields re-encrypted", output)
            assert kid, output
            with sqlite3.connect(tmp_path / "tidings.db") as conn:
                fields = [
                    value
                    for row in conn.execute(
                        "SELECT name_enc, email_enc, phone_enc FROM subscribers"
                    )
                    for value in row
                ]
            assert len(fields) == 3 * (20 + reads)
            assert all(value.startswith(f"v2:{kid.group(1)}:") for value in fields)
            for n in (0, reads - 1):
                assert api.get(f"/v1/subscribers/new{n}").json()["phone"] == PROFILE["phone"]
    finally:
        server.stop()


async def test_one_rotation_at_a_time_and_an_interrupted_one_is_finished_with_force(
    tmp_path: Path,
) -> None:
    from tidings.errors import Conflict
    from tidings.store import pii_keys

    store = Store(f"sqlite:///{tmp_path / 'r.db'}", Cipher(os.urandom(32)))
    await store.start()
    try:
        await store.write(lambda c: rows.upsert(c, store.cipher, "b1", PROFILE, 1.0))
        # an interrupted rotation: its key stored (and made active), the rows not yet moved
        interrupted = await store.write(lambda c: pii_keys.begin(c, store.cipher, 1.0))
        await store.write(lambda c: pii_keys.activate(c, interrupted))
        with pytest.raises(Conflict, match="unfinished"):
            await rotate_pii(store, settle=0)
        done = await rotate_pii(store, settle=0, force=True)
        assert done.retired == [interrupted]
        assert (await read(store, "b1"))["email"] == PROFILE["email"]
        assert all(v.startswith(f"v2:{done.key_id}:") for v in await stored_fields(store))
        await rotate_pii(store, settle=0)  # finished: the next one needs no force
    finally:
        await store.aclose()
