"""Identifiers: UUIDv7 strings — unique, and monotonic within a process (so they sort as cursors).

Ids minted in one millisecond by one process follow each other as monotonic ULIDs do: the
first takes fresh random bits, each next one adds one to them (RFC 9562 §6.2, method 2), so
the items of one batch list in the order they were made. Across processes ids stay unique
(each millisecond of each process starts from its own 74 random bits) and time-ordered.
"""

from __future__ import annotations

import math
import os
import threading
import time

_RANDOM_BYTES = 10
_POOL_IDS = 512


class _Entropy:
    """``os.urandom`` read in blocks: one ``getrandom`` call per 512 ids rather than per id.

    A decided event takes about eleven ids, and under gVisor a system call is dear: in a
    loaded worker's profile the per-id ``os.urandom`` was 3 % of all its time. The bytes are
    the same CSPRNG output, each handed out once: under a lock across threads, and thrown
    away in a forked child (which would otherwise hand out its parent's).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        """``n`` fresh random bytes."""
        with self._lock:
            if self._at + n > len(self._pool):
                self._pool = os.urandom(max(n, _RANDOM_BYTES) * _POOL_IDS)
                self._at = 0
            start = self._at
            self._at += n
            return self._pool[start : self._at]


_entropy = _Entropy()


class _Sequence:
    """The last id's millisecond and random bits, to make the next one follow it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._millis = -1
        self._rand = 0
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # a forked child must not continue its parent's sequence: it would repeat its ids
        self._lock = threading.Lock()
        self._millis = -1
        self._rand = 0

    def next(self, millis: int) -> tuple[int, int]:
        """The (millisecond, 74 random bits) of the next id: after the last one, always."""
        with self._lock:
            return self._step(millis)

    def reserve(self, millis: int, count: int) -> tuple[int, int]:
        """As :meth:`next`, for ``count`` (≥ 1) ids that follow one another: the first's
        (millisecond, random bits); the others add 1, 2, … to the bits."""
        with self._lock:
            first = self._step(millis)
            if (self._rand + count) >> _RAND_BITS:  # no room left in this millisecond
                self._millis += 1
                self._rand = int.from_bytes(_entropy.take(_RANDOM_BYTES), "big") >> 7
                first = (self._millis, self._rand)
            self._rand += count - 1
            return first

    def _step(self, millis: int) -> tuple[int, int]:
        # under the lock
        if millis > self._millis:
            self._millis = millis
            # the top bit stays clear: 2**73 increments of room before the bits overflow
            self._rand = int.from_bytes(_entropy.take(_RANDOM_BYTES), "big") >> 7
        else:  # same millisecond, or the clock stepped back: count on from the last id
            self._rand += 1
            if self._rand >> _RAND_BITS:
                self._millis += 1
                self._rand = int.from_bytes(_entropy.take(_RANDOM_BYTES), "big") >> 7
        return self._millis, self._rand


_RAND_BITS = 74
"""UUIDv7's ``rand_a`` (12 bits) and ``rand_b`` (62 bits), counted as one number."""
_sequence = _Sequence()


def new_id() -> str:
    """A fresh UUIDv7 (RFC 9562) as a string; later ids of this process sort after earlier ones.

    >>> a, b = new_id(), new_id()
    >>> a < b
    True
    """
    millis, rand = _sequence.next(time.time_ns() // 1_000_000)
    high = rand >> 62  # rand_a: 12 bits after the version nibble
    low = rand & ((1 << 62) - 1)  # rand_b: 62 bits after the variant
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | high << 64 | 0x2 << 62 | low
    h = f"{value:032x}"  # formatting by hand is 4x cheaper than str(uuid.UUID(int=…))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_ids(count: int, *, not_before: float | None = None) -> list[str]:
    """``count`` fresh ids in order, as many :func:`new_id` calls would give (one lock for all:
    a broadcast's chunk mints hundreds at once).

    ``not_before`` (epoch seconds, e.g. an injected clock's now): the ids are at or past
    :func:`floor_id` of it even if this machine's clock reads earlier.
    """
    if count <= 0:
        return []
    millis = time.time_ns() // 1_000_000
    if not_before is not None:
        millis = max(millis, _millis(not_before))
    millis, rand = _sequence.reserve(millis, count)
    top = (millis & ((1 << 48) - 1)) << 16 | 0x7 << 12  # the high 64 bits but rand_a
    made: list[str] = []
    bits, end = rand, rand + count
    while bits < end:  # a run of ids that differ in their last 48 bits only
        stop = min(end, ((bits >> 48) + 1) << 48)
        head = f"{top | bits >> 62:016x}"
        middle = (_VARIANT | bits & _LOW) >> 48
        prefix = f"{head[:8]}-{head[8:12]}-{head[12:16]}-{middle:04x}-"
        first = bits & _LAST48
        made += [prefix + tail for tail in map(_HEX12, range(first, first + stop - bits))]
        bits = stop
    return made


_VARIANT = 0x2 << 62
_LOW = (1 << 62) - 1
_LAST48 = (1 << 48) - 1
_HEX12 = "{:012x}".format


def _millis(moment: float) -> int:
    """The millisecond an id minted at ``moment`` (epoch seconds) carries, within 48 bits."""
    return min(max(math.floor(moment * 1000), 0), (1 << 48) - 1)


def floor_id(moment: float) -> str:
    """The smallest id of the millisecond of ``moment``: every id minted at or after it (or
    by :func:`new_ids` with ``not_before`` at or after it) sorts at or after this one.

    >>> floor_id(0.0) <= new_id()
    True
    """
    h = f"{_millis(moment) << 80:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
