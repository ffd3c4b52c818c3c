"""The local webhook sink of the delivery benchmarks (``bench.delivery``, ``bench.e2e``).

A hand-written HTTP/1.1 server on asyncio streams (uvloop when installed), run in a child
process. Every request that carries a ``webhook-id`` counts as one delivery: the shared
counters hold arrivals, duplicate ``webhook-id``s and bad signatures (every 50th request is
checked with ``standardwebhooks``, so that the sink's own CPU stays low).

A body whose data carries ``sent_at`` (``time.time()`` when the event was sent) is also timed:
the sink keeps the arrival time, the latency (arrival − ``sent_at``) and the key
``path + " " + order_id`` of each such delivery, so that a benchmark can tell which event
reached which endpoint. Two control requests (without a ``webhook-id``) read and clear them:
``GET /_stats`` answers ``{"count", "first_at", "last_at", "latencies", "keys"}`` (arrivals
since the last reset; keys as a list) and ``POST /_reset`` clears them.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from typing import Any

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OK = b"HTTP/1.1 204 No Content\r\n\r\n"
_SENT_AT = b'"sent_at":'
_ORDER_ID = b'"order_id":"'


def serve_webhooks(port: int, count: Any, dups: Any, bad: Any) -> None:
    """Serve the sink on 127.0.0.1:``port`` until the process is killed."""
    from standardwebhooks import Webhook

    webhook = Webhook(SECRET)
    seen: set[bytes] = set()
    timed: dict[str, Any] = {"first_at": 0.0, "last_at": 0.0, "latencies": [], "keys": set()}

    def record(head: bytes, body: bytes) -> None:
        at = body.find(_SENT_AT)
        if at < 0:
            return
        now = time.time()
        start = at + len(_SENT_AT)
        end = start
        while end < len(body) and body[end] not in b",}":
            end += 1
        latencies: list[float] = timed["latencies"]
        if not latencies:
            timed["first_at"] = now
        timed["last_at"] = now
        latencies.append(now - float(body[start:end]))
        at = body.find(_ORDER_ID)
        if at >= 0:
            start = at + len(_ORDER_ID)
            path = head[head.find(b" ") + 1 : head.find(b" HTTP/")]
            timed["keys"].add((path + b" " + body[start : body.find(b'"', start)]).decode())

    def control(head: bytes) -> bytes:
        if head.startswith(b"GET /_stats "):
            payload = json.dumps(
                {
                    "count": len(timed["latencies"]),
                    "first_at": timed["first_at"],
                    "last_at": timed["last_at"],
                    "latencies": timed["latencies"],
                    "keys": sorted(timed["keys"]),
                }
            ).encode()
            return (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
        if head.startswith(b"POST /_reset "):
            timed.update(first_at=0.0, last_at=0.0, latencies=[], keys=set())
        return OK

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, webhook_id = 0, b""
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    name = name.lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        webhook_id = value.strip()
                body = await reader.readexactly(length) if length else b""
                if not webhook_id:
                    writer.write(control(head))
                    continue
                if webhook_id in seen:
                    dups.value += 1
                seen.add(webhook_id)
                count.value += 1
                record(head, body)
                if count.value % 50 == 0:
                    headers = {}
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        headers[name.decode().lower()] = value.decode().strip()
                    try:
                        webhook.verify(body, headers)
                    except Exception:  # noqa: BLE001 - counted, reported
                        bad.value += 1
                writer.write(OK)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=2048)
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def _control(port: int, method: str, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path)
        return conn.getresponse().read()
    finally:
        conn.close()


def timed_stats(port: int) -> dict[str, Any]:
    """The timed arrivals since the last :func:`timed_reset` (see the module's docstring)."""
    stats: dict[str, Any] = json.loads(_control(port, "GET", "/_stats"))
    return stats


def timed_reset(port: int) -> None:
    """Forget the timed arrivals (the shared counters are reset by their owner)."""
    _control(port, "POST", "/_reset")
