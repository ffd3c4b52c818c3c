"""Schemathesis over ``/openapi.json`` against a real ``tidings serve``: no answer is a 5xx.

On SQLite and on PostgreSQL. Bounded and deterministic, so ``make test`` runs the same cases
each time, in well under a minute per backend. ``TIDINGS_FUZZ_EXAMPLES`` raises the cases per
operation for a long run (300 gives some 14,700 cases a backend)::

    TIDINGS_FUZZ_EXAMPLES=300 .venv/bin/pytest -q -s tests/api/test_fuzz.py

Operations that register a URL the service would later call (webhook endpoints, status
callbacks) are left out — a fuzzed URL could point anywhere — as is the endless SSE stream.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.harness import Server
from tidings.crypto import generate_key

EXAMPLES = int(os.environ.get("TIDINGS_FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("TIDINGS_FUZZ_SEED", "1"))
LEFT_OUT = r"(/webhooks$|^/v1/callbacks$|/stream$)"
EVENT_MEDIA = {
    "application/cloudevents+json",
    "application/json",
    "application/cloudevents-batch+json",
}


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[Server]:
    """The service on SQLite and on PostgreSQL (which refuses more text than SQLite)."""
    env = {"TIDINGS_DATABASE_URL": database_url, "TIDINGS_ENCRYPTION_KEY": generate_key()}
    running = Server(tmp_path, env=env).start()
    try:
        yield running
    finally:
        running.stop()


def interactions(report: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(operation, interaction)`` for every request the run recorded."""
    for line in report.read_text().splitlines():
        scenario = json.loads(line).get("ScenarioFinished")
        if not scenario:
            continue
        recorder = scenario["recorder"]
        for interaction in (recorder.get("interactions") or {}).values():
            if interaction.get("response") is not None:
                yield recorder["label"], interaction


@pytest.mark.timeout(900)
def test_no_generated_request_gets_a_server_error(served: Server, tmp_path: Path) -> None:
    report = tmp_path / "fuzz.ndjson"
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{served.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {served.admin_key}",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        "--exclude-path-regex",
        LEFT_OUT,
        # One worker: Hypothesis describes filters with ``ast.parse``, and CPython 3.11.7's
        # parser is not thread-safe ("AST constructor recursion depth mismatch" in CI).
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
    ]
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=840, check=False
    )
    errors = [
        line for line in served.log.read_text(errors="replace").splitlines() if "Error" in line
    ]
    assert run.returncode == 0, "\n".join([run.stdout[-6000:], run.stderr[-2000:], *errors[-20:]])
    statuses: Counter[int] = Counter()
    event_media: Counter[str] = Counter()
    for label, interaction in interactions(report):
        statuses[interaction["response"]["status_code"]] += 1
        if label == "POST /v1/events":
            media = interaction["request"]["headers"].get("Content-Type", [""])[0]
            event_media[media.split(";")[0]] += 1
    assert sum(statuses.values()) > 1000, statuses  # every operation, not a token few
    assert not [status for status in statuses if status >= 500], statuses
    # the ingestion bodies are reached in every mode, and some are accepted
    assert set(event_media) >= EVENT_MEDIA, event_media
    assert statuses[202] > 0, statuses
    log = served.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    generated = re.search(r"(\d+) generated", run.stdout)
    print(
        f"{generated.group(1) if generated else '?'} cases, {sum(statuses.values())} requests,"
        f" by status: {dict(sorted(statuses.items()))}"
    )
