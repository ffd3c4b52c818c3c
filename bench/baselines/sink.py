"""A minimal HTTP/1.1 sink that times each delivery: the "provider" of the pipeline baselines.

Run as `python -m bench.baselines.sink --port P`. Every POST whose JSON body carries `sent_at`
(time.time() at enqueue) is answered 202 and its latency recorded; `GET /stats` returns
`{"count", "first_at", "last_at", "latencies"}`, `GET /count` just the count, and `POST /reset`
clears them. It is hand-written
on asyncio streams so that the sink itself costs as little CPU as possible.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import TracebackType

from bench.baselines import free_port, subprocess_env, wait_port

ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
ACCEPTED_CLOSE = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class Arrivals:
    """What the sink has seen since the last reset."""

    latencies: list[float] = field(default_factory=list)
    first_at: float = 0.0
    last_at: float = 0.0

    def record(self, sent_at: float) -> None:
        now = time.time()
        if not self.latencies:
            self.first_at = now
        self.last_at = now
        self.latencies.append(now - sent_at)


async def _serve_connection(
    arrivals: Arrivals, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            close = headers.get("connection", "").lower() == "close"
            if method == "POST" and path == "/reset":
                arrivals.latencies = []
                response = ACCEPTED
            elif method == "GET" and path in ("/stats", "/count"):
                stats: dict[str, object] = {"count": len(arrivals.latencies)}
                if path == "/stats":
                    stats.update(
                        first_at=arrivals.first_at,
                        last_at=arrivals.last_at,
                        latencies=arrivals.latencies,
                    )
                payload = json.dumps(stats).encode()
                response = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
            else:
                sent_at = json.loads(body).get("sent_at") if body else None
                if isinstance(sent_at, int | float):
                    arrivals.record(float(sent_at))
                response = ACCEPTED_CLOSE if close else ACCEPTED
            writer.write(response)
            await writer.drain()
            if close:
                return
    finally:
        writer.close()


async def serve(port: int) -> None:
    """Serve the sink on 127.0.0.1:port until cancelled."""
    arrivals = Arrivals()
    server = await asyncio.start_server(
        lambda r, w: _serve_connection(arrivals, r, w), "127.0.0.1", port, backlog=1024
    )
    async with server:
        await server.serve_forever()


class SinkProcess:
    """The sink in a child process (its own core share, no GIL contention with the load)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/deliver"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SinkProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.baselines.sink", "--port", str(self.port)],
            env=subprocess_env(),
        )
        wait_port(self.port)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)

    def _request(self, method: str, path: str) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path)
            return conn.getresponse().read()
        finally:
            conn.close()

    def reset(self) -> None:
        """Forget every arrival so far (after a warm-up)."""
        self._request("POST", "/reset")

    def stats(self) -> dict[str, object]:
        """Arrivals since the last reset: count, first_at, last_at, latencies (seconds)."""
        result: dict[str, object] = json.loads(self._request("GET", "/stats"))
        return result

    def count(self) -> int:
        """How many deliveries arrived since the last reset."""
        value = json.loads(self._request("GET", "/count"))["count"]
        assert isinstance(value, int)
        return value

    def wait_for(self, count: int, timeout: float) -> bool:
        """Poll until `count` deliveries arrived; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.count() < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
