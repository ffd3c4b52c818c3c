"""``tidings demo``: a simulated shop whose orders move through their whole life cycle."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

SOURCE = "/demo-shop"
_PRODUCTS = [
    ("SKU-TEA", "Tea set", "99.00"),
    ("SKU-MUG", "Mug", "25.50"),
    ("SKU-SILK", "Silk scarf", "268.00"),
    ("SKU-PEN", "Fountain pen", "120.00"),
]


@dataclass
class Order:
    """One order and where its life cycle stands."""

    order_id: str
    buyer: str
    seller: str
    amount: str
    currency: str
    steps: list[str] = field(default_factory=list)


def life_cycle(rng: random.Random) -> list[str]:
    """The events one order will emit, in order."""
    roll = rng.random()
    if roll < 0.1:
        return ["order.created", "order.cancelled"]
    steps = ["order.created"]
    if rng.random() < 0.1:
        steps.append("payment.failed")
    steps += ["order.paid", "order.shipped", "order.delivered"]
    if roll > 0.85:
        steps += ["refund.requested", rng.choice(["refund.approved", "refund.rejected"])]
        if steps[-1] == "refund.approved":
            steps.append("refund.completed")
    elif roll > 0.4:
        steps += ["review.created", "review.replied"]
    return steps


def event_for(order: Order, kind: str) -> dict[str, Any]:
    """A structured CloudEvent for one step of ``order``."""
    data: dict[str, Any] = {
        "order_id": order.order_id,
        "buyer_id": order.buyer,
        "seller_id": order.seller,
    }
    if kind in (
        "order.created",
        "order.paid",
        "refund.requested",
        "refund.approved",
        "refund.completed",
    ):
        data |= {"amount": order.amount, "currency": order.currency}
    if kind == "order.created":
        sku, name, price = random.choice(_PRODUCTS)
        data["items"] = [{"sku": sku, "name": name, "qty": 1, "price": price}]
    if kind == "order.paid":
        data["payment_method"] = random.choice(["card", "alipay", "wechat"])
    if kind == "payment.failed":
        data = {"order_id": order.order_id, "buyer_id": order.buyer, "reason": "card declined"}
    if kind == "order.shipped":
        data |= {"carrier": "SF Express", "tracking_no": f"SF{random.randint(10**9, 10**10)}"}
    if kind.startswith("refund."):
        data["refund_id"] = f"ref-{order.order_id}"
    if kind.startswith("review."):
        data |= {
            "review_id": f"rev-{order.order_id}",
            "rating": random.randint(3, 5),
            "text": random.choice(["Great!", "很好，推荐", "Fast delivery"]),
        }
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": SOURCE,
        "type": kind,
        "subject": order.order_id,
        "data": data,
    }


async def _register(client: httpx.AsyncClient, buyers: int, sellers: int) -> None:
    for index in range(buyers):
        chinese = index % 2 == 0
        await client.put(
            f"/v1/subscribers/buyer-{index}",
            json={
                "name": f"Buyer {index}",
                "email": f"buyer{index}@shop.test",
                "phone": f"+861380013{index:04d}",
                "locale": "zh-CN" if chinese else "en-US",
                "timezone": "Asia/Shanghai" if chinese else "America/New_York",
                "role": "buyer",
            },
        )
        if index % 3:
            await client.post(
                f"/v1/subscribers/buyer-{index}/devices",
                json={
                    "kind": "fcm" if index % 3 == 1 else "apns",
                    "token": f"demo-token-{index:06d}-{uuid.uuid4().hex}",
                },
            )
    for index in range(sellers):
        await client.put(
            f"/v1/subscribers/seller-{index}",
            json={
                "name": f"Seller {index}",
                "email": f"seller{index}@shop.test",
                "locale": "zh-CN",
                "timezone": "Asia/Shanghai",
                "role": "seller",
            },
        )


async def run_demo(url: str, api_key: str, rate: float, duration: float) -> None:
    """Emit events at ``rate``/s for ``duration`` seconds and print a summary."""
    out = Console()
    rng = random.Random()
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
        await _register(client, buyers=50, sellers=5)
        live: list[Order] = []
        statuses: Counter[int] = Counter()
        latencies: list[float] = []
        sent = 0
        total = max(1, int(rate * duration))
        start = time.perf_counter()
        with Progress(
            TextColumn("[bold]shop[/bold] {task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} events"),
            TimeRemainingColumn(),
            console=out,
        ) as progress:
            task = progress.add_task("emitting", total=total)
            while sent < total:
                if len(live) < 20 or rng.random() < 0.3:
                    number = rng.randint(10_000, 99_999)
                    sku = rng.choice(_PRODUCTS)
                    live.append(
                        Order(
                            f"ord-{number}-{sent}",
                            f"buyer-{rng.randrange(50)}",
                            f"seller-{rng.randrange(5)}",
                            sku[2],
                            rng.choice(["CNY", "CNY", "USD"]),
                            life_cycle(rng),
                        )
                    )
                order = rng.choice(live)
                kind = order.steps.pop(0)
                if not order.steps:
                    live.remove(order)
                began = time.perf_counter()
                response = await client.post(
                    "/v1/events",
                    json=event_for(order, kind),
                    headers={"content-type": "application/cloudevents+json"},
                )
                latencies.append(time.perf_counter() - began)
                statuses[response.status_code] += 1
                sent += 1
                progress.update(task, advance=1, description=f"{kind:<17} accepted {statuses[202]}")
                delay = start + sent / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
        await asyncio.sleep(1.0)
        metrics = (await client.get("/metrics")).text
    _summary(out, statuses, latencies, metrics, time.perf_counter() - start)


def _summary(
    out: Console, statuses: Counter[int], latencies: list[float], metrics: str, elapsed: float
) -> None:
    latencies.sort()

    def pct(p: float) -> str:
        return f"{latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000:.1f} ms"

    table = Table(title=f"demo summary ({elapsed:.1f}s)")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("events accepted (202)", str(statuses[202]))
    table.add_row(
        "other answers", ", ".join(f"{k}: {v}" for k, v in statuses.items() if k != 202) or "-"
    )
    if latencies:
        table.add_row("POST latency p50 / p95 / p99", f"{pct(0.5)} / {pct(0.95)} / {pct(0.99)}")
    by_channel: Counter[str] = Counter()
    for match in re.finditer(
        r'^tidings_deliveries_total\{channel="(\w+)",provider="[^"]*",status="(\w+)"\} ([\d.e+]+)',
        metrics,
        re.M,
    ):
        by_channel[f"{match.group(1)} {match.group(2)}"] += int(float(match.group(3)))
    for key, value in sorted(by_channel.items()):
        table.add_row(f"deliveries: {key}", str(value))
    out.print(table)
