"""What is left to do after one of the service's processes died: ``python -m tidings.runtime.bury``.

The supervisor of ``tidings serve --processes N`` stays a small process (it imports neither
the store nor the metrics library: ~15 MB instead of ~45 MB). When a child dies, it runs this
short-lived helper before starting the replacement:

- the dead process's ``sending`` deliveries go back to ``pending`` — its own rows only, by
  lease owner, as a sibling's in-flight calls are alive (see
  :func:`tidings.store.deliveries.release_leases_of`); the siblings' schedulers publish them
  again within a tick;
- its metrics files are retired (see :func:`tidings.metrics.process_died`), so ``/metrics``
  keeps its counts and forgets its gauges.

Usage: ``python -m tidings.runtime.bury PID METRICS_DIR``, the database URL in the environment
(``TIDINGS_BURY_DATABASE``: never on a command line, as it may hold a password).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("tidings.runtime.bury")  # run with -m


async def release_leases(database: str, pid: int) -> int:
    """Put the ``sending`` rows of dead process ``pid`` (on this host) back to ``pending``."""
    from tidings.store.db import create_engine
    from tidings.store.deliveries import lease_owner, release_leases_of

    engine = create_engine(database)
    try:
        async with engine.begin() as conn:
            return await release_leases_of(conn, lease_owner(pid))
    finally:
        await engine.dispose()


def bury(database: str, pid: int, metrics_dir: Path) -> None:
    """Release ``pid``'s leases in ``database`` and retire its metrics files."""
    from tidings.metrics import process_died

    process_died(pid, metrics_dir)
    if database:
        released = asyncio.run(release_leases(database, pid))
        if released:
            log.info("released %d deliveries of process %d", released, pid)


def main(argv: list[str]) -> int:
    """The command line: ``PID METRICS_DIR``; exit 1 when the leases stay held."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pid, metrics_dir = argv
    database = os.environ.get("TIDINGS_BURY_DATABASE", "")
    try:
        bury(database, int(pid), Path(metrics_dir))
    except Exception:  # noqa: BLE001 - their leases run out anyway (recover_after)
        log.warning("could not release the leases of process %s", pid, exc_info=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
