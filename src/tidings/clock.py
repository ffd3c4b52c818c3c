"""The clock seam: all engine code asks a :class:`Clock` for the time, so tests can drive it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time in UTC epoch seconds, and a sleep that honours the same clock."""

    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        await asyncio.sleep(seconds)


class OffsetClock(SystemClock):
    """The real clock shifted by ``offset`` seconds (tests and ``TIDINGS_CLOCK_OFFSET``)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        """Real time plus the offset."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move this clock forward."""
        self.offset += seconds


def to_datetime(epoch: float) -> datetime:
    """Epoch seconds → aware UTC datetime."""
    return datetime.fromtimestamp(epoch, UTC)


def iso(epoch: float | None) -> str | None:
    """Epoch seconds → ISO 8601 UTC string (``None`` stays ``None``)."""
    return None if epoch is None else to_datetime(epoch).isoformat().replace("+00:00", "Z")
