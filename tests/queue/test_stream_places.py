"""Places for live inbox streams shared by the processes of one machine: byte-range locks on
one file, released when a stream ends or its process dies."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from tidings.queue.stream_places import StreamPlaces


def _hold(path: str, subscriber: str, limit: int, taken: multiprocessing.Queue, go: object) -> None:  # type: ignore[type-arg]
    places = StreamPlaces(Path(path))
    taken.put([places.take(subscriber, limit) for _ in range(limit + 1)])
    go.wait(30)  # type: ignore[attr-defined]
    # exits without giving anything back: the kernel releases the locks


def test_places_are_shared_between_processes_and_freed_when_one_dies(tmp_path: Path) -> None:
    path = tmp_path / "streams.lock"
    context = multiprocessing.get_context("spawn")
    taken: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    go = context.Event()
    child = context.Process(target=_hold, args=(str(path), "buyer-1", 2, taken, go))
    child.start()
    try:
        assert sorted(taken.get(timeout=30), key=str) == [0, 1, None]  # the child holds both
        here = StreamPlaces(path)
        assert here.take("buyer-1", 2) is None  # held by the other process
        assert here.take("buyer-1", 3) == 2  # a third place is free
        assert here.take("buyer-2", 1) == 0  # another subscriber's places are its own
        go.set()
        child.join(30)
        assert here.take("buyer-1", 3) in (0, 1)  # the dead process's places are free
        assert here.take("buyer-1", 3) in (0, 1)
        assert here.take("buyer-1", 3) is None
        here.close()
    finally:
        go.set()
        child.join(30)
        if child.is_alive():
            child.kill()


def test_a_place_given_back_is_free_again(tmp_path: Path) -> None:
    places = StreamPlaces(tmp_path / "streams.lock")
    first, second = places.take("b", 2), places.take("b", 2)
    assert {first, second} == {0, 1}
    assert places.take("b", 2) is None
    assert second is not None
    places.give_back("b", second)
    assert places.take("b", 2) == second
    places.close()
    assert places.take("b", 2) is None  # closed: no places at all
