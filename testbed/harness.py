"""Test harness: run ``tidings serve`` as a real subprocess on a free port."""

from __future__ import annotations

import atexit
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
READY_WAIT = 60.0
"""Seconds a start waits for readiness: a loaded 2-core machine may take that long."""

_STARTED: list[subprocess.Popen[bytes]] = []


def track(process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Remember a process a test started: whatever path the test takes, it is killed at exit."""
    _STARTED[:] = [p for p in _STARTED if p.poll() is None]
    _STARTED.append(process)
    return process


def kill_process(process: subprocess.Popen[bytes]) -> None:
    """``kill -9`` and reap (nothing when it already ended)."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(10)


def stop_process(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """Terminate gracefully, ``kill -9`` after ``grace`` seconds (nothing when it ended)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            kill_process(process)


@atexit.register
def _kill_leftovers() -> None:
    for process in _STARTED:
        kill_process(process)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Started:
    """A process a test started (``process``, once launched): stopped or killed on demand."""

    process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """``kill -9``."""
        if self.process is not None:
            kill_process(self.process)

    def stop(self) -> None:
        """Terminate gracefully (kill after 10 s)."""
        if self.process is not None:
            stop_process(self.process)


class Server(Started):
    """A ``tidings serve`` subprocess with its own directory, database and admin key."""

    def __init__(
        self,
        workdir: Path,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        role: str = "all",
        processes: int = 1,
    ) -> None:
        self.workdir = workdir
        self.processes = processes
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_key = "test-admin-key-" + os.urandom(6).hex()
        self.role = role
        self.env = {
            **os.environ,
            "TIDINGS_DATABASE_URL": f"sqlite:///{workdir / 'tidings.db'}",
            "TIDINGS_API_KEYS": f"{self.admin_key}:admin",
            "TIDINGS_INBOX_SECRET": "inbox-secret-for-tests-0123456789abcdef",
            "TIDINGS_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = workdir / "tidings.yaml"
            self.config_path.write_text(yaml.safe_dump(dict(config), allow_unicode=True))
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"server-{self.port}.log"

    def start(self, timeout: float = READY_WAIT) -> Server:
        """Start and wait for ``/readyz``; on any failure to get there the process is killed."""
        command = [
            sys.executable,
            "-m",
            "tidings.cli",
            "serve",
            "--port",
            str(self.port),
            "--role",
            self.role,
            "--processes",
            str(self.processes),
        ]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        with self.log.open("ab") as handle:
            self.process = track(
                subprocess.Popen(
                    command, cwd=self.workdir, env=self.env, stdout=handle, stderr=subprocess.STDOUT
                )
            )
        try:
            self._wait_ready(self.process, timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(
            f"server did not become ready within {timeout:g} s: {self.log.read_text()[-3000:]}"
        )

    def client(self, key: str | None = None) -> httpx.Client:
        """A client authenticated with the admin key (or ``key``)."""
        return httpx.Client(
            base_url=self.url,
            timeout=10,
            headers={"Authorization": f"Bearer {key or self.admin_key}"},
        )

    def token(self, subscriber_id: str, ttl: float = 3600) -> str:
        """An inbox token signed with the configured inbox secret."""
        from tidings.api.inbox import mint_token

        return mint_token(self.env["TIDINGS_INBOX_SECRET"], subscriber_id, ttl, time.time())

    def cli_token(self, subscriber_id: str, ttl: str = "1h") -> str:
        """An inbox token minted by ``tidings token`` (the CLI)."""
        output = subprocess.run(
            [sys.executable, "-m", "tidings.cli", "token", subscriber_id, "--ttl", ttl],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = re.search(r"[\w-]+\.[\w-]+\.[\w-]+", output)
        assert found, output
        return found.group(0)


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(interval)


def cloudevent(event_type: str, event_id: str, **data: Any) -> dict[str, Any]:
    """A structured CloudEvent from ``/shop``."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/shop",
        "type": event_type,
        "data": data,
    }
