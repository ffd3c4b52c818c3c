"""Every core on one machine: ``tidings serve --processes N`` as N service processes.

The supervisor (the process the user started) does what must happen once: it migrates the
database, creates the PII key, the keys and the inbox secret (so a generated admin key is
printed once), puts every lease of a previous run back to ``pending``, and binds the
listening socket. Then it starts N children, each a whole ``tidings serve`` of the role
(intake, decisions, delivery) that inherits the socket and adds one of its own on the same
port, so that the kernel spreads connections evenly (:func:`child_sockets`). They share the
database, which is also how they share work: an event is decided by the process that accepted
it, any process recovers what a dead one left, and a delivery row is claimed by exactly one.

A child that dies (``kill -9``, a crash) is noticed at once: its ``sending`` rows go back to
``pending`` (by :func:`~tidings.store.deliveries.release_leases_of`, not after their lease),
its metrics files are retired, and a new child takes its place, which processes every
accepted-but-undecided event and republishes every due delivery on start. So no accepted
event is lost, and only the calls in flight at the instant of death may be sent again (with
the same idempotency id). Live inbox updates cross between children (see
:class:`~tidings.queue.inbox_hub.PeerHub`), so an SSE stream sees every item whichever
process made it.

The children are told what they are by the environment (``TIDINGS_LISTEN_FD``,
``TIDINGS_PROCESS``, ``TIDINGS_RUN_DIR``, ``PROMETHEUS_MULTIPROC_DIR``); a child dies with its
supervisor (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the supervisor leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidings.config import Settings

log = logging.getLogger("tidings.runtime.supervisor")  # also when run with -m

LISTEN_FD = "TIDINGS_LISTEN_FD"
"""The inherited listening socket's file descriptor (in a child)."""
PROCESS = "TIDINGS_PROCESS"
"""``index/count`` of a child, e.g. ``0/2``."""
RUN_DIR = "TIDINGS_RUN_DIR"
"""A directory the supervisor made for this run: peers' sockets, metrics files."""
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's multiprocess directory (see :mod:`tidings.metrics`)."""
SPEC = "TIDINGS_SUPERVISOR_SPEC"
"""What ``tidings serve`` hands the supervisor it becomes (see :func:`main`)."""
DATABASE = "TIDINGS_BURY_DATABASE"
"""The database URL handed to :mod:`tidings.runtime.bury`."""

_RESTARTS = 5
"""Children that may die within :data:`_RESTART_WINDOW` seconds before the service gives up."""
_RESTART_WINDOW = 60.0
_STOP_GRACE = 10.0


