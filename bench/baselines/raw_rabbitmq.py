"""Ceiling of the scale-out queue: raw aio-pika publish + consume on one quorum queue.

The same guarantees tidings asks of RabbitMQ (SPEC §8): persistent messages on a durable quorum
queue, publisher confirms (a window of unconfirmed publishes in flight), manual acks with a tuned
prefetch. Publisher and consumer share one process and one event loop; the broker has the other
core. Latency is publish call → consumer callback; by default publishing runs flat out, so it
includes the backlog the consumer could not keep up with (pass `rate` to measure at a given load).
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from pamqp.common import FieldTable

from bench.baselines import (
    SAMPLE_EVENT,
    BaselineResult,
    arguments,
    report,
    require_amqp_url,
    summarize,
)

QUORUM: FieldTable = {"x-queue-type": "quorum"}
STAMP = struct.Struct("!d")
PAYLOAD = str(SAMPLE_EVENT).encode()
DRAIN_TIMEOUT = 60.0


async def _run(
    url: str, seconds: float, window: int, prefetch: int, rate: float | None
) -> BaselineResult:
    queue_name = f"bench.raw.{uuid.uuid4().hex[:12]}"
    latencies: list[float] = []
    published = 0
    publishing_done = False
    drained = asyncio.Event()

    connection = await aio_pika.connect(url)
    async with connection:
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=prefetch)
        queue = await consume_channel.declare_queue(queue_name, durable=True, arguments=QUORUM)

        async def on_message(message: AbstractIncomingMessage) -> None:
            (sent,) = STAMP.unpack_from(message.body)
            latencies.append(time.perf_counter() - sent)
            await message.ack()
            if publishing_done and len(latencies) >= published:
                drained.set()

        tag = await queue.consume(on_message)
        publish_channel = await connection.channel(publisher_confirms=True)
        exchange = publish_channel.default_exchange
        in_flight = asyncio.Semaphore(window)
        pending: set[asyncio.Task[object]] = set()

        async def publish_one() -> None:
            try:
                body = STAMP.pack(time.perf_counter()) + PAYLOAD
                await exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue_name,
                )
            finally:
                in_flight.release()

        started = time.perf_counter()
        deadline = started + seconds
        interval = 1.0 / rate if rate else 0.0
        while (now := time.perf_counter()) < deadline:
            if interval:
                due = started + published * interval
                if due > now:
                    await asyncio.sleep(due - now)
            await in_flight.acquire()
            task: asyncio.Task[object] = asyncio.create_task(publish_one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            published += 1
        await asyncio.gather(*pending)
        publishing_done = True
        if len(latencies) >= published:
            drained.set()
        await asyncio.wait_for(drained.wait(), DRAIN_TIMEOUT)
        wall = time.perf_counter() - started
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    label = f"rate {rate:.0f}/s" if rate else "flat out"
    return summarize(
        f"raw RabbitMQ quorum, confirms+acks ({label})",
        len(latencies),
        wall,
        latencies,
        f"messages/s published and consumed; confirm window {window}, prefetch {prefetch}",
    )


def run(
    amqp_url: str,
    seconds: float = 5.0,
    window: int = 256,
    prefetch: int = 256,
    rate: float | None = None,
) -> BaselineResult:
    """Publish (confirmed, persistent) and consume (acked) on a fresh quorum queue."""
    return asyncio.run(_run(amqp_url, seconds, window, prefetch, rate))


def main() -> None:
    parser = arguments(__doc__ or "", amqp=True)
    parser.add_argument("--window", type=int, default=256, help="unconfirmed publishes in flight")
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--rate", type=float, default=None, help="publish rate (default: max)")
    args = parser.parse_args()
    url = require_amqp_url(args.amqp_url)
    report([run(url, args.seconds, args.window, args.prefetch, args.rate)], args.json)


if __name__ == "__main__":
    main()
