"""Scale-out throughput and recovery: 1 api + 2 workers on PostgreSQL + RabbitMQ.

Measures, in one run on this machine:

- events/s accepted by the API (HTTP batches of 50, 202 = committed) and deliveries/s
  (order.paid → one Standard Webhooks call per event) at the lean sink of the other delivery
  benchmarks (``bench.webhook_sink``, a process of its own, every 50th signature checked):
  the Starlette receiver of the fault tests, verifying every call in this process, took a
  quarter of the machine's two cores at full rate, which the raw ceiling does not pay;
- the raw aio-pika publish/consume loop on the same broker (bench.baselines.raw_rabbitmq);
- MTTR: under a steady load, after ``kill -9`` of a worker and during a RabbitMQ restart,
  how far deliveries fell behind the pre-fault rate, in seconds (see :func:`mttr`).

Needs services started by ``scripts/services.sh start DIR``:
``python -m bench.scaleout --services DIR [--seconds 10] [--json out.json] [--no-faults]``.

Next to the rates it reports each tidings process's CPU time over the throughput run per
delivery (``cpu_us_per_delivery``): on a shared machine a steadier figure than the rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.baselines import raw_rabbitmq
from bench.delivery import Sink
from bench.webhook_sink import SECRET
from fakes.webhook_receiver import WebhookReceiver
from testbed.cluster import CONFIG, SELLERS, Cluster, fresh_database, fresh_vhost
from testbed.services import Services, arun_script, read_env_file


def _events(start: int, n: int, run: str, sellers: list[str] = SELLERS) -> list[dict[str, Any]]:
    return [
        {
            "specversion": "1.0",
            "id": f"{run}-{i}",
            "source": "/bench",
            "type": "order.paid",
            "data": {
                "order_id": f"{run}-o-{i}",
                "buyer_id": f"b-{i}",
                "seller_id": sellers[i % len(sellers)],
                "amount": "10.00",
                "currency": "CNY",
            },
        }
        for i in range(start, start + n)
    ]


async def _post(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> int:
    while True:
        try:
            response = await client.post(
                "/v1/events",
                content=json.dumps(events),
                headers={"content-type": "application/cloudevents-batch+json"},
            )
            if response.status_code in (202, 207):
                return len(events)
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes(cluster: Cluster) -> dict[str, int]:
    """The pids of the API process and the workers, by name."""
    named = {"api": cluster.process}
    named.update({f"worker{n}": w.process for n, w in enumerate(cluster.workers)})
    return {name: process.pid for name, process in named.items() if process is not None}


SINK_SELLERS = [f"sink-seller-{i}" for i in range(4)]
"""The sellers whose webhooks go to the lean sink (the throughput run's)."""


async def throughput(cluster: Cluster, sink: Sink, seconds: float) -> dict[str, Any]:
    """Flat out: 4 concurrent posters of 50-event batches for ``seconds``."""
    sink.reset()
    pids = processes(cluster)
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    sent = 0
    started = time.perf_counter()
    async with httpx.AsyncClient(
        base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.admin_key}"}, timeout=30
    ) as client:

        async def poster(k: int) -> None:
            nonlocal sent
            n = 0
            while time.perf_counter() - started < seconds:
                # not ``sent += await …``: that reads ``sent`` before the await, and the
                # posters' updates would overwrite each other
                posted = await _post(client, _events(n * 50, 50, f"tp{k}", SINK_SELLERS))
                sent += posted
                n += 1

        await asyncio.gather(*(poster(k) for k in range(4)))
    accepted_for = time.perf_counter() - started
    while time.perf_counter() - started < 300:
        if sink.count.value - sink.dups.value >= sent:
            break
        await asyncio.sleep(0.05)
    delivered_for = time.perf_counter() - started
    delivered = sink.count.value - sink.dups.value
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    return {
        "events": sent,
        "events_per_s": round(sent / accepted_for, 1),
        "deliveries": delivered,
        "deliveries_per_s": round(delivered / delivered_for, 1),
        "duplicates": sink.dups.value,
        "bad_signatures": sink.bad.value,
        "cpu_us_per_delivery": {
            name: round(used * 1e6 / max(1, delivered), 1) for name, used in cpu.items()
        },
        "cpu_us_per_delivery_total": round(sum(cpu.values()) * 1e6 / max(1, delivered), 1),
    }


