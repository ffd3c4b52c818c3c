"""The seed document's pattern: pika publish, a pika consumer, one blocking HTTP call per message.

As in the seed: `pika.BlockingConnection`, `basic_publish` to the default exchange with no
publisher confirms and no persistence, a consumer with `auto_ack=True` (a message is gone from the
broker before it is delivered: a crash loses it), and per message one blocking HTTP POST on a new
connection, as `requests.post` without a session does. The consumer runs in its own process, the
HTTP sink in another; latency is publish → arrival at the sink (the seed's Tp + Tc + Td).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import time
import uuid
from urllib.parse import urlsplit

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from bench.baselines import (
    SAMPLE_EVENT,
    BaselineResult,
    arguments,
    report,
    require_amqp_url,
    summarize,
)
from bench.baselines.sink import SinkProcess

DRAIN_TIMEOUT = 120.0


def post(sink_url: str, body: bytes) -> None:
    """One blocking POST on a fresh connection, like `requests.post(url, data=body)`."""
    parts = urlsplit(sink_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("POST", parts.path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status >= 300:
            raise RuntimeError(f"sink answered {response.status}")
    finally:
        conn.close()


def consume(amqp_url: str, queue: str, sink_url: str, calls_per_message: int = 1) -> None:
    """The seed's consumer loop (runs until its process is terminated): `calls_per_message`
    blocking POSTs per message (an event with a buyer and a seller to tell makes two)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_declare(queue=queue)

    def on_message(
        ch: BlockingChannel, method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        for _ in range(calls_per_message):
            post(sink_url, body)

    channel.basic_consume(queue=queue, on_message_callback=on_message, auto_ack=True)
    channel.start_consuming()


def _message(sequence: int) -> bytes:
    event = dict(SAMPLE_EVENT, id=f"evt-{sequence}")
    return json.dumps({"sent_at": time.time(), "event": event}).encode()


def run(
    amqp_url: str,
    messages: int = 5000,
    rate: float | None = None,
    seconds: float = 30.0,
    calls_per_message: int = 1,
) -> BaselineResult:
    """Publish `messages` (or for at most `seconds`) and wait until the sink has them all.

    With `calls_per_message` > 1 the consumer makes that many HTTP calls per message (one
    event → several deliveries); `messages` and `per_second` still count messages, and a
    message counts as delivered once all its calls arrived.
    """
    queue = f"bench.seed.{uuid.uuid4().hex[:12]}"
    with SinkProcess() as sink:
        publisher = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            channel = publisher.channel()
            channel.queue_declare(queue=queue)
            consumer = multiprocessing.get_context("spawn").Process(
                target=consume,
                args=(amqp_url, queue, sink.url, calls_per_message),
                daemon=True,
            )
            consumer.start()
            try:
                # Warm-up: the consumer is connected and the sink answers before timing starts.
                channel.basic_publish(exchange="", routing_key=queue, body=_message(-1))
                if not sink.wait_for(calls_per_message, 30):
                    raise RuntimeError("the seed consumer never delivered the warm-up message")
                sink.reset()
                started = time.perf_counter()
                started_at = time.time()
                deadline = started + seconds
                interval = 1.0 / rate if rate else 0.0
                sent = 0
                while sent < messages and time.perf_counter() < deadline:
                    if interval:
                        delay = started + sent * interval - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                    channel.basic_publish(exchange="", routing_key=queue, body=_message(sent))
                    sent += 1
                complete = sink.wait_for(sent * calls_per_message, DRAIN_TIMEOUT)
                stats = sink.stats()
                # Until the last arrival, not until the poll that noticed it.
                last_at = stats["last_at"]
                assert isinstance(last_at, float)
                wall = last_at - started_at if complete else time.perf_counter() - started
            finally:
                consumer.terminate()
                consumer.join(10)
            channel.queue_delete(queue=queue)
        finally:
            publisher.close()
    latencies = stats["latencies"]
    assert isinstance(latencies, list)
    label = f"rate {rate:.0f}/s" if rate else "flat out"
    notes = "messages/s delivered to the sink; no confirms, auto_ack (at-most-once)"
    if calls_per_message > 1:
        label += f", {calls_per_message} calls per message"
        notes += f"; {len(latencies)} HTTP calls"
    delivered = len(latencies) // calls_per_message
    if not complete:
        notes += f"; only {delivered} of {sent} arrived within {DRAIN_TIMEOUT:.0f}s"
    return summarize(
        f"seed pattern: pika + HTTP per message ({label})", delivered, wall, latencies, notes
    )


def main() -> None:
    parser: argparse.ArgumentParser = arguments(__doc__ or "", amqp=True)
    parser.set_defaults(seconds=30.0)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=None, help="publish rate (default: max)")
    parser.add_argument("--calls-per-message", type=int, default=1, help="HTTP calls per message")
    args = parser.parse_args()
    url = require_amqp_url(args.amqp_url)
    report([run(url, args.messages, args.rate, args.seconds, args.calls_per_message)], args.json)


if __name__ == "__main__":
    main()
