"""Live inbox updates across processes (scale-out mode), relayed through RabbitMQ.

Every process binds an exclusive, auto-deleted queue to the fanout exchange ``tidings.inbox``;
what one process publishes reaches its own SSE streams at once and every other process's
through the exchange. Best effort: the inbox itself is in the database, a lost update only
means a stream learns of an item at its next read.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from tidings.queue.amqp import quietly
from tidings.queue.inbox_hub import InboxHub, packed, unpacked

INBOX = "tidings.inbox"


class RelayedHub(InboxHub):
    """An :class:`InboxHub` whose items reach the SSE streams of every process, via RabbitMQ.

    Items published in one pass of the event loop (a processed batch) travel as one message;
    so do those of :meth:`publish_items` (a broadcast chunk's), :func:`packed`: the values
    they share once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.origin = f"{os.getpid()}-{id(self):x}"
        self._exchange: AbstractExchange | None = None
        self._relaying: list[dict[str, Any]] = []
        self._batches: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, connection: AbstractRobustConnection) -> None:
        """Declare the exchange and this process's queue on ``connection``; start relaying."""
        channel = await connection.channel(publisher_confirms=False)
        self._exchange = await channel.declare_exchange(INBOX, aio_pika.ExchangeType.FANOUT)
        mine = await channel.declare_queue(exclusive=True, auto_delete=True)
        await mine.bind(self._exchange)
        await mine.consume(self.received, no_ack=True)

    def publish(self, subscriber_id: str, message: dict[str, Any]) -> None:
        """Deliver locally and relay to the other processes."""
        super().publish(subscriber_id, message)
        if self._exchange is None:
            return
        self._later()
        self._relaying.append({"to": subscriber_id, "message": message})

    def publish_items(self, rows: Sequence[dict[str, Any]]) -> None:
        """Deliver locally; relay them to the other processes as one :func:`packed` batch."""
        self.deliver_items(rows)
        if self._exchange is None or not rows:
            return
        self._later()
        self._batches.append(packed(rows))

    def _later(self) -> None:
        if not self._relaying and not self._batches:
            asyncio.get_running_loop().call_soon(self._relay)

    def _relay(self) -> None:
        exchange, items, self._relaying = self._exchange, self._relaying, []
        batches, self._batches = self._batches, []
        if exchange is None or not (items or batches):
            return
        relayed = {"from": self.origin, "items": items, "batches": batches}
        body = json.dumps(relayed, default=str)
        task = asyncio.create_task(quietly(exchange.publish(aio_pika.Message(body.encode()), "")))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def received(self, message: AbstractIncomingMessage) -> None:
        """An item relayed by a process (ours were delivered locally already)."""
        try:
            relayed = json.loads(message.body)
            if relayed.get("from") == self.origin:
                return
            for item in relayed["items"]:
                super().publish(str(item["to"]), item["message"])
            for batch in relayed.get("batches", ()):
                self.deliver_items(unpacked(batch))
        except (ValueError, KeyError, TypeError, AttributeError):
            return

    async def aclose(self) -> None:
        """Stop relaying (updates still being sent are dropped)."""
        self._exchange = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
