"""Identifiers: UUIDv7, unique across threads and forked processes, time-ordered."""

from __future__ import annotations

import os
import threading
import time
import uuid

from tidings.ids import floor_id, new_id, new_ids


def test_an_id_is_a_uuid_version_7_with_the_rfc_variant() -> None:
    parsed = uuid.UUID(new_id())
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert abs((parsed.int >> 80) - time.time_ns() // 1_000_000) < 5_000


def test_ids_are_unique_across_threads() -> None:
    made: list[list[str]] = [[] for _ in range(8)]

    def mint(into: list[str]) -> None:
        into.extend(new_id() for _ in range(5_000))

    threads = [threading.Thread(target=mint, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for into in made for i in into]
    assert len(set(every)) == len(every) == 40_000


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_id()  # the parent holds a block of random bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, "\n".join(new_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    parents = {new_id() for _ in range(100)}
    with os.fdopen(read) as pipe:
        childs = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    assert len(childs) == 100
    # the random part (the last 80 bits) is what a shared block would repeat
    assert not {i[-12:] for i in parents} & {i[-12:] for i in childs}


def test_later_ids_sort_after_earlier_ones() -> None:
    first = new_id()
    time.sleep(0.002)
    assert new_id() > first


def test_ids_of_one_millisecond_follow_the_order_they_were_minted_in() -> None:
    minted = [new_id() for _ in range(20_000)]  # many per millisecond
    assert minted == sorted(minted)
    assert len(set(minted)) == len(minted)
    millis = [uuid.UUID(i).int >> 80 for i in minted]
    assert len(set(millis)) < len(minted)  # the test did mint several ids in one millisecond


def test_monotonic_ids_keep_the_version_and_variant_bits() -> None:
    for made in (new_id() for _ in range(2_000)):
        parsed = uuid.UUID(made)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_a_batch_of_ids_follows_the_ids_before_and_precedes_those_after() -> None:
    from tidings.ids import new_ids

    before = new_id()
    batch = new_ids(1000)
    after = new_id()
    assert len(set(batch)) == 1000
    assert [before, *batch, after] == sorted([before, *batch, after])
    for made in (batch[0], batch[-1]):
        parsed = uuid.UUID(made)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert new_ids(0) == []


def test_the_floor_id_of_a_moment_precedes_every_id_minted_not_before_it() -> None:
    now = time.time()
    ahead = now + 86_400  # an injected clock a day ahead of this machine's
    minted = new_ids(3, not_before=ahead)
    assert floor_id(ahead) <= minted[0] < minted[1] < minted[2]
    assert uuid.UUID(minted[0]).version == 7
    assert floor_id(ahead) < new_id()  # and the ids after them follow them
    assert floor_id(-5.0) == "00000000-0000-0000-0000-000000000000"
