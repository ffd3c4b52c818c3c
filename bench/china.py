"""Throughput of China's providers (SPEC §12) against their local fakes, beside each fake's ceiling.

Each fake (Huawei Push Kit, Xiaomi, OPPO, vivo, Aliyun SMS, Tencent SMS, WeChat) runs in its own
process. For each one, from this one process at the same concurrency:

- the ceiling: a raw loop posting pre-built, valid requests straight at the fake over the
  same lean HTTP/1.1 pool the providers use (no provider logic: no payload building, no
  signing per message; Aliyun's requests, each with its own nonce, are all signed before the
  clock starts);
- the provider: ``provider.send(message)`` for distinct messages (new ids, new orders), built
  before the clock as the raw requests are.

It prints a Markdown table with the provider's share of the ceiling, the client's CPU per raw
request and per send (what the provider itself adds, whatever the machine's load), and the
access tokens it fetched per 10,000 sends (the cache should make that 1; Xiaomi, Aliyun and
Tencent sign or authenticate each request instead and fetch none).

    .venv/bin/python -m bench.china [kinds …] [--sends 10000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.providers_push import drive, start_fake  # noqa: E402
from fakes.china import (  # noqa: E402
    MAKERS,
    OPENID,
    TOKEN,
    aliyun_settings,
    message,
    tencent_settings,
    wechat_settings,
)
from fakes.china_sms import AliyunSmsServer, TencentSmsServer  # noqa: E402
from fakes.maker_push import HmsServer, OppoServer, VivoServer, XiaomiServer  # noqa: E402
from fakes.tls import BackgroundServer, free_port  # noqa: E402
from fakes.wechat_server import WeChatServer  # noqa: E402
from tidings.channels.base import Message, ProviderContext  # noqa: E402
from tidings.channels.http1 import Http1Pool, Reply  # noqa: E402
from tidings.channels.makers import compact  # noqa: E402
from tidings.channels.registry import build_provider  # noqa: E402
from tidings.config import ProviderSettings  # noqa: E402

PHONE = "+8613800138000"
KINDS = ("hms", "xiaomi", "oppo", "vivo", "aliyun_sms", "tencent_sms", "wechat")
AUTH = {
    "hms": "OAuth 2.0 client credentials",
    "xiaomi": "Authorization: key=",
    "oppo": "sha256-signed auth_token",
    "vivo": "md5-signed authToken",
    "aliyun_sms": "RPC HMAC-SHA1 per request",
    "tencent_sms": "TC3-HMAC-SHA256 per request",
    "wechat": "stable access_token",
}
WARMUP = 300
ROUNDS = 3


def fake(kind: str) -> Any:
    """The fake for ``kind`` (every template the bench sends approved, subscriptions unlimited)."""
    if kind == "aliyun_sms":
        return AliyunSmsServer()
    if kind == "tencent_sms":
        return TencentSmsServer(templates={"SMS_100001": ["order", "amount"]})
    if kind == "wechat":
        return WeChatServer(unlimited=True)
    return {"hms": HmsServer, "xiaomi": XiaomiServer, "oppo": OppoServer, "vivo": VivoServer}[
        kind
    ]()


def _serve(kind: str, port: int, _: Any = None) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    BackgroundServer(fake(kind).app(), port=port, http="httptools").run_forever()


def settings(kind: str, url: str) -> dict[str, Any]:
    """The provider options pointing at the fake for ``kind`` at ``url``."""
    local = fake(kind)  # the same default credentials as the fake in the child
    if kind == "aliyun_sms":
        return aliyun_settings(local, url)
    if kind == "tencent_sms":
        return tencent_settings(local, url)
    if kind == "wechat":
        return wechat_settings(local, url)
    (spec,) = [m for m in MAKERS if m.kind == kind]
    return spec.settings(local, url)


def one_message(kind: str, i: int) -> Message:
    """A distinct order-paid message for ``kind``'s destination."""
    destination = {"aliyun_sms": ("phone", PHONE), "tencent_sms": ("phone", PHONE)}.get(
        kind, ("wechat", OPENID) if kind == "wechat" else (kind, TOKEN)
    )
    return message(*destination, delivery_id=f"d-{i}", subject=f"ord-{i}")


Request = Callable[[int], tuple[str, bytes, dict[str, str]]]
"""i → (url, body, headers) of a valid raw request."""


async def raw_requests(kind: str, provider: Any, n: int) -> Request:
    """Pre-built valid requests for the ceiling (the token fetched once, as a provider would)."""
    sample = one_message(kind, 0)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    as_json = {"Content-Type": "application/json"}
    if kind == "hms":
        token = await provider.tokens.get()
        body = json.dumps(provider.payload(sample)).encode()
        headers = {**as_json, "Authorization": f"Bearer {token}"}
        return lambda i: (provider.send_url, body, headers)
    if kind == "xiaomi":
        body = urlencode(provider.form(sample)).encode()
        return lambda i: (provider.url, body, {**form, **provider.headers})
    if kind == "oppo":
        token = await provider.tokens.get()
        body = urlencode({"message": compact(provider.message_json(sample))}).encode()
        return lambda i: (provider.send_url, body, {**form, "auth_token": token})
    if kind == "vivo":
        token = await provider.tokens.get()
        body = json.dumps(provider.payload(sample)).encode()
        return lambda i: (provider.send_url, body, {**as_json, "authToken": token})
    if kind == "aliyun_sms":  # a nonce is good once: every request signed ahead
        bodies = [provider.body(sample) for _ in range(n)]
        return lambda i: (provider.url, bodies[i], form)
    if kind == "tencent_sms":
        body, headers = provider.request(sample)
        return lambda i: (provider.url, body, headers)
    token = await provider.tokens.get()
    body = json.dumps(provider.payload(sample)).encode()
    url = f"{provider.send_url}?access_token={token}"
    return lambda i: (url, body, as_json)


