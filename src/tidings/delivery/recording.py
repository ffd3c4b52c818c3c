"""Group commits of outcomes: whatever finished meanwhile, from any batch, goes in one write.

That write joins the processor's next transaction when there is one soon (the processor calls
:meth:`Recorder.record_now` right before it queues its own), else it comes after
:data:`RECORD_WITHIN` on its own. It records each outcome, its status callback, the
deactivation of a dead destination, the dead letter of a spent budget, and the fallback
deliveries of a notification whose every primary delivery failed (published once committed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import Clock
from tidings.delivery import callbacks as status_callbacks
from tidings.delivery.breaker import Breaker
from tidings.delivery.fallback import fallback
from tidings.delivery.outcomes import Result, queue_wait, status_change
from tidings.ids import new_id
from tidings.metrics import Metrics
from tidings.queue.base import Broker, Ticket
from tidings.store import Store
from tidings.store import deliveries as delivery_rows_store
from tidings.store import subscribers as subscriber_rows
from tidings.vocabulary import DeliveryStatus

log = logging.getLogger(__name__)
RECORD_WITHIN = 0.02
"""Seconds an outcome waits at most for a transaction to join before it gets one of its own.
(Before it is committed its row stays ``sending``: a crash meanwhile sends it again, as one
in flight; the batches of tickets waited up to 0.1 s for their slowest calls before.)"""
_SUCCESS: frozenset[DeliveryStatus] = frozenset({"sent", "delivered"})


class Recorder:
    """Commits outcomes in groups and counts them in the metrics once committed."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        clock: Clock,
        metrics: Metrics,
        breakers: dict[str, Breaker],
    ) -> None:
        self.store = store
        self.broker = broker
        self.clock = clock
        self.metrics = metrics
        self.breakers = breakers
        """Each provider's breaker by name, for ``tidings_provider_up``."""
        self.up: dict[str, int] = {}
        """The ``tidings_provider_up`` value last set per provider."""
        self._results: list[Result] = []
        """Outcomes waiting for the next group commit."""
        self._committed: asyncio.Future[None] | None = None
        """Resolved when the outcomes in :attr:`_results` are committed."""
        self._timer: asyncio.TimerHandle | None = None
        self._recording: set[asyncio.Task[None]] = set()

    def record_soon(self, result: Result) -> asyncio.Future[None]:
        """Queue ``result`` for the next commit of outcomes; resolved once it is committed.

        That commit comes when the processor writes next (:meth:`record_now`), or after
        :data:`RECORD_WITHIN`: under load one carries the outcomes of many batches.
        """
        self._results.append(result)
        committed = self._committed
        if committed is None:
            committed = self._committed = asyncio.get_running_loop().create_future()
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(RECORD_WITHIN, self.record_now)
        return committed

    def record_now(self) -> None:
        """Write the outcomes waiting now (in the next transaction the writer runs)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._results:
            return
        results, self._results = self._results, []
        committed, self._committed = self._committed, None
        assert committed is not None
        task = asyncio.ensure_future(self._commit(results, committed))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def aclose(self) -> None:
        """Write what waits, and wait (5 s at most) for the writes under way."""
        self.record_now()
        if self._recording:
            await asyncio.wait(set(self._recording), timeout=5)

    async def _commit(self, results: list[Result], committed: asyncio.Future[None]) -> None:
        try:
            fallback_tickets = await self.store.write(partial(self._record, results=results))
            if fallback_tickets:
                await self.broker.publish(fallback_tickets)
        except Exception as exc:  # noqa: BLE001 - the leases bring the rows back
            log.warning("recording %d outcomes failed: %s", len(results), exc)
            committed.set_exception(exc)
            committed.exception()  # whoever waits sees it; nobody must
            return
        except BaseException:
            committed.cancel()  # shutdown: the leases bring the rows back
            raise
        committed.set_result(None)
        self._observe(results)

    async def _record(self, conn: AsyncConnection, *, results: Sequence[Result]) -> list[Ticket]:
        await delivery_rows_store.finish(conn, [_finished(r) for r in results])
        now = self.clock.now()
        callbacks = status_callbacks.watch(self.store)
        if await callbacks.active(conn):  # with none registered, nothing more is done
            await callbacks.record(conn, map(status_change, results), now)
        for r in results:
            if r.deactivate:
                kind = "webhook" if r.channel == "webhook" else "device"
                await subscriber_rows.deactivate(conn, kind, r.deactivate, r.error or "gone", now)
            if r.status == "dead":
                await delivery_rows_store.add_dead_letter(
                    conn, new_id(), r.claimed.id, r.channel, r.provider, r.error or "", now
                )
        failed_notes = {
            r.claimed.notification_id: r.note
            for r in results
            if r.status in ("failed", "dead") and not r.claimed.is_fallback
        }
        tickets: list[Ticket] = []
        for note in failed_notes.values():
            tickets += await fallback(conn, note, now)
        return tickets

    def _observe(self, results: Sequence[Result]) -> None:
        """Metrics of a group of outcomes: counted per label set, latencies per delivery."""
        child = self.metrics.child
        latency = self.metrics.latency
        counted: dict[tuple[str, str, str], int] = {}
        providers: set[str] = set()
        for r in results:
            if r.provider is None and r.status == "pending":
                continue  # deferred behind an open circuit: nothing was attempted
            provider = r.provider or "-"
            key = (r.channel, provider, r.status)
            counted[key] = counted.get(key, 0) + 1
            providers.add(r.provider or "")
            if r.status in _SUCCESS:
                c = r.claimed
                channel = r.channel
                tc = queue_wait(r)
                if tc is not None:
                    child(latency, "queue", channel).observe(tc)
                if r.td is not None:
                    child(latency, "deliver", channel).observe(r.td)
                child(latency, "produce", channel).observe(c.created_at - c.accepted_at)
                child(latency, "total", channel).observe(r.finished_at - c.accepted_at)
        for labels, count in counted.items():
            child(self.metrics.deliveries, *labels).inc(count)
        for provider in providers:
            breaker = self.breakers.get(provider)
            if breaker is not None:
                up = 1 if breaker.state == "closed" else 0
                if self.up.get(provider) != up:  # set on a change, not per delivery
                    self.up[provider] = up
                    child(self.metrics.provider_up, provider).set(up)


def _finished(r: Result) -> dict[str, Any]:
    """The row :func:`tidings.store.deliveries.finish` writes for an outcome."""
    c = r.claimed
    final = r.status != "pending"
    return {
        "id": c.id,
        "status": r.status,
        "provider": r.provider,
        "attempts": r.attempts,
        "last_error": r.error,
        "due_at": r.due_at,
        "finished_at": r.finished_at if final else None,
        "tp": c.created_at - c.accepted_at,
        "tc": queue_wait(r),
        "td": r.td,
        # the attempt began when the provider was called (after any wait for a slot)
        "started_at": r.called_at if r.called_at is not None else r.started_at,
        "outcome": r.outcome,
    }
