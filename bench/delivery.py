"""Delivery benchmark (issue 3): deliveries/s from one ``tidings serve`` process, end to end.

Events go in over HTTP (CloudEvents batches); a rule turns each ``order.paid`` into webhook
deliveries to the seller's endpoints (or one email to the buyer); the sinks count what
arrives. Measured in one run, next to each other:

- the sink's own ceiling: a bare keep-alive asyncio client (webhook) / aiosmtplib pool
  (SMTP) posting as fast as the sink takes it, from a separate process;
- tidings flat out: N events in, N×fanout deliveries out, rate over first → last arrival;
- tidings paced (not saturated, before the flat-out run): p50/p95/p99 of Tc (due →
  provider call), Td, Tp and total, read from the ``deliveries`` table after the run, with
  Tc split at the moment the dispatcher took the delivery's batch (see ``latencies``);
- the service's CPU time per delivery in the flat-out run (``/proc``), which says more than
  the rates when other work shares the machine's cores.

The webhook sink checks every ``webhook-id`` is new (a duplicate is counted and reported);
signatures are checked on a sample (every 50th request) with ``standardwebhooks`` so that the
sink's own CPU stays low. Usage::

    .venv/bin/python -m bench.delivery [--events 20000] [--fanout 1] [--channel webhook|email]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.baselines import free_port, percentile, wait_listeners, wait_port
from bench.webhook_sink import SECRET
from bench.webhook_sink import serve_webhooks as _webhook_sink

KEY = "bench-admin-key-0123456789abcdef"


# --- sinks (child processes) -------------------------------------------------------------


def _smtp_sink(port: int, count: Any, dups: Any, bad: Any) -> None:
    from aiosmtpd.smtp import SMTP, Envelope, Session

    seen: set[str] = set()

    class Handler:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            raw = envelope.original_content or b""
            head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            mid = next(
                (
                    ln.split(":", 1)[1].strip()
                    for ln in head.split("\r\n")
                    if ln.lower().startswith("message-id:")
                ),
                "",
            )
            if not mid:
                bad.value += 1
            elif mid in seen:
                dups.value += 1
            seen.add(mid)
            count.value += 1
            return "250 2.0.0 Ok: queued"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Handler(), hostname="sink"), "127.0.0.1", port, backlog=1024
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class Sink:
    """A sink in a child process with shared counters (arrivals, duplicates, bad)."""

    def __init__(self, kind: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.count, self.dups, self.bad = ctx.Value("l", 0), ctx.Value("l", 0), ctx.Value("l", 0)
        self.port = free_port()
        target = _webhook_sink if kind == "webhook" else _smtp_sink
        self.process = ctx.Process(
            target=target, args=(self.port, self.count, self.dups, self.bad), daemon=True
        )
        self.process.start()
        wait_port(self.port)

    def reset(self) -> None:
        self.count.value = self.dups.value = self.bad.value = 0

    def stop(self) -> None:
        self.process.kill()
        self.process.join(5)


# --- the sinks' ceilings (a bare client in its own process) --------------------------------


def _webhook_blast(port: int, seconds: float, connections: int, out: Any) -> None:
    body = json.dumps({"type": "order.paid", "data": {"order_id": "o-1"}}).encode()

    async def worker(stop: float, done: list[int], n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = 0
        while time.monotonic() < stop:
            i += 1
            writer.write(
                b"POST /hook HTTP/1.1\r\nHost: sink\r\nContent-Type: application/json\r\n"
                + f"webhook-id: blast-{n}-{i}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await reader.readuntil(b"\r\n\r\n")
            done[0] += 1
        writer.close()

    async def main() -> None:
        done = [0]
        start = time.monotonic()
        await asyncio.gather(*(worker(start + seconds, done, n) for n in range(connections)))
        out.value = done[0] / (time.monotonic() - start)

    asyncio.run(main())


def _smtp_blast(port: int, seconds: float, connections: int, out: Any) -> None:
    import aiosmtplib

    async def worker(stop: float, done: list[int], n: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        i = 0
        while time.monotonic() < stop:
            i += 1
            data = f"Message-ID: <blast-{n}-{i}@bench>\r\nSubject: x\r\n\r\nbody\r\n"
            await client.sendmail("a@shop.test", ["b@shop.test"], data)
            done[0] += 1
        await client.quit()

    async def main() -> None:
        done = [0]
        start = time.monotonic()
        await asyncio.gather(*(worker(start + seconds, done, n) for n in range(connections)))
        out.value = done[0] / (time.monotonic() - start)

    asyncio.run(main())


def ceiling(kind: str, port: int, seconds: float, connections: int) -> float:
    """Requests/s a bare client gets from the sink."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Value("d", 0.0)
    target = _webhook_blast if kind == "webhook" else _smtp_blast
    process = ctx.Process(target=target, args=(port, seconds, connections, out))
    process.start()
    process.join(seconds + 30)
    return float(out.value)


