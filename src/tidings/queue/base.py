"""The broker contract: lanes of delivery tickets between the decision and the dispatcher.

The database is the source of truth for every delivery (its row is committed together with
the decision that created it); the broker carries *tickets* — "attempt delivery X now" — on
three priority lanes. Not every delivery needs one: a due delivery the deciding process can
send at once is born leased to its dispatcher and never passes through the broker (see
:mod:`tidings.runtime.processor`); retries, deferred work, fallbacks, replays and the rest
travel as tickets. Guarantees every backend must give:

- ``publish`` returns only once the tickets are durable in the broker, or — for a backend
  that keeps them only in memory — once they are recoverable from the store (the scheduler
  republishes every due ``pending`` delivery after a restart).
- A ticket may be delivered more than once (at-least-once). The handler is idempotent: it
  claims the delivery row (``pending`` → ``sending``) before calling a provider, so a
  duplicate ticket is a no-op.
- ``consume`` hands tickets to the handler in batches per lane and acknowledges a batch
  only after the handler returned, i.e. after its outcome was committed. A handler that
  raises gets its tickets redelivered.
- Lanes are isolated: a backlog on ``low`` never delays ``high``.
- A broker that can be away (RabbitMQ) does not stop a consuming process: while it is
  unreachable, ``publish`` hands the tickets to the process's own lanes (the store keeps
  them durable either way) and ``available`` says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tidings.vocabulary import LANES, Lane

__all__ = ["LANES", "Broker", "Handler", "Lane", "Ticket"]


@dataclass(frozen=True, slots=True)
class Ticket:
    """Attempt delivery ``delivery_id`` (on ``lane``; ``subject`` keeps per-subject order)."""

    delivery_id: str
    lane: Lane = "normal"
    subject: str | None = None


Handler = Callable[[Lane, list[Ticket]], Awaitable[None]]


class Broker(Protocol):
    """A queue backend (``embedded`` or RabbitMQ)."""

    name: str

    async def start(self) -> None:
        """Connect and declare what is needed."""
        ...

    async def publish(self, tickets: Sequence[Ticket]) -> None:
        """Queue ``tickets``; durable (or recoverable) when this returns."""
        ...

    async def consume(self, handler: Handler) -> None:
        """Feed tickets to ``handler`` until :meth:`aclose`; ack after it returns."""
        ...

    def depth(self) -> dict[Lane, int]:
        """Tickets waiting per lane (as far as this process can tell)."""
        ...

    def available(self) -> bool:
        """Whether the broker itself carries tickets now.

        ``False`` while a networked broker is away: a consuming process then runs its own
        tickets on in-process lanes, and accepted events are not handed to other processes.
        """
        ...

    async def aclose(self) -> None:
        """Stop consuming and disconnect."""
        ...
