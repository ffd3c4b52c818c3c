"""Inbox items between the processes of one machine (``--processes N``): Unix datagram
sockets in the run's ``peers`` directory. A broadcast chunk's items cross as one packed
message, split between datagrams when they do not fit one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.queue.test_broker_contract import until
from tidings.queue.inbox_hub import PeerHub, packed, unpacked


def item(n: int, **fields: Any) -> dict[str, Any]:
    """A broadcast's inbox item for subscriber ``m-<n>``: only its id and subscriber its own."""
    return {
        "id": f"item-{n:05d}",
        "subscriber_id": f"m-{n:05d}",
        "notification_id": None,
        "category": "marketing",
        "title": "Double 11",
        "body": "The flash sale starts now " * 4,
        "data": {"name": "The flash sale", "sku": ["a", "b"]},
        "created_at": 1700000000.25,
        "seen_at": None,
        "read_at": None,
        "archived_at": None,
        **fields,
    }


@pytest.fixture
async def hubs(tmp_path: Path) -> AsyncIterator[list[PeerHub]]:
    """Two started hubs in one peers directory, as two processes of a run have."""
    made = [PeerHub(tmp_path, index) for index in range(2)]
    try:
        for hub in made:
            await hub.start()
        yield made
    finally:
        for hub in made:
            hub.aclose()


def test_a_packed_batch_holds_shared_values_once_and_unpacks_to_the_items() -> None:
    rows = [item(n) for n in range(3)] + [item(3, notification_id="n-3", title="Hi")]
    message = packed(rows)
    assert set(message["keys"]) == {"id", "subscriber_id", "notification_id", "title"}
    assert message["common"]["data"] == {"name": "The flash sale", "sku": ["a", "b"]}
    assert unpacked(message) == rows
    assert list(unpacked(message)[0]) == list(rows[0])  # the fields in their order


async def test_a_chunk_of_items_reaches_the_other_process_streams_once(
    hubs: list[PeerHub],
) -> None:
    here, there = hubs
    rows = [item(n) for n in range(3000)]  # ~90 bytes an item packed: several datagrams
    rows[1500]["notification_id"] = "n-1500"  # an item with a notification of its own
    mine = here.subscribe("m-00007")
    theirs = {n: there.subscribe(f"m-{n:05d}") for n in (0, 7, 1500, 2999)}
    nobody = there.subscribe("m-99999")
    here.publish_items(rows)
    await until(lambda: all(q.qsize() == 1 for q in theirs.values()), within=60)
    for n, queue in theirs.items():
        assert queue.get_nowait() == {"type": "item", "item": rows[n]}
    assert mine.get_nowait() == {"type": "item", "item": rows[7]}  # delivered here at once
    await asyncio.sleep(0.3)  # nothing more arrives: once per stream
    assert mine.empty() and nobody.empty()
    assert all(queue.empty() for queue in theirs.values())
