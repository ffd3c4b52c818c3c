"""Live inbox updates relayed between processes through RabbitMQ (``tidings.inbox``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest

from tests.queue.test_broker_contract import until
from tidings.queue.amqp import connect
from tidings.queue.inbox_relay import INBOX, RelayedHub


@pytest.fixture
async def hubs(amqp_vhost: str) -> AsyncIterator[list[RelayedHub]]:
    """Two started hubs, each on its own connection (as two processes have)."""
    connections = [await connect(amqp_vhost) for _ in range(2)]
    made = [RelayedHub() for _ in connections]
    try:
        for hub, connection in zip(made, connections, strict=True):
            await hub.start(connection)
        yield made
    finally:
        for hub in made:
            await hub.aclose()
        for connection in connections:
            await connection.close()


async def test_an_item_reaches_the_streams_of_every_process_once(
    hubs: list[RelayedHub],
) -> None:
    here, there = hubs
    mine = here.subscribe("buyer-1")
    theirs = there.subscribe("buyer-1")
    other = there.subscribe("buyer-2")
    for n in range(3):  # one pass of the loop: relayed as one message
        here.publish("buyer-1", {"type": "item", "n": n})
    await until(lambda: theirs.qsize() == 3)
    assert [theirs.get_nowait()["n"] for _ in range(3)] == [0, 1, 2]
    await asyncio.sleep(0.3)  # our own relayed message came back too, and was skipped
    assert [mine.get_nowait()["n"] for _ in range(3)] == [0, 1, 2]
    assert mine.empty() and theirs.empty() and other.empty()


async def test_a_malformed_relayed_message_is_dropped_and_relaying_goes_on(
    hubs: list[RelayedHub], amqp_vhost: str
) -> None:
    here, there = hubs
    stream = there.subscribe("buyer-1")
    connection = await connect(amqp_vhost)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(INBOX)
        for body in (b"not json", b'{"from": "x", "items": [{"no": "to"}]}', b"[]"):
            await exchange.publish(aio_pika.Message(body), routing_key="")
    finally:
        await connection.close()
    here.publish("buyer-1", {"type": "item", "n": 1})
    await until(lambda: stream.qsize() == 1)
    assert stream.get_nowait() == {"type": "item", "n": 1}


async def test_a_chunk_of_items_is_relayed_as_one_packed_message(
    hubs: list[RelayedHub],
) -> None:
    here, there = hubs
    rows = [
        {"id": f"i-{n}", "subscriber_id": f"m-{n}", "title": "Sale", "data": {"n": 1}}
        for n in range(2000)
    ]
    theirs = there.subscribe("m-1999")
    mine = here.subscribe("m-3")
    here.publish_items(rows)
    here.publish("m-3", {"type": "item", "n": 0})  # same pass: the same message
    await until(lambda: theirs.qsize() == 1)
    assert theirs.get_nowait() == {"type": "item", "item": rows[1999]}
    await asyncio.sleep(0.3)
    assert [mine.get_nowait(), mine.get_nowait()] == [
        {"type": "item", "item": rows[3]},
        {"type": "item", "n": 0},
    ]
    assert mine.empty() and theirs.empty()
