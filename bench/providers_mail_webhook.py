"""Deliveries/s from one process: the smtp and webhook providers against local sinks.

Each sink runs in its own process (so its CPU is not the client's GIL). For each channel the
table puts side by side:

- the provider (pooled connections, ``--concurrency`` sends in flight);
- the raw ceiling: a bare aiosmtplib / httpx keep-alive loop with the same pool and
  concurrency and no provider work (no MIME building, no signing);
- the seed's pattern: one blocking call per message on a fresh connection (smtplib
  connect-send-quit, ``urllib.request`` POST).

Webhooks are measured twice: against a bare receiver (no checks) and against one that
verifies every signature with ``standardwebhooks``. Usage::

    .venv/bin/python bench/providers_mail_webhook.py [--seconds 4] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import smtplib
import socket
import statistics
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.policy import compat32
from typing import Any

import aiosmtplib
import httpx

from tidings.channels.base import Destination, Message, ProviderContext
from tidings.channels.smtp import SmtpProvider
from tidings.channels.webhook import WebhookProvider
from tidings.config import ProviderSettings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


# --- sinks (child processes) -------------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve_smtp(port: int) -> None:
    from aiosmtpd.smtp import SMTP, Envelope, Session

    class Handler:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            return "250 2.0.0 Ok: queued"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Handler(), hostname="sink"), "127.0.0.1", port, backlog=1024
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _serve_http(port: int, verify: bool) -> None:
    import uvicorn
    from standardwebhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError

    webhook = Webhook(SECRET)
    stats = {"ok": 0, "bad": 0}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            event = await receive()
            body += event.get("body", b"")
            more = event.get("more_body", False)
        status, answer = 204, b""
        if scope["method"] == "GET":
            status, answer = 200, json.dumps(stats).encode()
        elif verify:
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            try:
                webhook.verify(body, headers)
                stats["ok"] += 1
            except WebhookVerificationError:
                stats["bad"] += 1
                status = 401
        else:
            stats["ok"] += 1
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": answer})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="error",
        access_log=False,
        lifespan="off",
        http="httptools",
        loop="uvloop",
        backlog=2048,
        timeout_keep_alive=60,
    )


def start_sink(target: Callable[..., None], *args: Any) -> tuple[Any, int]:
    """Run ``target(port, *args)`` in a child process; return it once the port listens."""
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=target, args=(port, *args), daemon=True
    )
    process.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("sink did not start")


# --- measurement ---------------------------------------------------------------------------


@dataclass
class Result:
    """One row of the table."""

    scenario: str
    messages: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def row(self) -> str:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        return f"| {self.scenario} | {self.messages} | {self.rate:,.0f} | {p50:.2f} | {p99:.2f} |"


async def run_async(
    name: str, send: Callable[[int], Awaitable[None]], seconds: float, concurrency: int
) -> Result:
    """``concurrency`` workers call ``send(i)`` until ``seconds`` have passed."""
    latencies: list[float] = []
    counter = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal counter
        while time.perf_counter() < deadline:
            counter += 1
            started = time.perf_counter()
            await send(counter)
            latencies.append(time.perf_counter() - started)

    await send(0)  # warm-up: connect once
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, len(latencies), time.perf_counter() - started, latencies)


def run_blocking(name: str, send: Callable[[int], None], seconds: float) -> Result:
    """The seed's pattern: one blocking call per message, one after the other."""
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    index = 0
    while time.perf_counter() < deadline:
        index += 1
        begin = time.perf_counter()
        send(index)
        latencies.append(time.perf_counter() - begin)
    return Result(name, len(latencies), time.perf_counter() - started, latencies)


def email_message(index: int) -> Message:
    """A typical order mail (the provider renders MIME from it)."""
    return Message(
        delivery_id=f"bench-{index}",
        notification_id=f"n-{index}",
        channel="email",
        destination=Destination(kind="email", address=f"buyer{index}@example.test"),
        subscriber_id=f"buyer-{index}",
        title="支付成功",
        body=f"订单 o-{index} 已支付 ¥88.00。",
        event_type="order.paid",
        category="marketing",
        locale="zh-CN",
    )


def webhook_message(url: str, index: int) -> Message:
    """A typical seller webhook."""
    return Message(
        delivery_id=f"bench-{index}",
        notification_id=f"n-{index}",
        channel="webhook",
        destination=Destination(kind="webhook", address=url, secret=SECRET),
        subscriber_id="seller-1",
        title="New paid order",
        body=f"Order o-{index} was paid.",
        event_id=f"evt-{index}",
        event_type="order.paid",
        subject=f"o-{index}",
        data={"order_id": f"o-{index}", "amount": "88.00", "currency": "CNY"},
    )


