"""Scale-out mode as real processes: ``tidings serve --role api`` plus ``tidings worker``s."""

from __future__ import annotations

import asyncio
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testbed.harness import READY_WAIT, Server, Started, track
from testbed.services import (
    Services,
    create_database,
    drop_database,
    run_script,
    unique_name,
    with_path,
)
from tidings.crypto import generate_key


class Worker(Started):
    """One ``tidings worker`` subprocess."""

    def __init__(self, workdir: Path, env: Mapping[str, str], config: Path | None, n: int) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.config = config
        self.log = workdir / f"worker-{n}-{time.monotonic_ns()}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = READY_WAIT) -> Worker:
        """Start and wait until it announces itself (migrated, connected, consuming)."""
        self.launch()
        return self.wait(timeout)

    def launch(self) -> None:
        """Start the process (see :meth:`wait`)."""
        command = [sys.executable, "-m", "tidings.cli", "worker"]
        if self.config is not None:
            command += ["--config", str(self.config)]
        with self.log.open("ab") as handle:
            self.process = track(
                subprocess.Popen(
                    command, cwd=self.workdir, env=self.env, stdout=handle, stderr=subprocess.STDOUT
                )
            )

    def wait(self, timeout: float = READY_WAIT) -> Worker:
        """Wait until the worker announces itself (killed if it does not)."""
        assert self.process is not None
        try:
            return self._wait(self.process, timeout)
        except BaseException:
            self.kill()
            raise

    def _wait(self, process: subprocess.Popen[bytes], timeout: float) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-3000:]}")
            if "tidings worker" in self.log.read_text(errors="replace"):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"worker did not start: {self.log.read_text()[-3000:]}")


class Cluster(Server):
    """The API process (this object is a :class:`Server`) and its workers, on PG + RabbitMQ."""

    def __init__(
        self,
        workdir: Path,
        database_url: str,
        amqp_url: str,
        *,
        workers: int = 1,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        scaleout = {
            "TIDINGS_DATABASE_URL": database_url,
            "TIDINGS_BROKER_URL": amqp_url,
            # every process must share the key of the PII columns (no key file beside PG)
            "TIDINGS_ENCRYPTION_KEY": generate_key(),
            **(env or {}),
        }
        super().__init__(workdir, config=config, env=scaleout, role="api")
        self.workers = [Worker(workdir, self.env, self.config_path, n) for n in range(workers)]

    def start(self, timeout: float = READY_WAIT) -> Cluster:
        """Start the API and the workers side by side; wait for all (all killed if one fails)."""
        try:
            for worker in self.workers:
                worker.launch()
            super().start(timeout)
            for worker in self.workers:
                worker.wait(timeout)
        except BaseException:
            for worker in self.workers:
                worker.kill()
            self.kill()
            raise
        return self

    def add_worker(self) -> Worker:
        """Start one more worker."""
        worker = Worker(self.workdir, self.env, self.config_path, len(self.workers))
        self.workers.append(worker.start())
        return worker

    def stop(self) -> None:
        """Stop the workers and the API."""
        for worker in self.workers:
            worker.stop()
        super().stop()

    def logs(self) -> str:
        """The tail of every process's log (for failure messages)."""
        parts = [self.log, *(w.log for w in self.workers)]
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in parts if p.exists()
        )


def fresh_vhost(services: Services) -> str:
    """A new RabbitMQ vhost (synchronously, for sync fixtures); its AMQP URL."""
    assert services.directory is not None, "vhosts need services started by services.sh"
    name = unique_name("tidings-test-")
    run_script("vhost", str(services.directory), name)
    return with_path(services.amqp_url, name)


class FreshDatabase:
    """A database created for one test (synchronously, for sync fixtures)."""

    def __init__(self, services: Services) -> None:
        self.url = asyncio.run(create_database(services.postgres_url))

    def drop(self) -> None:
        """Drop it (whoever still uses it is disconnected)."""
        asyncio.run(drop_database(self.url))


def fresh_database(services: Services) -> FreshDatabase:
    """A new, empty PostgreSQL database."""
    return FreshDatabase(services)


class VhostPool:
    """Fresh vhosts made ahead in a background thread (``rabbitmqctl`` boots take seconds)."""

    def __init__(self, services: Services, ahead: int = 2) -> None:
        self.services = services
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._wanted = threading.Semaphore(ahead)
        self._stop = False
        self._thread = threading.Thread(target=self._fill, daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        while True:
            self._wanted.acquire()
            if self._stop:
                return
            try:
                self._ready.put(fresh_vhost(self.services))
            except BaseException as exc:  # noqa: BLE001 - handed to the test that takes it
                self._ready.put(exc)

    def take(self) -> str:
        """A vhost nobody used; another is made meanwhile."""
        got = self._ready.get(timeout=120)
        self._wanted.release()
        if isinstance(got, BaseException):
            raise got
        return got

    def close(self) -> None:
        """Stop making vhosts."""
        self._stop = True
        self._wanted.release()
        self._thread.join(30)


# The scale-out workload of the fault tests and bench.scaleout: paid orders, one webhook each.
SELLERS = [f"seller-{i}" for i in range(4)]
CONFIG: dict[str, Any] = {
    "categories": {"order_updates": {"required": True}},
    "templates": {"paid": {"en-US": {"title": "Paid {{ order_id }}", "body": "{{ amount }}"}}},
    "providers": {"webhook": [{"kind": "webhook", "allow_private_networks": True}]},
    "delivery": {"retry": {"attempts": 20, "backoff": "200ms", "max_backoff": "1s"}},
    "rules": [
        {
            "id": "paid-seller",
            "on": "order.paid",
            "to": "seller",
            "category": "order_updates",
            "channels": ["webhook"],
            "template": "paid",
        }
    ],
}
