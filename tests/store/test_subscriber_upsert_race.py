"""Concurrent PUTs of one new subscriber id: one creates it, the others replace it, none fails.

Found by the fuzzer (issue 12): on PostgreSQL the writer runs several transactions at once, and
the second of two first PUTs of an id hit the primary key (a 500).
"""

from __future__ import annotations

import asyncio

from tidings.store import Store
from tidings.store import subscribers as rows


async def test_racing_first_puts_of_one_id_all_succeed(store: Store) -> None:
    async def put(n: int) -> bool:
        profile = {"name": f"racer {n}", "locale": "en-US"}
        await asyncio.sleep(0.002 * n)  # one at a time into the writer: each lane takes one
        return await store.write(
            lambda conn: rows.upsert(conn, store.cipher, "racer", profile, float(n))
        )

    for _ in range(5):
        created = await asyncio.gather(*(put(n) for n in range(8)))
        assert created.count(True) == 1
        async with store.read() as conn:
            found = await rows.get(conn, store.cipher, "racer")
        assert found is not None and found["name"].startswith("racer ")
        assert await store.write(lambda conn: rows.erase(conn, "racer"))