# --- tidings --------------------------------------------------------------------------------


def config(channel: str, sink_port: int) -> dict[str, Any]:
    if channel == "webhook":
        providers = {
            "webhook": [
                {
                    "kind": "webhook",
                    "allow_private_networks": True,
                    # one sink stands in for many ERPs: let it have many requests in flight
                    "per_endpoint_concurrency": 64,
                    "max_connections": 64,
                }
            ]
        }
        rule = {"to": "seller", "channels": ["webhook"]}
    else:
        providers = {
            "email": [
                {
                    "kind": "smtp",
                    "host": "127.0.0.1",
                    "port": sink_port,
                    "from": "Shop <noreply@shop.test>",
                    "pool_size": 16,
                }
            ]
        }
        rule = {"to": "buyer", "channels": ["email"]}
    return {
        "categories": {"order_updates": {"required": True}},
        "templates": {
            "paid": {"en-US": {"title": "Order {{ order_id }} paid", "body": "{{ amount }}"}}
        },
        "providers": providers,
        "rules": [
            {
                "id": "paid",
                "on": "order.paid",
                "category": "order_updates",
                "priority": "high",
                "template": "paid",
                **rule,
            }
        ],
    }


class Tidings:
    """``tidings serve`` on a fresh SQLite database."""

    def __init__(self, workdir: Path, cfg: dict[str, Any], processes: int | None = 1) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "tidings.yaml").write_text(yaml.safe_dump(cfg))
        env = {
            **os.environ,
            "TIDINGS_DATABASE_URL": f"sqlite:///{workdir / 'tidings.db'}",
            "TIDINGS_API_KEYS": f"{KEY}:admin",
            "TIDINGS_LOG_LEVEL": "WARNING",
            "TIDINGS_INBOX_SECRET": "bench-inbox-secret-0123456789",
        }
        # one process unless asked: the CPU per delivery is read off its /proc entry
        command = [sys.executable, "-m", "tidings.cli", "serve", "--port", str(self.port)]
        command += [] if processes is None else ["--processes", str(processes)]
        command += ["--config", str(workdir / "tidings.yaml")]
        self.log = (workdir / "serve.log").open("wb")
        self.proc = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=self.log, stderr=self.log
        )
        wait_port(self.port, 30)
        if processes != 1:  # every child up before the load (see wait_listeners)
            wait_listeners(self.port, 1 + (processes or os.cpu_count() or 1), 60)
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
        )

    def subscribers(self, channel: str, count: int, fanout: int, sink_port: int) -> None:
        for n in range(count):
            if channel == "webhook":
                self.client.put(f"/v1/subscribers/seller-{n}", json={"name": "Shop"})
                for _ in range(fanout):
                    url = f"http://127.0.0.1:{sink_port}/hooks/{n}"
                    got = self.client.post(
                        f"/v1/subscribers/seller-{n}/webhooks", json={"url": url, "secret": SECRET}
                    )
                    assert got.status_code == 201, got.text
            else:
                body = {"email": f"buyer-{n}@shop.test", "locale": "en-US"}
                self.client.put(f"/v1/subscribers/buyer-{n}", json=body)

    def post(self, events: list[dict[str, Any]]) -> None:
        body = json.dumps(events)
        for _ in range(600):
            got = self.client.post(
                "/v1/events",
                content=body,
                headers={"content-type": "application/cloudevents-batch+json"},
            )
            if got.status_code != 503:
                break
            # backpressure: the flat-out run outpaces the sink; come back when told
            time.sleep(min(5.0, float(got.headers.get("retry-after", "1"))))
        assert got.status_code in (202, 207), got.text

    def latencies(self, since: float) -> dict[str, list[float]]:
        """Tp, Tc, Td and total of deliveries accepted after ``since``, from the database.

        Tc is also split where the dispatcher took the delivery's batch (the claim's
        ``started_at``): ``tc_to_batch`` (decided → batch taken: the decision's transaction
        and commit, the hand-off, the lanes) and ``tc_claim`` (batch taken → provider call:
        the claim's transaction, the wait for a place at the provider).
        """
        db = sqlite3.connect(f"file:{self.workdir / 'tidings.db'}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT tp, tc, td, finished_at - accepted_at, started_at - due_at,"
                " due_at + tc - started_at FROM deliveries"
                " WHERE accepted_at >= ? AND status IN ('sent', 'delivered') AND attempts = 1",
                (since,),
            ).fetchall()
        finally:
            db.close()
        names = ("tp", "tc", "td", "total", "tc_to_batch", "tc_claim")
        return {name: [r[i] for r in rows if r[i] is not None] for i, name in enumerate(names)}

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the service process has used so far (Linux)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


