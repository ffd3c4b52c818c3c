"""Per-provider limits: a token bucket for the call rate and a lane-aware concurrency gate."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from tidings.vocabulary import LANES, Lane


class RateLimit:
    """Waits until a call may go out under the configured rate.

    Callers are served in arrival order (the lock is FIFO), so a waiting call is never
    overtaken by a later one.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self._now = now
        self._sleep = sleep
        self._tokens = self.capacity
        self._stamp = now()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Take one token, sleeping until one is there."""
        async with self._lock:
            while True:
                now = self._now()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1 - 1e-9:  # refill arithmetic is not exact
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self._sleep((1 - self._tokens) / self.rate)


class Gate:
    """At most ``limit`` calls in flight; a freed place goes to the highest lane waiting.

    A plain FIFO semaphore would let a high-priority delivery queue behind hundreds of
    low-priority ones already waiting for the same provider.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiting: dict[Lane, deque[asyncio.Future[None]]] = {lane: deque() for lane in LANES}

    def waiting(self) -> int:
        """Calls waiting for a place."""
        return sum(len(queue) for queue in self._waiting.values())

    async def acquire(self, lane: Lane = "normal") -> None:
        """Take one place, waiting (behind higher lanes) while all are in use.

        The caller must :meth:`release` it; :meth:`hold` does both around a block.
        """
        waiting = self._waiting
        if self.in_use < self.limit and not (
            waiting["high"] or waiting["normal"] or waiting["low"]
        ):  # (not self.waiting(): summing the lanes showed in profiles, twice per delivery)
            self.in_use += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[lane].append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a place just as we were cancelled: pass it on
            else:
                self._waiting[lane].remove(future)
            raise

    def release(self) -> None:
        """Give back a place taken with :meth:`acquire` (to the highest lane waiting)."""
        for lane in LANES:
            queue = self._waiting[lane]
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)  # the place passes on; in_use is unchanged
                    return
        self.in_use -= 1

    @asynccontextmanager
    async def hold(self, lane: Lane = "normal") -> AsyncIterator[None]:
        """Hold one place for the duration of the block."""
        await self.acquire(lane)
        try:
            yield
        finally:
            self.release()
