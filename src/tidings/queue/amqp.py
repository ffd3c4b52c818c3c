"""AMQP plumbing shared by the RabbitMQ broker and the AMQP event intake.

A robust connection (it reconnects, and restores channels, queues and consumers, after a
broker restart), the dead-letter topology every work queue points at, and publishing that
waits for every publisher confirm — retrying what failed while the connection comes back.
Consuming in batches, acked after the handler, lives in :mod:`tidings.queue.amqp_consumer`.

Topology declared here::

    <work queue> (quorum, x-delivery-limit) ── rejected / over the limit ──▶
        tidings.dlx (fanout) ──▶ tidings.dead (quorum: poison kept, not lost)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from pamqp.common import FieldTable

from tidings.errors import BrokerError

DLX = "tidings.dlx"
DEAD = "tidings.dead"
DELIVERY_LIMIT = 20
"""Deliveries of one message before it is dead-lettered as poison."""
QUORUM: FieldTable = {"x-queue-type": "quorum"}
COUNT_HEADER = "tidings-count"
"""How many items (events, tickets) a message carries, when it is more than one."""

MessageHandler = Callable[[list[AbstractIncomingMessage]], Awaitable[None]]
"""Handles a batch of messages (see :class:`~tidings.queue.amqp_consumer.BatchConsumer`)."""


def work_queue_arguments(delivery_limit: int = DELIVERY_LIMIT) -> FieldTable:
    """Arguments of a work queue: quorum, dead-lettered to :data:`DLX` past the limit."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DLX,
    }


async def connect(url: str) -> AbstractRobustConnection:
    """A connection that reconnects (and restores its topology) after a broker restart."""
    try:
        return await aio_pika.connect_robust(url, reconnect_interval=0.5, fail_fast="true")
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        raise BrokerError(f"cannot connect to RabbitMQ: {type(exc).__name__}") from exc


async def declare_dead_letters(channel: AbstractChannel) -> AbstractExchange:
    """The dead-letter exchange and the queue that keeps what reaches it."""
    exchange = await channel.declare_exchange(DLX, aio_pika.ExchangeType.FANOUT, durable=True)
    dead = await channel.declare_queue(DEAD, durable=True, arguments=QUORUM)
    await dead.bind(exchange)
    return exchange


async def publish_confirmed(
    exchange: Callable[[], AbstractExchange],
    messages: Sequence[tuple[str, aio_pika.Message]],
    *,
    patience: float,
) -> None:
    """Publish ``(routing_key, message)`` pairs and wait for every confirm.

    The messages are all written before the first confirm is awaited (the broker confirms a
    run of them with one ``multiple`` ack). Publishing while the connection is down fails;
    the robust connection comes back on its own, so failed messages are retried until
    ``patience`` runs out (then :class:`BrokerError`).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    waiting = list(messages)
    while True:
        results = await asyncio.gather(
            *(exchange().publish(message, routing_key=key) for key, message in waiting),
            return_exceptions=True,
        )
        failed = [
            (pair, result)
            for pair, result in zip(waiting, results, strict=True)
            if isinstance(result, BaseException)
        ]
        if not failed:
            return
        for _, result in failed:
            if isinstance(result, asyncio.CancelledError):
                raise result
        if loop.time() >= deadline:
            error = failed[0][1]
            raise BrokerError(
                f"RabbitMQ did not confirm {len(failed)} messages: {type(error).__name__}"
            ) from error
        waiting = [pair for pair, _ in failed]
        await asyncio.sleep(0.25)


def weight(message: AbstractIncomingMessage) -> int:
    """The items ``message`` carries (its :data:`COUNT_HEADER`, else 1)."""
    count = (message.headers or {}).get(COUNT_HEADER)
    return count if isinstance(count, int) and count > 0 else 1


async def quietly(publishing: Awaitable[Any]) -> None:
    """Await ``publishing``, ignoring its failure (a best-effort send or settle).

    An ack lost with its channel is harmless: the broker requeues what the channel held.
    """
    try:
        await publishing
    except Exception:  # noqa: BLE001 - best effort by definition
        pass