async def stream_sender(
    port: int, body: bytes, connections: int
) -> Callable[[int], Awaitable[None]]:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: the machine's ceiling."""
    request = (
        b"POST /hooks/erp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))

    async def send(index: int) -> None:
        reader, writer = await idle.get()
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")  # the bare receiver answers 204, no body
        if not head.startswith(b"HTTP/1.1 2"):
            raise RuntimeError(head[:40].decode())
        idle.put_nowait((reader, writer))

    return send


# --- scenarios -----------------------------------------------------------------------------


async def smtp_scenarios(port: int, seconds: float, concurrency: int, pool: int) -> list[Result]:
    """Provider, raw aiosmtplib pool, and smtplib one-connection-per-mail."""
    results = []
    settings = ProviderSettings.model_validate(
        {
            "kind": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "from": "Shop <noreply@shop.test>",
            "pool_size": pool,
        }  # fmt: skip
    )
    provider = SmtpProvider(settings, ProviderContext(timeout=30))

    async def via_provider(index: int) -> None:
        await provider.send(email_message(index))

    results.append(
        await run_async(f"smtp provider (pool {pool})", via_provider, seconds, concurrency)
    )
    await provider.aclose()

    raw = provider.build(email_message(0)).as_bytes(policy=compat32.clone(linesep="\r\n"))
    clients: list[aiosmtplib.SMTP] = []
    for _ in range(pool):
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=False, timeout=30, local_hostname="bench"
        )
        await client.connect()
        clients.append(client)
    gate = asyncio.Semaphore(pool)  # fair (FIFO) in 3.11+, like the provider's pool

    async def via_raw(index: int) -> None:
        async with gate:
            client = clients.pop()
            try:
                await client.sendmail("noreply@shop.test", [f"b{index}@example.test"], raw)
            finally:
                clients.append(client)

    results.append(
        await run_async(f"raw aiosmtplib ceiling (pool {pool})", via_raw, seconds, concurrency)
    )
    for client in clients:
        await client.quit()

    policy = compat32.clone(linesep="\r\n")

    def seed(index: int) -> None:
        data = provider.build(email_message(index)).as_bytes(policy=policy)  # same MIME work
        with smtplib.SMTP("127.0.0.1", port, timeout=30, local_hostname="bench") as client:
            client.sendmail("noreply@shop.test", [f"b{index}@example.test"], data)

    results.append(
        await asyncio.to_thread(run_blocking, "seed: smtplib connection per mail", seed, seconds)
    )
    return results


async def webhook_scenarios(
    plain: int, verifying: int, seconds: float, concurrency: int
) -> list[Result]:
    """Provider against both receivers, raw httpx keep-alive, and urllib per message."""
    results = []
    runs = (
        ("bare receiver", plain, 4),
        ("verifying receiver", verifying, 4),
        ("bare receiver", plain, concurrency),
    )
    for label, port, per_endpoint in runs:
        settings = ProviderSettings.model_validate(
            {
                "kind": "webhook",
                "allow_private_networks": True,
                "per_endpoint_concurrency": per_endpoint,
            }  # fmt: skip
        )
        provider = WebhookProvider(settings, ProviderContext(timeout=30))
        url = f"http://127.0.0.1:{port}/hooks/erp"
        label = f"{label}, {per_endpoint} per endpoint"

        async def via_provider(index: int, url: str = url, p: WebhookProvider = provider) -> None:
            await p.send(webhook_message(url, index))

        results.append(await run_async(f"webhook provider → {label}", via_provider, seconds,
                                       concurrency))  # fmt: skip
        await provider.aclose()
        async with httpx.AsyncClient() as probe:
            stats = (await probe.get(f"http://127.0.0.1:{port}/stats")).json()
        if stats["bad"]:
            raise SystemExit(f"{stats['bad']} webhooks failed verification")

    body = json.dumps({"type": "order.paid", "data": {"order_id": "o-1"}}).encode()
    plain_url = f"http://127.0.0.1:{plain}/hooks/erp"
    for connections in (concurrency, 4):
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        gate = asyncio.Semaphore(connections)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def via_raw(
                index: int, client: httpx.AsyncClient = client, gate: asyncio.Semaphore = gate
            ) -> None:
                async with gate:
                    response = await client.post(plain_url, content=body)
                response.raise_for_status()

            results.append(await run_async(
                f"raw httpx keep-alive, {connections} connections → bare receiver", via_raw,
                seconds, concurrency))  # fmt: skip
    results.append(await run_async(
        f"raw asyncio streams, {concurrency} keep-alive connections → bare receiver (no httpx)",
        await stream_sender(plain, body, concurrency), seconds, concurrency))  # fmt: skip

    def seed(index: int) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{plain}/hooks/erp",
            data=body,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            response.read()

    results.append(
        await asyncio.to_thread(run_blocking, "seed: urllib POST per message", seed, seconds)
    )
    return results


def main() -> None:
    """Start the sinks, run every scenario, print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pool", type=int, default=4, help="SMTP connections")
    args = parser.parse_args()

    sinks = [start_sink(_serve_smtp), start_sink(_serve_http, False), start_sink(_serve_http, True)]
    (_, smtp_port), (_, plain_port), (_, verify_port) = sinks
    try:
        results = asyncio.run(
            smtp_scenarios(smtp_port, args.seconds, args.concurrency, args.pool)
        ) + asyncio.run(webhook_scenarios(plain_port, verify_port, args.seconds, args.concurrency))
    finally:
        for process, _ in sinks:
            process.kill()
            process.join()
    print(
        f"\n{args.seconds:g}s per row, {args.concurrency} sends in flight (seed rows: 1), "
        f"{multiprocessing.cpu_count()} CPUs, sinks in their own processes\n"
    )
    print("| scenario | messages | deliveries/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for result in results:
        print(result.row())


if __name__ == "__main__":
    main()