def default_processes() -> int:
    """The machine's cores (those this process may run on)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class Share:
    """Which of the service's processes this one is (``0/1`` when it runs alone)."""

    index: int = 0
    count: int = 1

    @classmethod
    def from_env(cls) -> Share:
        """The share the supervisor gave this process, or the whole service."""
        value = os.environ.get(PROCESS)
        if not value:
            return cls()
        index, _, count = value.partition("/")
        return cls(int(index), int(count))

    @property
    def child(self) -> bool:
        """Whether a supervisor runs this process (and did the once-per-run work)."""
        return PROCESS in os.environ

    def limits(self, settings: Settings) -> Settings:
        """``settings`` with every per-process limit split across the processes.

        The HTTP rate limit, each provider's rate limit and concurrency are promises about
        the whole service: N processes each allow 1/N of them.
        """
        if self.count == 1:
            return settings
        n = self.count
        api = settings.api.model_copy(
            update={
                "rate_limit": None
                if settings.api.rate_limit is None
                else settings.api.rate_limit / n,
                "burst": None if settings.api.burst is None else max(1, settings.api.burst // n),
            }
        )
        providers = {
            channel: [
                entry.model_copy(
                    update={
                        "rate_limit": None if entry.rate_limit is None else entry.rate_limit / n,
                        "concurrency": (
                            None if entry.concurrency is None else max(1, entry.concurrency // n)
                        ),
                    }
                )
                for entry in entries
            ]
            for channel, entries in settings.providers.items()
        }
        delivery = settings.delivery.model_copy(
            update={"concurrency": max(1, settings.delivery.concurrency // n)}
        )
        return settings.model_copy(
            update={"api": api, "providers": providers, "delivery": delivery}
        )


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, inheritable by children.

    It is the first of a ``SO_REUSEPORT`` group: each child adds one of its own on the same
    port (:func:`child_sockets`).
    """
    sock = _tcp_socket(host)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def child_sockets(inherited: int) -> list[socket.socket]:
    """The sockets a child accepts on: the supervisor's (shared) and one of its own.

    With one shared socket the kernel hands a new connection to whichever child accepts
    first, which spreads short requests well but long-lived ones badly: a shop's pool of
    keep-alive connections opens at once, one child wins most of them, and it stays the busy
    one for the connections' life (``wrk`` with 32 connections: 0.83 + 0.40 cores of 2). The
    kernel spreads the connections of a ``SO_REUSEPORT`` group evenly over its listening
    sockets by their addresses, so a child's own socket gets its fair share whatever it is
    doing. The shared socket stays: it holds the port and queues connections while no child
    listens yet (at start, between a death and its replacement), and connections waiting in
    a dead child's own queue are all it loses — never an accepted request.
    """
    shared = socket.socket(fileno=inherited)
    host, port = shared.getsockname()[:2]
    own = _tcp_socket(host)
    try:
        own.bind((host, port))
        own.listen(2048)
    except OSError:  # no SO_REUSEPORT here (or not for this socket): the shared one serves
        own.close()
        return [shared]
    return [shared, own]


def _tcp_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills this child if the parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0


@dataclass
class Supervisor:
    """Starts, watches and restarts the children of one ``tidings serve --processes N``."""

    command: Sequence[str]
    """The child's command line (a ``tidings serve`` for one process)."""
    count: int
    sock: socket.socket | None
    run_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tidings-run-")))
    database: str = ""
    children: list[_Child] = field(default_factory=list)
    deaths: list[float] = field(default_factory=list)
    stopping: bool = False

    def __post_init__(self) -> None:
        (self.run_dir / "metrics").mkdir(exist_ok=True)
        (self.run_dir / "peers").mkdir(exist_ok=True)
        self.children = [_Child(i) for i in range(self.count)]

    def _env(self, index: int) -> dict[str, str]:
        env = dict(os.environ)
        env[PROCESS] = f"{index}/{self.count}"
        env[RUN_DIR] = str(self.run_dir)
        env[METRICS_DIR] = str(self.run_dir / "metrics")
        if self.sock is not None:
            env[LISTEN_FD] = str(self.sock.fileno())
        return env

    def spawn(self, child: _Child) -> None:
        """Start ``child`` (again)."""
        fds = () if self.sock is None else (self.sock.fileno(),)
        child.process = subprocess.Popen(
            list(self.command),
            env=self._env(child.index),
            pass_fds=fds,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
        )
        child.started = time.monotonic()

    async def run(self) -> int:
        """Start every child; restart any that dies; stop them all on SIGTERM/SIGINT."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        for child in self.children:
            self.spawn(child)
        status = 0
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)
                for child in self.children:
                    if stop.is_set():
                        break
                    process = child.process
                    if process is None or process.poll() is None:
                        continue
                    if not await self._replace(child, process):
                        status = 1
                        stop.set()
        finally:
            self.stopping = True
            await self.stop_children()
            if self.sock is not None:
                self.sock.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return status

    async def _replace(self, child: _Child, dead: subprocess.Popen[bytes]) -> bool:
        """Clean up after a dead child and start another; ``False`` when it keeps dying."""
        log.warning(
            "process %d (pid %d) exited with %s; starting another",
            child.index,
            dead.pid,
            dead.returncode,
        )
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / "peers" / f"{child.index}.sock").unlink()
        # before the replacement starts: its pid must not be mistaken for the dead one's
        await bury(self.database, dead.pid, self.run_dir / "metrics")
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < _RESTART_WINDOW] + [now]
        if len(self.deaths) > _RESTARTS:
            log.error(
                "%d processes died within %.0f s: stopping", len(self.deaths), _RESTART_WINDOW
            )
            return False
        if now - child.started < 1.0:
            await asyncio.sleep(1.0)  # a child that dies at start: not in a tight loop
        self.spawn(child)
        return True

    async def stop_children(self) -> None:
        """SIGTERM every child; SIGKILL those still running after the grace period."""
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for _ in range(int(_STOP_GRACE / 0.05)):
            if all(p.poll() is not None for p in running):
                break
            await asyncio.sleep(0.05)
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait()


async def bury(database: str, pid: int, metrics_dir: Path) -> None:
    """Release dead process ``pid``'s leases and retire its metrics (:mod:`.bury`).

    In a short-lived process of its own: the supervisor never loads the store or the
    metrics library, and stays small.
    """
    env = dict(os.environ)
    env[DATABASE] = database  # never on a command line: it may hold a password
    helper = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tidings.runtime.bury", str(pid), str(metrics_dir), env=env
    )
    await helper.wait()


def main() -> int:
    """``python -m tidings.runtime.supervisor``: supervise, as ``tidings serve`` asked.

    ``tidings serve --processes N`` reads its config, migrates, binds the port, then replaces
    itself (``exec``) with this small process: the config library, the CLI's and the
    console's modules are not kept in memory for the whole run. What to run is JSON in the
    environment (:data:`SPEC`: not on the command line, as the database URL may hold a
    password): ``{"command": [...], "count": N, "fd": F | null, "database": URL}``.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = json.loads(os.environ.pop(SPEC))
    fd = spec["fd"]
    sock = None if fd is None else socket.socket(fileno=fd)
    supervisor = Supervisor(spec["command"], spec["count"], sock, database=spec["database"])
    return asyncio.run(supervisor.run())


if __name__ == "__main__":
    sys.exit(main())
