"""Baselines and raw ceilings of SPEC §9: what this machine does without tidings.

Every module here has a `run(...)` returning one `BaselineResult` (or `run_all()` returning a list
when it measures variants) and runs on its own as `python -m bench.baselines.NAME`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, NotRequired, TypedDict, TypeVar

T = TypeVar("T")

AMQP_ENV = "TIDINGS_TEST_AMQP_URL"
# The directory that holds the `bench` package: subprocesses (uvicorn, celery) import from it.
ROOT = Path(__file__).resolve().parent.parent.parent


class BaselineResult(TypedDict):
    """One measured figure: throughput and latency percentiles of one baseline."""

    name: str
    messages: int
    seconds: float
    per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    notes: NotRequired[str]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, linearly interpolated; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(
    name: str,
    messages: int,
    seconds: float,
    latencies_s: Sequence[float],
    notes: str | None = None,
) -> BaselineResult:
    """Build a BaselineResult from a count, a wall time and per-message latencies in seconds."""
    result = BaselineResult(
        name=name,
        messages=messages,
        seconds=round(seconds, 3),
        per_second=round(messages / seconds, 1) if seconds > 0 else math.nan,
        p50_ms=round(percentile(latencies_s, 50) * 1000, 3),
        p95_ms=round(percentile(latencies_s, 95) * 1000, 3),
        p99_ms=round(percentile(latencies_s, 99) * 1000, 3),
    )
    if notes:
        result["notes"] = notes
    return result


def on_uvloop(load: Coroutine[Any, Any, T]) -> T:
    """Run a load generator on uvloop (plain asyncio without it): tidings and the bare endpoint
    are loaded by the same client loop, so their ratio compares servers, not event loops."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(load)
    return uvloop.run(load)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listeners(port: int, count: int, timeout: float = 30.0) -> None:
    """Block until ``count`` sockets listen on ``port`` (``/proc/net/tcp``), or raise.

    ``tidings serve --processes N`` listens on a shared socket at once and each child on one of
    its own (``SO_REUSEPORT``) once it is up: connections opened before that all land on the
    shared socket and stay with whichever child accepted them, for their whole keep-alive
    life — a bench of a few connections then measured one child out of N.
    """
    deadline = time.monotonic() + timeout
    while True:
        rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        listening = sum(
            1 for row in rows if row[3] == "0A" and int(row[1].rsplit(":", 1)[1], 16) == port
        )
        if listening >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{listening} of {count} listeners on port {port}")
        time.sleep(0.05)


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def subprocess_env() -> dict[str, str]:
    """The environment for a child that must import `bench` (uvicorn app, celery worker)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def arguments(description: str, *, amqp: bool = False) -> argparse.ArgumentParser:
    """The options every baseline takes: --seconds, --json and, for the broker ones, --amqp-url."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to load (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    if amqp:
        parser.add_argument(
            "--amqp-url",
            default=os.environ.get(AMQP_ENV),
            help=f"RabbitMQ URL (default ${AMQP_ENV})",
        )
    return parser


def require_amqp_url(url: str | None) -> str:
    """The broker URL, or exit with a hint on how to get one."""
    if not url:
        sys.exit(
            f"no RabbitMQ: pass --amqp-url or set {AMQP_ENV} "
            "(scripts/services.sh start DIR writes it to DIR/env)"
        )
    return url


def markdown_table(results: Sequence[BaselineResult]) -> str:
    """Results as a Markdown table, one row per baseline."""
    lines = [
        "| baseline | messages | seconds | per second | p50 ms | p95 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['messages']} | {r['seconds']:.2f} | {r['per_second']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} |"
        )
    return "\n".join(lines)


def report(results: Sequence[BaselineResult], as_json: bool) -> None:
    """Print results as JSON or as a Markdown table followed by the notes."""
    if as_json:
        print(json.dumps(list(results), indent=2))
        return
    print(markdown_table(results))
    for r in results:
        if "notes" in r:
            print(f"- {r['name']}: {r['notes']}")


# A realistic trade event: the same ~450-byte CloudEvent every HTTP baseline sends.
SAMPLE_EVENT: dict[str, object] = {
    "specversion": "1.0",
    "id": "evt-000000000001",
    "source": "/shop/orders",
    "type": "order.paid",
    "subject": "ord-1000001",
    "time": "2026-11-01T12:00:00Z",
    "datacontenttype": "application/json",
    "data": {
        "order_id": "ord-1000001",
        "buyer_id": "buyer-42",
        "seller_id": "seller-7",
        "amount": "129.90",
        "currency": "EUR",
        "payment_method": "card",
        "items": [{"sku": "SKU-1", "name": "Tea kettle", "qty": 1, "price": "129.90"}],
    },
}