@dataclass
class Row:
    """One line of the results table."""

    kind: str
    ceiling: float
    rate: float
    fetched: tuple[int, int] | None
    """Access tokens fetched, and in how many sends (warm-up and ceiling included)."""
    raw_cpu_us: float
    """Client CPU per raw request (µs): the HTTP client's own cost."""
    send_cpu_us: float
    """Client CPU per ``provider.send`` (µs): the same plus building and signing."""


def accepted(kind: str, response: Reply) -> None:
    """Raise unless the fake accepted the request (each service's own success body)."""
    body = json.loads(response.body)
    ok = {
        "hms": lambda b: b.get("code") == "80000000",
        "xiaomi": lambda b: b.get("code") == 0,
        "oppo": lambda b: b.get("code") == 0,
        "vivo": lambda b: b.get("result") == 0,
        "aliyun_sms": lambda b: b.get("Code") == "OK",
        "tencent_sms": lambda b: b["Response"].get("SendStatusSet", [{}])[0].get("Code") == "Ok",
        "wechat": lambda b: b.get("errcode") == 0,
    }[kind]
    if response.status != 200 or not ok(body):
        raise RuntimeError(f"{kind} fake refused the raw request: {response.body[:200]!r}")


async def bench(kind: str, n: int, concurrency: int) -> Row:
    """Ceiling and provider rate for ``kind``, each after a warm-up."""
    port = free_port()
    process = start_fake(kind, port, serve=_serve)
    url = f"http://127.0.0.1:{port}"
    try:
        entry = ProviderSettings(kind=kind, **settings(kind, url))
        provider = build_provider(entry, ProviderContext(timeout=30))
        raw = Http1Pool(timeout=30, max_idle_per_origin=concurrency)
        request = await raw_requests(kind, provider, n + WARMUP)

        async def raw_one(i: int) -> None:
            target, body, headers = request(i)
            accepted(kind, await raw.post(target, body, headers))

        # distinct messages, built before the clock as the raw requests are
        messages = [one_message(kind, i) for i in range(n + WARMUP)]
        await drive(WARMUP, concurrency, lambda i: raw_one(n + i))
        await drive(WARMUP, concurrency, lambda i: provider.send(messages[n + i]))
        # alternate the two in rounds and keep each one's best: on a shared machine both then
        # meet the same neighbours, and a burst of someone else's work costs neither alone
        ceiling = rate = 0.0
        raw_cpu = send_cpu = float("inf")
        size = n // ROUNDS
        for start in range(0, size * ROUNDS, size):
            cpu = time.process_time()
            raw_run = await drive(size, concurrency, lambda i, at=start: raw_one(at + i))
            raw_cpu = min(raw_cpu, (time.process_time() - cpu) / size)
            ceiling = max(ceiling, raw_run)
            cpu = time.process_time()
            run = await drive(
                size, concurrency, lambda i, at=start: provider.send(messages[at + i])
            )
            send_cpu = min(send_cpu, (time.process_time() - cpu) / size)
            rate = max(rate, run)
        tokens = getattr(provider, "tokens", None)
        total = size * ROUNDS + WARMUP
        fetched = None if tokens is None else (tokens.fetched, total)
        await raw.aclose()
        await provider.aclose()
    finally:
        process.kill()
    return Row(kind, ceiling, rate, fetched, raw_cpu * 1e6, send_cpu * 1e6)


def table(rows: list[Row], sends: int, concurrency: int) -> str:
    """The Markdown results."""
    lines = [
        f"{sends:,} sends per run, concurrency {concurrency}, one client process, "
        f"{os.cpu_count()} CPUs, each fake in its own process",
        "",
        "| provider | auth | fake ceiling (req/s) | provider (sends/s) | provider / ceiling "
        "| client CPU µs per raw request / per send | tokens fetched per 10,000 sends |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        tokens = "none (per-request auth)"
        if row.fetched is not None:
            count, total = row.fetched
            tokens = f"{count * 10_000 / total:.2g} ({count} in {total:,} sends)"
        lines.append(
            f"| {row.kind} | {AUTH[row.kind]} | {row.ceiling:,.0f} | {row.rate:,.0f} "
            f"| {row.rate / row.ceiling:.0%} | {row.raw_cpu_us:,.0f} / {row.send_cpu_us:,.0f} "
            f"| {tokens} |"
        )
    return "\n".join(lines)


async def main(kinds: list[str], sends: int, concurrency: int) -> list[Row]:
    """Every provider in turn."""
    return [await bench(kind, sends, concurrency) for kind in kinds]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", default=list(KINDS), help="providers (default: all)")
    parser.add_argument("--sends", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    results = asyncio.run(main(args.kinds, args.sends, args.concurrency))
    print(table(results, args.sends, args.concurrency))
