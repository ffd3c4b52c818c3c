"""The embedded broker: in-process lanes, durable through the store.

Tickets are held in memory; what makes them durable is the ``deliveries`` table, committed
before :meth:`publish` is called: after a crash the scheduler republishes every due
``pending`` delivery (see :mod:`tidings.delivery.scheduler`). So ``kill -9`` loses nothing.

Lanes share ``slots`` batches in flight, but not equally: ``high`` may always start a batch
(up to ``slots`` of its own), ``normal`` and ``low`` together use at most ``slots`` minus a
reserve, and ``low`` at most half — so a flood of low (or normal) work never leaves high
without a place, and low never starves normal.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from tidings.queue.base import LANES, Handler, Lane, Ticket


class EmbeddedBroker:
    """In-memory lanes; batches of up to ``batch`` tickets; ``slots`` batches in flight."""

    name = "embedded"

    def __init__(self, *, slots: int = 8, batch: int = 64) -> None:
        self._lanes: dict[Lane, deque[Ticket]] = {lane: deque() for lane in LANES}
        self._wake = asyncio.Event()
        self._slots = slots
        self._batch = batch
        self._busy: dict[Lane, int] = dict.fromkeys(LANES, 0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._handler: Handler | None = None
        self._closed = False

    async def start(self) -> None:
        """Nothing to connect."""

    async def publish(self, tickets: Sequence[Ticket]) -> None:
        """Append to the lanes (the store already holds the deliveries).

        With a consumer running, batches start here and now: a ticket does not wait for the
        consumer's loop to wake first (one pass of the event loop less before its claim).
        """
        for ticket in tickets:
            self._lanes[ticket.lane].append(ticket)
        if tickets:
            self._start_batches()

    def depth(self) -> dict[Lane, int]:
        """Tickets waiting per lane."""
        return {lane: len(queue) for lane, queue in self._lanes.items()}

    def available(self) -> bool:
        """Always: the lanes live in this process."""
        return True

    def _may_start(self, lane: Lane) -> bool:
        busy = self._busy
        if lane == "high":
            return busy["high"] < self._slots
        shared = busy["normal"] + busy["low"]
        if shared >= max(1, self._slots - max(1, self._slots // 4)):  # the reserve for high
            return False
        return lane == "normal" or busy["low"] < max(1, self._slots // 2)

    def _next_lane(self) -> Lane | None:
        for lane in LANES:
            if self._lanes[lane] and self._may_start(lane):
                return lane
        return None

    async def consume(self, handler: Handler) -> None:
        """Run ``handler`` over batches, highest lane first, until closed."""
        self._handler = handler
        try:
            while not self._closed:
                self._start_batches()
                self._wake.clear()
                await self._wake.wait()
        finally:
            self._handler = None

    def _start_batches(self) -> None:
        """Start a batch for every lane that has tickets and may (highest first)."""
        handler = self._handler
        if handler is None:
            return
        while not self._closed:
            lane = self._next_lane()
            if lane is None:
                return
            queue = self._lanes[lane]
            batch = [queue.popleft() for _ in range(min(self._batch, len(queue)))]
            self._busy[lane] += 1
            task = asyncio.create_task(self._run(handler, lane, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, handler: Handler, lane: Lane, batch: list[Ticket]) -> None:
        try:
            await handler(lane, batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            # nothing is lost: the rows are still pending and the scheduler re-finds them
            await asyncio.sleep(0.5)
            self._lanes[lane].extend(batch)
        finally:
            self._busy[lane] -= 1
            self._start_batches()

    async def aclose(self) -> None:
        """Stop; let batches in flight finish (bounded)."""
        self._closed = True
        self._wake.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        for task in self._tasks:
            task.cancel()
