"""Backpressure (SPEC §2): a cheap estimate of the undecided backlog, and admission against it.

The backlog is every accepted event not decided yet, whichever process accepted it: the rows
of ``events`` with no ``processed_at``. Counting them per request would put a query on the
hot path, so each process keeps an estimate instead: a background refresh (every ``every``
seconds) counts them in the database, and the events this process admitted since are added
on top (until a count that surely includes them: an event admitted before a count started
but committed after it is not dropped, at worst counted twice for one period). Between
refreshes the other processes' admissions are unseen, so the backlog may pass the limit by
what the service accepts in one refresh period; it stays bounded.

An intake request over the limit is not refused at once: a closed loop of clients would turn
into a flood of cheap ``503``s whose handling takes the CPU that decisions and deliveries
need to bring the backlog down. :meth:`Backlog.admit` holds it for up to ``hold`` seconds,
waking at each refresh, and admits it if the backlog dropped below the limit meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from tidings.clock import Clock
from tidings.metrics import Metrics
from tidings.store import Store
from tidings.store import backlog as backlog_rows

log = logging.getLogger(__name__)

RETRY_AFTER_MIN = 1
RETRY_AFTER_MAX = 30
_RATE_HORIZON = 2.0
"""Seconds over which the drain rate is smoothed (an exponentially weighted mean)."""
_QUERY_SHARE = 0.1
"""The refresh waits at least this many times its own query's duration: a huge backlog (a
restart after a long outage) makes the count slower, and the count must stay cheap."""


class Backlog:
    """The accepted-but-undecided events of the whole service, as this process estimates them.

    >>> backlog = Backlog(store, clock, metrics, limit=10_000)
    >>> await backlog.start()  # one refresh now, then every ``every`` seconds
    >>> if not await backlog.admit(len(batch)):
    ...     answer_503(retry_after=backlog.retry_after())
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        limit: int,
        *,
        every: float = 0.1,
        hold: float = 0.25,
    ) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.limit = limit
        self.every = every
        self.hold = hold
        self.undecided = 0
        """Undecided events at the last refresh (every process's)."""
        self.oldest: float | None = None
        """``received_at`` of the oldest undecided event at the last refresh."""
        self.drain_rate = 0.0
        """Events decided per second lately (by every process)."""
        self._in_flight = 0  # admitted here, commit not finished
        self._settled = 0  # admitted here, commit finished after the last count began
        self._since: float | None = None  # the last refresh's clock time
        self._refreshed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def estimate(self) -> int:
        """Undecided events now: the last count plus what this process admitted since."""
        return self.undecided + self._in_flight + self._settled

    def over(self) -> bool:
        """Whether the backlog is at or over the limit."""
        return self.undecided + self._in_flight + self._settled >= self.limit

    def age(self) -> float:
        """Seconds the oldest undecided event has waited (0 when none waits)."""
        if self.oldest is None:
            return 0.0
        return max(0.0, self.clock.now() - self.oldest)

    async def admit(self, count: int) -> bool:
        """Whether ``count`` more events may be accepted now (they are counted in if so: call
        :meth:`settle` once their commit is over, whatever its outcome).

        Over the limit, waits up to ``hold`` seconds for a refresh that finds the backlog
        below it; ``False`` if none does.
        """
        if not self.over():
            self._in_flight += count
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hold
        while (remaining := deadline - loop.time()) > 0:
            refreshed = self._refreshed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await refreshed.wait()
            if not self.over():
                self._in_flight += count
                return True
        return False

    def settle(self, count: int) -> None:
        """The commit of ``count`` admitted events is over: the next count includes them."""
        self._in_flight -= count
        self._settled += count

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the time to drain back below the limit at
        the recent rate, between 1 and 30."""
        excess = self.estimate() - self.limit + 1
        if self.drain_rate <= 0:
            return RETRY_AFTER_MAX
        return max(RETRY_AFTER_MIN, min(RETRY_AFTER_MAX, math.ceil(excess / self.drain_rate)))

    async def refresh(self) -> None:
        """Count the backlog in the database; update the rate, the gauges and the waiters."""
        settled = self._settled  # in the database by now (or refused: duplicates, failures)
        now = self.clock.now()
        since = now if self._since is None else self._since
        async with self.store.read() as conn:
            found = await backlog_rows.figures(conn, since)
        self._settled -= settled
        self.undecided = found.undecided
        self.oldest = found.oldest_received_at
        if self._since is not None and now > since:
            span = now - since
            weight = 1.0 - math.exp(-span / _RATE_HORIZON)
            self.drain_rate += weight * (found.decided_since / span - self.drain_rate)
        self._since = now
        self.metrics.backlog_events.set(self.undecided)
        self.metrics.backlog_age.set(self.age())
        woken, self._refreshed = self._refreshed, asyncio.Event()
        woken.set()

    async def start(self) -> None:
        """Refresh once now, then every ``every`` seconds in the background."""
        try:
            await self.refresh()
        except Exception:  # noqa: BLE001 - the loop below keeps trying
            log.warning("counting the backlog failed", exc_info=True)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="backlog")

    async def _run(self) -> None:
        failing = False
        pause = self.every
        while True:
            await asyncio.sleep(pause)
            started = time.perf_counter()
            try:
                await self.refresh()
                failing = False
            except Exception:  # noqa: BLE001 - the last estimate stands; try again
                if not failing:
                    log.warning("counting the backlog failed", exc_info=True)
                failing = True
            took = time.perf_counter() - started
            pause = max(self.every - took, took / _QUERY_SHARE - took)

    async def aclose(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
