"""Metrics of several processes (``PROMETHEUS_MULTIPROC_DIR``) read as one service's.

Real processes, as ``tidings serve --processes N`` runs them: two write through their own
:class:`~tidings.metrics.Metrics`, a third reads the sum the way ``/metrics`` and the
dashboard's sampler do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tidings.metrics import process_died

# argv: directory, process number, whether to import prometheus_client before the env var
# is set (as a supervisor that forks its children may have), queue depth, provider up
WRITER = """
import os, sys
shared, early = sys.argv[1], sys.argv[3]
number, depth, up = int(sys.argv[2]), int(sys.argv[4]), int(sys.argv[5])
if early == "early":
    import prometheus_client  # picks its value class now, with no directory set yet
os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
from tidings.metrics import Metrics

metrics = Metrics()
metrics.child(metrics.events, "order.paid", "accepted").inc(10 * number)
metrics.child(metrics.deliveries, "webhook", "webhook", "sent").inc(number)
metrics.child(metrics.latency, "total", "webhook").observe(0.004 * number)
metrics.child(metrics.queue_depth, "normal").set(depth)
metrics.child(metrics.provider_up, "webhook").set(up)
metrics.backlog_events.set(100 + number)  # the one set last is the freshest count
metrics.dead_letters.set(number)
print(os.getpid())
"""

READER = """
import json
from tidings.metrics import Metrics
from tidings.web.sampler import read_totals

metrics = Metrics()
values = {}
for family in metrics.families().values():
    for sample in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
        values[f"{sample.name}{{{labels}}}"] = sample.value
totals = read_totals(metrics, 0.0)
print(json.dumps({
    "values": values,
    "render": metrics.render().decode(),
    "events": totals.events,
    "delivered": totals.delivered,
    "total_count": totals.stages["total"].count,
}))
"""


def run(script: str, *args: str, env: dict[str, str]) -> str:
    """Run ``script`` in a fresh interpreter; its standard output."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def read(shared: Path) -> dict[str, Any]:
    """The aggregate as a third process sees it."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    found: dict[str, Any] = json.loads(run(READER, env=env))
    return found


def test_every_process_counts_and_each_gauge_combines_as_it_should(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    first = int(run(WRITER, str(shared), "1", "early", "5", "1", env=env))
    second = int(run(WRITER, str(shared), "2", "late", "7", "0", env=env))
    assert first != second

    seen = read(shared)
    values = seen["values"]
    assert values["tidings_events_total{outcome=accepted,type=order.paid}"] == 30
    assert values["tidings_deliveries_total{channel=webhook,provider=webhook,status=sent}"] == 3
    assert values["tidings_latency_seconds_count{channel=webhook,stage=total}"] == 2
    assert values["tidings_queue_depth{lane=normal}"] == 12  # each process's lanes, summed
    assert values["tidings_provider_up{provider=webhook}"] == 0  # down in one process: down
    assert values["tidings_backlog_events{}"] == 102  # the freshest count
    assert values["tidings_dead_letters{}"] == 2
    # the dashboard's sampler reads the same sums
    assert seen["events"] == 30
    assert seen["delivered"] == 3
    assert seen["total_count"] == 2
    # one series per metric and label set, no per-process ``pid`` label
    assert 'tidings_queue_depth{lane="normal"} 12.0' in seen["render"]
    assert "pid=" not in seen["render"]

    # the supervisor (this process: no PROMETHEUS_MULTIPROC_DIR of its own) reports the
    # second one dead: its live gauges go, its counts stay
    process_died(second, shared)
    after = read(shared)["values"]
    assert after["tidings_queue_depth{lane=normal}"] == 5
    assert after["tidings_provider_up{provider=webhook}"] == 1
    assert after["tidings_backlog_events{}"] == 101
    assert after["tidings_events_total{outcome=accepted,type=order.paid}"] == 30
    assert after["tidings_latency_seconds_count{channel=webhook,stage=total}"] == 2


def test_one_process_keeps_its_metrics_to_itself() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    script = """
from tidings.metrics import Metrics, process_died
metrics = Metrics()
metrics.child(metrics.events, "order.paid", "accepted").inc(3)
metrics.backlog_events.set(4)
process_died(12345)  # nothing to forget
print(metrics.render().decode())
"""
    text = run(script, env=env)
    assert 'tidings_events_total{outcome="accepted",type="order.paid"} 3.0' in text
    assert "tidings_backlog_events 4.0" in text