def events(start: int, count: int, subscribers: int, run: str) -> list[dict[str, Any]]:
    return [
        {
            "specversion": "1.0",
            "id": f"{run}-{n}",
            "source": "/bench",
            "type": "order.paid",
            # an order per run and event: life-cycle rules notify once per order and step
            "subject": f"{run}-o-{n}",
            "data": {
                "order_id": f"{run}-o-{n}",
                "buyer_id": f"buyer-{n % subscribers}",
                "seller_id": f"seller-{n % subscribers}",
                "amount": "99.00",
                "currency": "CNY",
            },
        }
        for n in range(start, start + count)
    ]


def flat_out(
    tidings: Tidings, sink: Sink, total: int, subscribers: int, fanout: int, run: str
) -> dict[str, Any]:
    """Post ``total`` events in batches of 1000 as fast as accepted; time the arrivals."""
    sink.reset()
    expected = total * fanout
    cpu_before = tidings.cpu_seconds()
    started = time.monotonic()
    first: float | None = None
    for start in range(0, total, 1000):
        tidings.post(events(start, min(1000, total - start), subscribers, run))
        if first is None and sink.count.value:
            first = time.monotonic()
    posted = time.monotonic() - started
    deadline = time.monotonic() + 300
    while sink.count.value < expected and time.monotonic() < deadline:
        if first is None and sink.count.value:
            first = time.monotonic()
        time.sleep(0.01)
    done = time.monotonic()
    arrived = int(sink.count.value)
    cpu_after = tidings.cpu_seconds()
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {
        "events": total,
        "deliveries": arrived,
        "expected": expected,
        "post_seconds": round(posted, 2),
        "seconds": round(done - started, 2),
        "per_second": round(arrived / (done - started), 1),
        "per_second_steady": round(arrived / max(1e-9, done - (first or started)), 1),
        "duplicates": int(sink.dups.value),
        "bad_signatures": int(sink.bad.value),
        # the service's CPU per delivery, intake and decisions included: less noisy than
        # the rates when other work shares the cores
        "service_cpu_us_per_delivery": None if cpu is None else round(1e6 * cpu / max(1, arrived)),
    }


def paced(
    tidings: Tidings, sink: Sink, rate: float, seconds: float, subscribers: int, run: str
) -> dict[str, Any]:
    """Events at ``rate``/s in batches of 10 (one every 10/rate s); latency split per stage."""
    since = time.time()
    batch = 10
    total = int(rate * seconds)
    start = time.monotonic()
    for i, first in enumerate(range(0, total, batch)):
        delay = start + i * batch / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        tidings.post(events(first, batch, subscribers, run))
    time.sleep(1.5)
    split = tidings.latencies(since)
    result: dict[str, Any] = {"rate": rate, "deliveries": len(split["tc"])}
    for stage, values in split.items():
        ms = [v * 1000 for v in values]
        result[stage] = {f"p{q}": round(percentile(ms, q), 2) if ms else None for q in (50, 95, 99)}
    return result


def run(
    channel: str, events_total: int, fanout: int, subscribers: int, rate: float
) -> dict[str, Any]:
    """One channel: sink ceiling, flat-out throughput, paced latency."""
    sink = Sink(channel)
    try:
        bare = ceiling(channel, sink.port, 4.0, 64 if channel == "webhook" else 16)
        with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
            tidings = Tidings(Path(tmp), config(channel, sink.port))
            try:
                tidings.subscribers(channel, subscribers, fanout, sink.port)
                warm = flat_out(tidings, sink, 2000, subscribers, fanout, "warm")
                # latency first, on a small database; then throughput flat out
                latency = paced(tidings, sink, rate, 6.0, subscribers, "paced")
                result = flat_out(tidings, sink, events_total, subscribers, fanout, "flat")
            finally:
                tidings.stop()
    finally:
        sink.stop()
    return {
        "channel": channel,
        "fanout": fanout,
        "sink_ceiling_per_second": round(bare, 1),
        "warmup": warm,
        "flat_out": result,
        "paced": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channel", choices=["webhook", "email", "both"], default="both")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--fanout", type=int, default=1, help="webhook endpoints per seller")
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0, help="events/s of the paced run")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    channels = ["webhook", "email"] if args.channel == "both" else [args.channel]
    results = []
    for channel in channels:
        fanout = args.fanout if channel == "webhook" else 1
        results.append(run(channel, args.events, fanout, args.subscribers, args.rate))
        print(json.dumps(results[-1], indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
