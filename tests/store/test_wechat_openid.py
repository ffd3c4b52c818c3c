"""A subscriber's WeChat openid: encrypted at rest, returned decrypted, a ``wechat`` target."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tidings.store import Store
from tidings.store import subscribers as subscriber_rows
from tidings.store.tables import subscribers

pytestmark = pytest.mark.timeout(60)
OPENID = "oABCD1234efgh5678ijkl9012mno"


async def test_the_openid_is_stored_encrypted_and_makes_the_buyer_reachable(store: Store) -> None:
    cipher = store.cipher
    profile = {"name": "Li", "phone": "+8613800138000", "wechat_openid": OPENID, "attributes": {}}
    await store.write(lambda conn: subscriber_rows.upsert(conn, cipher, "b-1", profile, 1.0))
    await store.write(
        lambda conn: subscriber_rows.upsert(conn, cipher, "b-2", {"attributes": {}}, 1.0)
    )
    async with store.read() as conn:
        raw = (
            await conn.execute(
                select(subscribers.c.wechat_openid_enc).where(subscribers.c.id == "b-1")
            )
        ).scalar_one()
        found = await subscriber_rows.get(conn, cipher, "b-1")
        recipients, targets = await subscriber_rows.recipients(conn, ["b-1", "b-2"])
    assert raw and OPENID not in raw
    assert found is not None and found["wechat_openid"] == OPENID
    assert targets["b-1"]["wechat"] == [("wechat", None)]
    assert "wechat" in recipients["b-1"].reachable
    assert "wechat" not in targets["b-2"] and "wechat" not in recipients["b-2"].reachable
