"""Ingest benchmark (issue 2): tidings' event intake next to a bare FastAPI endpoint.

Measures, in one run on this machine:
- accepted events/s for single-event POSTs (32 keep-alive connections, raw asyncio client) next
  to the bare uvicorn endpoint of ``bench.baselines.bare_uvicorn`` loaded the same way;
- accepted events/s for batch POSTs (1,000 events per request);
- p50/p95/p99 from POST to the inbox item committed, at a paced 500 events/s;
- the server's RSS (peak and at the end) under that load.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.baselines import (
    BaselineResult,
    free_port,
    on_uvloop,
    raw_sqlite,
    summarize,
    wait_listeners,
    wait_port,
)
from bench.baselines.bare_uvicorn import run as bare_run

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-admin-key-0123456789abcdef"


def _event(n: int, run: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{run}-{n}",
        "source": "/bench",
        "type": "order.paid",
        "data": {
            "order_id": f"o-{n}",
            "buyer_id": f"buyer-{n % 500}",
            "seller_id": "seller-1",
            "amount": "99.00",
            "currency": "CNY",
        },
    }


class TidingsProcess:
    """``tidings serve`` on a fresh SQLite database in a temp directory."""

    def __init__(self, workdir: Path, role: str = "all", processes: int | None = 1) -> None:
        self.workdir = workdir
        self.port = free_port()
        if role == "api":
            # nothing decides here: past the default backlog limit every POST would be a 503
            (workdir / "tidings.yaml").write_text("intake: {max_backlog: 1000000000}\n")
        env = {
            **os.environ,
            "TIDINGS_DATABASE_URL": f"sqlite:///{workdir / 'tidings.db'}",
            "TIDINGS_API_KEYS": f"{KEY}:admin",
            "TIDINGS_LOG_LEVEL": "WARNING",
            "TIDINGS_INBOX_SECRET": "bench-inbox-secret-0123456789",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidings.cli",
                "serve",
                "--port",
                str(self.port),
                "--role",
                role,
                # one process unless asked: its RSS is read off /proc; None = the default
                *([] if processes is None else ["--processes", str(processes)]),
            ],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, 30)
        if processes != 1:  # the shared socket and each child's own
            wait_listeners(self.port, 1 + (processes or os.cpu_count() or 1), 60)
        time.sleep(0.5)

    def rss_mb(self) -> tuple[float, float]:
        """(current, peak) resident set size in MiB."""
        fields = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
            if ":" in line
        )
        return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


class Connection:
    """A keep-alive HTTP/1.1 connection posting JSON with the bench key."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, body: bytes, content_type: str = "application/cloudevents+json") -> int:
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            (
                f"POST /v1/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {KEY}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _single(port: int, seconds: float, concurrency: int) -> BaselineResult:
    run = uuid.uuid4().hex[:8]
    connections = [Connection(port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    counter = iter(range(10**9))
    latencies: list[float] = []
    accepted = 0

    async def loop(connection: Connection, until: float, record: bool) -> None:
        nonlocal accepted
        while time.perf_counter() < until:
            body = json.dumps(_event(next(counter), run)).encode()
            start = time.perf_counter()
            status = await connection.post(body)
            if record:
                latencies.append(time.perf_counter() - start)
                accepted += status == 202

    await asyncio.gather(*(loop(c, time.perf_counter() + 0.5, False) for c in connections))
    started = time.perf_counter()
    await asyncio.gather(*(loop(c, started + seconds, True) for c in connections))
    wall = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in connections))
    return summarize(
        f"tidings single-event POST ({concurrency} conns)",
        accepted,
        wall,
        latencies,
        "accepted (202, committed) events/s",
    )


async def _batch(
    port: int, seconds: float, concurrency: int = 2, size: int = 1000
) -> BaselineResult:
    run = uuid.uuid4().hex[:8]
    connections = [Connection(port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    counter = iter(range(10**9))
    latencies: list[float] = []
    accepted = 0

    def body() -> bytes:
        return json.dumps([_event(next(counter), run) for _ in range(size)]).encode()

    # bodies made before the clock starts: encoding 1,000 events a request in this process
    # took a core's worth of the machine's two, and the service got what was left
    ready = [body() for _ in range(int(seconds * 80_000 / size))]
    body_now = body

    async def loop(connection: Connection, until: float) -> None:
        nonlocal accepted
        while time.perf_counter() < until:
            body = ready.pop() if ready else body_now()
            start = time.perf_counter()
            status = await connection.post(body, "application/cloudevents-batch+json")
            latencies.append(time.perf_counter() - start)
            if status == 202:
                accepted += size

    started = time.perf_counter()
    await asyncio.gather(*(loop(c, started + seconds) for c in connections))
    wall = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in connections))
    return summarize(
        f"tidings batch POST ({size}/request, {concurrency} conns)",
        accepted,
        wall,
        latencies,
        "accepted events/s; latency is per request",
    )


async def _paced(
    server: TidingsProcess, rate: float, seconds: float
) -> tuple[BaselineResult, float]:
    run = uuid.uuid4().hex[:8]
    connections = [Connection(server.port) for _ in range(16)]
    await asyncio.gather(*(c.open() for c in connections))
    idle = asyncio.Queue[Connection]()
    for connection in connections:
        idle.put_nowait(connection)
    sent_at: dict[str, float] = {}
    peak_rss = 0.0
    total = int(rate * seconds)
    started = time.perf_counter()
    tasks = []

    async def one(n: int) -> None:
        connection = await idle.get()
        event = _event(n, run)
        sent_at[event["id"]] = time.time()
        await connection.post(json.dumps(event).encode())
        idle.put_nowait(connection)

    for n in range(total):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
        if n % 500 == 0:
            peak_rss = max(peak_rss, server.rss_mb()[0])
    await asyncio.gather(*tasks)
    # the rate is the paced one, over the sending window: the 2 s grace below (for the last
    # decisions to land) is not part of it
    window = time.perf_counter() - started
    await asyncio.sleep(2)
    peak_rss = max(peak_rss, server.rss_mb()[1])
    await asyncio.gather(*(c.close() for c in connections))
    with sqlite3.connect(server.workdir / "tidings.db") as db:
        rows = db.execute(
            """select e.event_id, i.created_at from inbox_items i
               join notifications n on n.id = i.notification_id
               join events e on e.id = n.event_pk
               where n.rule_id = 'order-paid-buyer' and e.event_id like ?""",
            (f"{run}-%",),
        ).fetchall()
    latencies = [created - sent_at[event_id] for event_id, created in rows if event_id in sent_at]
    result = summarize(
        f"POST → inbox item committed at {rate:g} events/s",
        len(latencies),
        window,
        latencies,
        f"{len(latencies)}/{total} events reached the inbox",
    )
    return result, peak_rss


def run(seconds: float = 5.0) -> dict[str, Any]:
    """Every ingest figure, plus the bare endpoint measured in the same run."""
    results: list[BaselineResult] = [bare_run(seconds, 32, "raw")]
    with tempfile.TemporaryDirectory() as tmp:
        # intake alone: --role api commits events and answers; no decision work competes
        server = TidingsProcess(Path(tmp), role="api")
        try:
            intake = on_uvloop(_single(server.port, seconds, 32))
            intake["name"] = "tidings single-event POST, intake only (--role api)"
            results.append(intake)
            batch_intake = on_uvloop(_batch(server.port, seconds))
            batch_intake["name"] = "tidings batch POST, intake only (--role api)"
            results.append(batch_intake)
        finally:
            server.stop()
    with tempfile.TemporaryDirectory() as tmp:
        # every core (the default --processes): 4 connections, so each process gets some
        server = TidingsProcess(Path(tmp), role="api", processes=None)
        try:
            every_core = on_uvloop(_batch(server.port, seconds, concurrency=4))
            every_core["name"] = "tidings batch POST, intake only, every core (--role api)"
            results.append(every_core)
        finally:
            server.stop()
    ceiling = raw_sqlite.run(seconds, "NORMAL", 100)
    results.append(ceiling)
    with tempfile.TemporaryDirectory() as tmp:
        server = TidingsProcess(Path(tmp))
        try:
            results.append(on_uvloop(_single(server.port, seconds, 32)))
            results.append(on_uvloop(_batch(server.port, seconds)))
        finally:
            server.stop()
    with tempfile.TemporaryDirectory() as tmp:
        server = TidingsProcess(Path(tmp))
        try:
            paced, rss = on_uvloop(_paced(server, 500, 10))
            results.append(paced)
        finally:
            server.stop()
    bare, intake, single = (results[i]["per_second"] for i in (0, 1, 5))
    rows = ceiling["per_second"]
    return {
        "results": results,
        "intake_vs_bare": round(intake / bare, 3) if bare else None,
        "single_vs_bare": round(single / bare, 3) if bare else None,
        "batch_every_core_vs_raw_sqlite": round(every_core["per_second"] / rows, 3)
        if rows
        else None,
        "peak_rss_mb": round(rss, 1),
    }


def main() -> None:
    """Print the figures as a Markdown table and JSON."""
    from bench.baselines import markdown_table

    outcome = run(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
    print(markdown_table(outcome["results"]))
    print(
        f"\nsingle-event intake / bare endpoint: {outcome['intake_vs_bare']:.0%} "
        f"(deciding in the same process too: {outcome['single_vs_bare']:.0%}); "
        f"batch intake on every core / raw SQLite 100-row commits: "
        f"{outcome['batch_every_core_vs_raw_sqlite']:.0%}; "
        f"server peak RSS {outcome['peak_rss_mb']} MiB"
    )
    print(json.dumps({k: v for k, v in outcome.items() if k != "results"}))


if __name__ == "__main__":
    main()
