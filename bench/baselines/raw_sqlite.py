"""Ceiling of the embedded mode's store: raw SQLite commits in WAL mode.

Single-row commits and batched commits (100 rows per transaction), with synchronous=NORMAL (a
commit is durable against a process crash, not against power loss) and synchronous=FULL (fsync on
every commit). Latency is per commit; `messages` counts rows. The database lives in a temp dir on
the same disk as the working tree.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.baselines import SAMPLE_EVENT, BaselineResult, arguments, report, summarize

ROW = json.dumps(SAMPLE_EVENT)


def run(
    seconds: float = 2.0,
    synchronous: str = "NORMAL",
    batch: int = 1,
    directory: Path | None = None,
) -> BaselineResult:
    """Insert event-sized rows for `seconds`, committing every `batch` rows."""
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError("synchronous must be NORMAL or FULL")
    with tempfile.TemporaryDirectory(dir=directory, prefix="tidings-sqlite-") as tmp:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, exactly one per batch.
        db = sqlite3.connect(Path(tmp) / "bench.db", isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute(
                "CREATE TABLE events (id INTEGER PRIMARY KEY, source TEXT, event_id TEXT, "
                "body TEXT, UNIQUE (source, event_id))"
            )
            rows = 0
            latencies: list[float] = []
            started = time.perf_counter()
            deadline = started + seconds
            while (begin := time.perf_counter()) < deadline:
                db.execute("BEGIN")
                db.executemany(
                    "INSERT INTO events (source, event_id, body) VALUES (?, ?, ?)",
                    [("/shop", f"evt-{rows + i}", ROW) for i in range(batch)],
                )
                db.execute("COMMIT")
                latencies.append(time.perf_counter() - begin)
                rows += batch
            wall = time.perf_counter() - started
        finally:
            db.close()
    return summarize(
        f"raw SQLite WAL sync={synchronous}, {batch} row(s)/commit",
        rows,
        wall,
        latencies,
        "rows/s; latency is per commit",
    )


def run_all(seconds: float = 2.0) -> list[BaselineResult]:
    """The four variants: NORMAL/FULL x single-row/100-row commits."""
    return [
        run(seconds, synchronous, batch) for synchronous in ("NORMAL", "FULL") for batch in (1, 100)
    ]


def main() -> None:
    parser = arguments(__doc__ or "")
    parser.set_defaults(seconds=2.0)
    args = parser.parse_args()
    report(run_all(args.seconds), args.json)


if __name__ == "__main__":
    main()