async def mttr(
    cluster: Cluster, receiver: WebhookReceiver, fault: Any, label: str, rate: float
) -> dict[str, Any]:
    """Steady ``rate`` events/s; the fault at t=4 s; how far deliveries fell behind.

    The fault runs alongside the measurement (a broker restart takes its own seconds to stop
    and boot, and tidings may deliver all the while). The lag is the deliveries owed at the
    pre-fault rate since the fault minus those made, in seconds of that rate; its peak is
    the repair time (MTTR): a full stop of D seconds peaks at D, jitter that is caught up at
    once barely counts. The run ends once the fault is over and the lag is under 0.5 s for
    3 s (``mttr_s`` is ``None`` if that never happens within 120 s).
    """
    stamps: list[float] = []
    seen: set[str] = set()
    stop = False

    async def watch() -> None:
        while not stop:
            for webhook_id in receiver.ids[len(seen) :]:
                if webhook_id not in seen:
                    seen.add(webhook_id)
                    stamps.append(time.perf_counter())
            await asyncio.sleep(0.05)

    async def produce() -> None:
        async with httpx.AsyncClient(
            base_url=cluster.url,
            headers={"Authorization": f"Bearer {cluster.admin_key}"},
            timeout=30,
        ) as client:
            n = 0
            begin = time.perf_counter()
            while not stop:
                await _post(client, _events(n * 10, 10, f"{label}-{int(begin)}"))
                n += 1
                await asyncio.sleep(max(0.0, begin + n * 10 / rate - time.perf_counter()))

    watcher, producer = asyncio.create_task(watch()), asyncio.create_task(produce())
    await asyncio.sleep(4.0)
    faulted = time.perf_counter()
    # the offered rate, or less if the cluster did not keep up with it: a 2 s count above the
    # offered rate (jitter: 419 arrivals at 200/s) would owe deliveries nobody sent, and the
    # lag would grow without a fault until the run gave up (mttr_s None at 8.6 s of restart)
    baseline = min(rate, sum(1 for s in stamps if faulted - 2 <= s < faulted) / 2)
    faulting = asyncio.create_task(fault())
    fault_ended: float | None = None
    worst = 0.0
    caught_up_since: float | None = None
    recovered = False
    while time.perf_counter() - faulted < 120:
        await asyncio.sleep(0.1)
        now = time.perf_counter()
        made = sum(1 for s in stamps if s >= faulted)
        lag = (baseline * (now - faulted) - made) / baseline if baseline else 0.0
        worst = max(worst, lag)
        if lag > 0.5:
            caught_up_since = None
        elif caught_up_since is None:
            caught_up_since = now
        if fault_ended is None and faulting.done():
            fault_ended = now
        if fault_ended is not None and caught_up_since is not None:
            if now - max(caught_up_since, fault_ended) >= 3:
                recovered = True
                break
    stop = True
    await faulting
    await asyncio.gather(watcher, producer, return_exceptions=True)
    return {
        "fault": label,
        "rate": rate,
        "baseline_per_s": baseline,
        "fault_seconds": None if fault_ended is None else round(fault_ended - faulted, 2),
        "mttr_s": round(worst, 2) if recovered else None,
    }


async def main_async(services: Services, seconds: float, faults: bool = True) -> dict[str, Any]:
    raw = await asyncio.to_thread(raw_rabbitmq.run, fresh_vhost(services), seconds)
    receiver = WebhookReceiver().start()
    sink = Sink("webhook")
    database = await asyncio.to_thread(fresh_database, services)
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-"))
    cluster = Cluster(workdir, database.url, fresh_vhost(services), workers=2, config=CONFIG)
    cluster.env["TIDINGS_LOG_LEVEL"] = "ERROR"
    await asyncio.to_thread(cluster.start)
    try:
        with cluster.client() as client:
            for seller in SELLERS:
                client.post(
                    f"/v1/subscribers/{seller}/webhooks",
                    json={"url": receiver.url, "secret": receiver.secret},
                )
            for seller in SINK_SELLERS:
                client.post(
                    f"/v1/subscribers/{seller}/webhooks",
                    json={"url": f"http://127.0.0.1:{sink.port}/hooks", "secret": SECRET},
                ).raise_for_status()
        result = await throughput(cluster, sink, seconds)
        if not faults:
            return _summary(result, raw, [])
        rate = max(20.0, min(200.0, result["deliveries_per_s"] * 0.4))

        async def kill_worker() -> None:
            cluster.workers[0].kill()

        async def restart_broker() -> None:
            assert services.directory is not None
            await arun_script("restart-rabbit", str(services.directory))

        kill = await mttr(cluster, receiver, kill_worker, "worker kill -9", rate)
        await asyncio.to_thread(cluster.workers[0].start)  # two workers again for the next
        restart = await mttr(cluster, receiver, restart_broker, "RabbitMQ restart", rate)
    finally:
        cluster.stop()
        receiver.stop()
        sink.stop()
        await asyncio.to_thread(database.drop)
    return _summary(result, raw, [kill, restart])


def _summary(result: dict[str, Any], raw: dict[str, Any], faults: list[Any]) -> dict[str, Any]:
    return {
        "tidings_1api_2workers": result,
        "raw_rabbitmq": raw,
        "ratio_of_raw": round(result["deliveries_per_s"] / raw["per_second"], 3),
        "mttr": faults,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--services", required=True, help="DIR of scripts/services.sh start DIR")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-faults", action="store_true", help="throughput only (no MTTR)")
    args = parser.parse_args()
    env = read_env_file(Path(args.services) / "env")
    services = Services(
        env["TIDINGS_TEST_POSTGRES_URL"], env["TIDINGS_TEST_AMQP_URL"], Path(args.services)
    )
    result = asyncio.run(main_async(services, args.seconds, not args.no_faults))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
