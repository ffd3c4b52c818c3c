"""Token bucket and the lane-aware concurrency gate."""

from __future__ import annotations

import asyncio

import pytest

from tidings.ratelimit import Gate, RateLimit


class FakeTime:
    """A monotonic clock that only moves when the rate limit sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_burst_then_the_rate() -> None:
    time = FakeTime()
    limit = RateLimit(10, burst=3, now=time, sleep=time.sleep)
    stamps = []
    for _ in range(8):
        await limit.acquire()
        stamps.append(time.now)
    assert stamps[:3] == [100.0] * 3  # the burst
    gaps = [b - a for a, b in zip(stamps[2:], stamps[3:], strict=False)]
    assert gaps == pytest.approx([0.1] * 5)


async def test_idle_time_refills_up_to_the_burst_only() -> None:
    time = FakeTime()
    limit = RateLimit(2, burst=2, now=time, sleep=time.sleep)
    await limit.acquire()
    await limit.acquire()
    time.now += 60  # a long pause does not bank 120 calls
    for _ in range(2):
        await limit.acquire()
    assert time.sleeps == []
    await limit.acquire()
    assert time.sleeps == [pytest.approx(0.5)]


async def test_gate_never_exceeds_its_limit() -> None:
    gate = Gate(3)
    running = peak = 0

    async def call() -> None:
        nonlocal running, peak
        async with gate.hold("normal"):
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.001)
            running -= 1

    await asyncio.gather(*(call() for _ in range(50)))
    assert peak == 3 and gate.in_use == 0 and gate.waiting() == 0


async def test_gate_lets_high_past_waiting_low() -> None:
    gate = Gate(1)
    order: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with gate.hold("low"):
            await release.wait()

    async def call(name: str, lane: str) -> None:
        async with gate.hold(lane):  # type: ignore[arg-type]
            order.append(name)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(call(f"low-{i}", "low")) for i in range(5)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(call("normal", "normal")))
    tasks.append(asyncio.create_task(call("high", "high")))
    await asyncio.sleep(0)
    assert gate.waiting() == 7
    release.set()
    await asyncio.gather(first, *tasks)
    assert order == ["high", "normal", "low-0", "low-1", "low-2", "low-3", "low-4"]


async def test_a_cancelled_waiter_does_not_leak_a_place() -> None:
    gate = Gate(1)
    async with gate.hold("low"):
        waiter = asyncio.create_task(gate.hold("high").__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert gate.in_use == 0 and gate.waiting() == 0
    async with gate.hold("normal"):
        assert gate.in_use == 1
