"""One bad event fails only itself: a group commit that fails is retried in halves.

The intakes commit many events in one statement (concurrent requests coalesced, a batch, a
run of AMQP messages). Validation keeps what a store cannot take out of them, but should a
statement fail all the same, :func:`apart` commits each half of the group apart, down to the
single item that fails alone — so the other callers' events go in, and only the offender's
caller hears of it. When every item fails alone, the store is failing, not an item: the
first error is raised as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from tidings.errors import InvalidInput

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


async def apart(
    items: Sequence[T], commit: Callable[[Sequence[T]], Awaitable[Sequence[R]]]
) -> list[R | InvalidInput]:
    """``commit(items)`` (one result per item); on failure, halves apart, bisecting down.

    Returns one result per item, an :class:`InvalidInput` (``422``) for each item that the
    store refused while others went in. Raises the first error if nothing went in.
    """
    results = await _bisect(items, commit)
    failed = [result.error for result in results if isinstance(result, _Failed)]
    if not failed:
        return results  # type: ignore[return-value]  # no _Failed among them
    if len(failed) == len(results):
        raise failed[0]
    # the error's text may quote the refused value (PII): only its type is logged
    log.warning(
        "the store refused %d of %d items on their own (%s); the others were committed",
        len(failed),
        len(results),
        ", ".join(sorted({type(error).__name__ for error in failed})),
    )
    return [_refusal(result.error) if isinstance(result, _Failed) else result for result in results]


async def _bisect(
    items: Sequence[T], commit: Callable[[Sequence[T]], Awaitable[Sequence[R]]]
) -> list[R | _Failed]:
    try:
        return list(await commit(items))
    except Exception as exc:  # noqa: BLE001 - isolated below, or handed back whole
        if _store_down(exc):
            raise  # no item is to blame: halving would only retry the outage 2n times
        if len(items) == 1:
            return [_Failed(exc)]
    half = len(items) // 2
    return [*await _bisect(items[:half], commit), *await _bisect(items[half:], commit)]


def _store_down(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) says the store is unreachable or busy, not that
    it refused a value: a lost connection, a locked or read-only database. (Not
    ``InterfaceError``: asyncpg reports a value it cannot encode as one.)"""
    while error is not None:
        if isinstance(error, DBAPIError) and (
            error.connection_invalidated or isinstance(error, OperationalError)
        ):
            return True
        error = error.__cause__  # type: ignore[assignment]
    return False


def _refusal(error: Exception) -> InvalidInput:
    if isinstance(error, InvalidInput):
        return error
    refused = InvalidInput(
        f"the store refused this event ({type(error).__name__}); the events sent with it "
        "were accepted",
        "/",
        status=422,
    )
    refused.__cause__ = error
    return refused
