"""The service fixtures reach a real PostgreSQL and a real RabbitMQ, and the fault helpers work."""

from __future__ import annotations

import asyncio

import aio_pika
import asyncpg
import pytest
from pamqp.commands import Basic
from pamqp.common import FieldTable

from testbed.services import Services, create_database, drop_database, unique_name

pytestmark = pytest.mark.scaleout

QUORUM: FieldTable = {"x-queue-type": "quorum"}


async def test_postgres_answers(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        # Trust auth on loopback only: the server must not listen anywhere else.
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
    finally:
        await conn.close()


async def test_fresh_databases_are_isolated(postgres_url: str, postgres_database: str) -> None:
    other = await create_database(postgres_url)
    try:
        conn = await asyncpg.connect(postgres_database)
        try:
            await conn.execute("CREATE TABLE marker (id int)")
        finally:
            await conn.close()
        conn = await asyncpg.connect(other)
        try:
            assert await conn.fetchval("SELECT to_regclass('marker')") is None
        finally:
            await conn.close()
    finally:
        await drop_database(other)
    conn = await asyncpg.connect(postgres_url)
    try:
        name = other.rsplit("/", 1)[1]
        assert not await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
    finally:
        await conn.close()


async def _publish(url: str, queue_name: str, body: bytes) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue_name, durable=True, arguments=QUORUM)
        confirmation = await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue_name,
        )
        assert isinstance(confirmation, Basic.Ack)


async def _consume_one(url: str, queue_name: str) -> bytes:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        queue = await channel.declare_queue(queue_name, durable=True, arguments=QUORUM)
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                return message.body
    raise AssertionError("queue iterator ended without a message")


async def test_rabbitmq_quorum_queue_roundtrip(amqp_url: str) -> None:
    name = unique_name("test-quorum-")
    await _publish(amqp_url, name, b"hello")
    assert await asyncio.wait_for(_consume_one(amqp_url, name), 10) == b"hello"
    # It really is a quorum queue: redeclaring it as classic is refused.
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "classic"})


async def test_vhosts_are_isolated(services: Services, amqp_vhost: str) -> None:
    name = unique_name("test-vhost-")
    await _publish(amqp_vhost, name, b"in the vhost")
    connection = await aio_pika.connect(services.amqp_url)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(name, passive=True)
    assert await asyncio.wait_for(_consume_one(amqp_vhost, name), 10) == b"in the vhost"


async def test_restart_rabbitmq_keeps_persistent_messages(
    amqp_url: str, services: Services
) -> None:
    name = unique_name("test-restart-")
    await _publish(amqp_url, name, b"survives")
    connection = await aio_pika.connect(amqp_url)
    try:
        await services.restart_rabbitmq()
        # The old connection saw the broker go away.
        assert not connection.connected.is_set()
    finally:
        await connection.close()
    assert await asyncio.wait_for(_consume_one(amqp_url, name), 10) == b"survives"


async def test_restart_postgres_keeps_committed_rows(
    postgres_database: str, services: Services
) -> None:
    conn = await asyncpg.connect(postgres_database)
    await conn.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
    try:
        await services.restart_postgres()
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await conn.fetchval("SELECT v FROM t")
    finally:
        await conn.close(timeout=1)
    conn = await asyncpg.connect(postgres_database)
    try:
        assert await conn.fetchval("SELECT v FROM t") == "kept"
    finally:
        await conn.close()


async def test_kill_postgres_then_start_recovers(
    postgres_database: str, services: Services
) -> None:
    conn = await asyncpg.connect(postgres_database)
    try:
        await conn.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('committed')")
    finally:
        await conn.close()
    await services.kill_postgres()
    with pytest.raises(OSError):
        await asyncpg.connect(postgres_database, timeout=2)
    await services.start_postgres()
    conn = await asyncpg.connect(postgres_database)
    try:
        assert await conn.fetchval("SELECT v FROM t") == "committed"
    finally:
        await conn.close()
