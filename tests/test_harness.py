"""The harness itself: patient start-up waits, and no process left behind on any path."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cluster import Cluster, Worker
from testbed.harness import READY_WAIT, REPO, Server


def test_every_start_waits_at_least_a_minute_by_default() -> None:
    for start in (Server.start, Cluster.start, Worker.start, Worker.wait):
        assert inspect.signature(start).parameters["timeout"].default >= 60
    assert READY_WAIT >= 60


def test_a_server_that_never_becomes_ready_is_killed(tmp_path: Path) -> None:
    # a worker serves no HTTP: /readyz never answers, the process lives on
    server = Server(tmp_path, role="worker")
    with pytest.raises(RuntimeError, match="did not become ready"):
        server.start(timeout=1.0)
    assert server.process is not None
    assert server.process.poll() is not None


def test_a_server_left_running_by_a_test_is_killed_when_the_suite_exits(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from testbed.harness import Server\n"
        "leaked = Server(Path(sys.argv[1]))  # a test that forgets to stop what it started\n"
        "leaked.start()\n"
        "print(leaked.process.pid, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    pid = int(done.stdout.split()[-1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
