"""Ceiling of the HTTP front door: a bare FastAPI endpoint that parses JSON and answers 202.

uvicorn (httptools + uvloop, one worker) serves it in a child process; the load comes from this
process over keep-alive connections, either with httpx (what a Python user would reach for) or
with a hand-written asyncio HTTP/1.1 client on uvloop (about the fastest load Python can make).
Both processes share the machine's 2 cores, so the figure is a ceiling for "server + client on one
box", as in `tidings bench`, not for the server alone.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
from fastapi import FastAPI, Response

from bench.baselines import (
    ROOT,
    SAMPLE_EVENT,
    BaselineResult,
    arguments,
    free_port,
    on_uvloop,
    report,
    subprocess_env,
    summarize,
    wait_port,
)

app = FastAPI()


@app.post("/v1/events", status_code=202)
async def accept(event: dict[str, Any]) -> Response:
    """Parse the JSON body (FastAPI validates it is an object) and accept it."""
    return Response(status_code=202)


BODY = json.dumps(SAMPLE_EVENT).encode()
WARMUP_SECONDS = 0.5

Shot = Callable[[], Awaitable[None]]


async def _load(shots: Sequence[Shot], seconds: float, latencies: list[float]) -> tuple[int, float]:
    """Fire each connection's `shot` in a loop for `seconds`; return (requests, wall seconds)."""
    deadline = time.perf_counter() + seconds

    async def loop(shot: Shot) -> int:
        done = 0
        while (start := time.perf_counter()) < deadline:
            await shot()
            latencies.append(time.perf_counter() - start)
            done += 1
        return done

    started = time.perf_counter()
    counts = await asyncio.gather(*(loop(shot) for shot in shots))
    return sum(counts), time.perf_counter() - started


async def _httpx_load(port: int, concurrency: int, seconds: float) -> BaselineResult:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    url = f"http://127.0.0.1:{port}/v1/events"
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits) as client:

        async def shot() -> None:
            response = await client.post(url, content=BODY, headers=headers)
            if response.status_code != 202:
                raise RuntimeError(f"unexpected status {response.status_code}")

        await _load([shot] * concurrency, WARMUP_SECONDS, [])
        latencies: list[float] = []
        count, wall = await _load([shot] * concurrency, seconds, latencies)
    return summarize(
        f"bare uvicorn (httpx client, {concurrency} conns)",
        count,
        wall,
        latencies,
        "requests/s; client and server share the 2 cores",
    )


class _RawConnection:
    """One keep-alive HTTP/1.1 connection that sends a fixed POST and reads the reply."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.request = (
            f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def shot(self) -> None:
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 202"):
            raise RuntimeError(f"unexpected reply {head[:40]!r}")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def _raw_load(port: int, concurrency: int, seconds: float) -> BaselineResult:
    connections = [_RawConnection(port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    try:
        shots = [c.shot for c in connections]
        await _load(shots, WARMUP_SECONDS, [])
        latencies: list[float] = []
        count, wall = await _load(shots, seconds, latencies)
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    return summarize(
        f"bare uvicorn (raw asyncio client, {concurrency} conns)",
        count,
        wall,
        latencies,
        "requests/s; hand-written HTTP/1.1 client on uvloop; client and server share the 2 cores",
    )


class UvicornProcess:
    """The bare endpoint served by uvicorn in a child process."""

    def __init__(self) -> None:
        self.port = free_port()
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.baselines.bare_uvicorn:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=subprocess_env(),
        )
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


def run(seconds: float = 5.0, concurrency: int = 32, client: str = "httpx") -> BaselineResult:
    """Load the bare endpoint for `seconds` with `client` ("httpx" or "raw")."""
    server = UvicornProcess()
    try:
        if client == "raw":
            return on_uvloop(_raw_load(server.port, concurrency, seconds))
        return asyncio.run(_httpx_load(server.port, concurrency, seconds))
    finally:
        server.stop()


def run_all(seconds: float = 5.0, concurrency: int = 32) -> list[BaselineResult]:
    """httpx at its sweet spot (4 connections) and at `concurrency`, then the raw client."""
    # httpx's pool loses throughput as concurrency grows (lock contention in the pool), so the
    # low-concurrency figure is its best case, the other the one a busy worker would see.
    return [
        run(seconds, 4, "httpx"),
        run(seconds, concurrency, "httpx"),
        run(seconds, concurrency, "raw"),
    ]


def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--client", choices=["httpx", "raw", "both"], default="both")
    args = parser.parse_args()
    if args.client == "both":
        results = run_all(args.seconds, args.concurrency)
    else:
        results = [run(args.seconds, args.concurrency, args.client)]
    report(results, args.json)


if __name__ == "__main__":
    main()
