"""Consuming an AMQP queue in batches, each message acked only after its handler returned.

Shared by the RabbitMQ broker's lanes (:mod:`tidings.queue.rabbitmq`) and the AMQP event
intake: the handler commits a batch's outcome, then :class:`BatchConsumer` acks it — with
one cumulative (``multiple``) ack for a run of finished messages where that is safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from tidings.queue.amqp import MessageHandler, quietly, weight

log = logging.getLogger(__name__)


class BatchConsumer:
    """Feeds a queue's messages to a handler in batches; acks each after the handler returned.

    A batch holds messages up to ``batch`` items (a message may carry several, see
    :func:`weight`). The handler may settle messages itself (e.g. reject an invalid one to the
    DLX); the rest are acked when it returns. It runs at most ``slots`` batches at once.
    Acks are cumulative where they can be (:class:`_Acks`): one frame for a run of finished
    messages rather than one per message, which matters where every socket write is a costly
    system call.
    """

    def __init__(
        self,
        queue: AbstractQueue,
        handler: MessageHandler,
        *,
        batch: int,
        slots: int,
        retries: int = 3,
    ) -> None:
        self.queue = queue
        self.retries = retries
        self.handler = handler
        self.batch = batch
        self.slots = slots
        self._buffer: list[AbstractIncomingMessage] = []
        self._acks = _Acks()
        self._wake = asyncio.Event()
        self._free = asyncio.Semaphore(slots)
        self._tasks: set[asyncio.Task[None]] = set()
        self._tag: str | None = None
        self._closed = False

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._acks.received(message)
        self._buffer.append(message)
        self._wake.set()

    async def run(self) -> None:
        """Consume until :meth:`aclose`."""
        self._tag = await self.queue.consume(self._on_message, no_ack=False)
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self._buffer and not self._closed:
                await self._free.acquire()
                taken = self._take()
                task = asyncio.create_task(self._handle(taken))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[AbstractIncomingMessage]:
        items = 0
        count = 0
        for message in self._buffer:
            items += weight(message)
            count += 1
            if items >= self.batch:
                break
        taken, self._buffer = self._buffer[:count], self._buffer[count:]
        return taken

    async def _handle(self, messages: list[AbstractIncomingMessage]) -> None:
        try:
            for attempt in range(self.retries):
                try:
                    await self.handler(messages)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning(
                        "a batch of %d failed (attempt %d)",
                        len(messages),
                        attempt + 1,
                        exc_info=True,
                    )
                    await asyncio.sleep(0.5 * 2**attempt)
                    continue
                await self._acks.finished(messages)
                return
            # still failing: give the messages back; the delivery limit catches real poison
            await self._acks.requeue(messages)
        finally:
            self._free.release()

    async def aclose(self) -> None:
        """Stop taking messages; let batches in flight finish (bounded)."""
        self._closed = True
        self._wake.set()
        if self._tag is not None:
            try:
                await asyncio.wait_for(self.queue.cancel(self._tag), 2)
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        await self._acks.flush()
        # unsettled messages go back to the queue when the channel closes


@dataclass(slots=True)
class _Open:
    """A channel's messages not yet settled (by delivery tag, rising) and those finished."""

    channel: Any
    unsettled: dict[int, AbstractIncomingMessage] = field(default_factory=dict)
    finished: dict[int, float] = field(default_factory=dict)
    """Tag → when its handler finished: acked when the run before it is, or after patience."""


class _Acks:
    """Acknowledgements of one consumer, cumulative where that is safe.

    Delivery tags rise with arrival on a channel. A finished message is acked as part of the
    longest run of finished messages at the head of its channel's unsettled ones, with one
    ``multiple`` ack for the whole run. One that finished behind a message still in flight
    waits ``patience`` seconds for the run to reach it, then is acked alone, so a slow batch
    never holds later ones unacked (filling the prefetch window). Messages a handler settled
    itself are skipped. Tags are per channel: a channel that a reconnect replaced is
    forgotten (the broker requeued what it held).
    """

    def __init__(self, patience: float = 0.2) -> None:
        self.patience = patience
        self._open: dict[int, _Open] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    def received(self, message: AbstractIncomingMessage) -> None:
        """Track ``message`` until it is settled."""
        channel = _channel_of(message)
        if channel is None or message.delivery_tag is None:
            return
        entry = self._open.get(id(channel))
        if entry is None or entry.channel is not channel:
            for key, known in list(self._open.items()):
                if known.channel.is_closed:
                    del self._open[key]
            entry = self._open[id(channel)] = _Open(channel)
        entry.unsettled[message.delivery_tag] = message

    async def finished(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        """The handler returned: ack ``messages`` (those it did not settle itself)."""
        now = asyncio.get_running_loop().time()
        touched: dict[int, _Open] = {}
        for message in messages:
            entry = self._entry(message)
            if entry is None:
                continue
            tag = message.delivery_tag
            assert tag is not None
            if message.processed:
                entry.unsettled.pop(tag, None)
            else:
                entry.finished[tag] = now
            touched[id(entry)] = entry
        for entry in touched.values():
            await self._sweep(entry, now)
        self._arm()

    async def requeue(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        """The handler kept failing: give ``messages`` back to the queue."""
        for message in messages:
            if not message.processed:
                await quietly(message.nack(requeue=True))
            entry = self._entry(message)
            if entry is not None and message.delivery_tag is not None:
                entry.unsettled.pop(message.delivery_tag, None)

    async def flush(self) -> None:
        """Ack every finished message now (before the channel closes)."""
        for entry in list(self._open.values()):
            await self._sweep(entry, float("inf"))

    def _entry(self, message: AbstractIncomingMessage) -> _Open | None:
        channel = _channel_of(message)
        entry = self._open.get(id(channel)) if channel is not None else None
        return entry if entry is not None and entry.channel is channel else None

    async def _sweep(self, entry: _Open, now: float) -> None:
        run_end = None
        for tag in entry.unsettled:
            if tag not in entry.finished:
                break
            run_end = tag
        if run_end is not None:
            for tag in [t for t in entry.unsettled if t <= run_end]:
                del entry.unsettled[tag]
                entry.finished.pop(tag, None)
            await quietly(entry.channel.basic_ack(delivery_tag=run_end, multiple=True))
        for tag in [t for t, at in entry.finished.items() if now - at >= self.patience]:
            del entry.finished[tag]
            entry.unsettled.pop(tag, None)
            await quietly(entry.channel.basic_ack(delivery_tag=tag))

    def _arm(self) -> None:
        if self._timer is not None or not any(e.finished for e in self._open.values()):
            return

        def fire() -> None:
            self._timer = None
            task = asyncio.create_task(self._stragglers())
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

        self._timer = asyncio.get_running_loop().call_later(self.patience, fire)

    async def _stragglers(self) -> None:
        now = asyncio.get_running_loop().time()
        for entry in list(self._open.values()):
            await self._sweep(entry, now)
        self._arm()


def _channel_of(message: AbstractIncomingMessage) -> Any | None:
    try:
        return message.channel
    except aio_pika.exceptions.ChannelInvalidStateError:
        return None
