"""Throughput of the push and SMS providers against their local fake servers.

Each fake (FCM, APNs over HTTP/2 + TLS, Web Push, Twilio) runs in its own process. For each
one the script measures, from this one process at high concurrency:

- the ceiling: a raw httpx loop posting a pre-built request straight at the fake (no
  provider logic: no JSON building, JWT signing or RFC 8291 encryption per message);
- the provider: ``provider.send(message)`` for distinct messages.

It prints a Markdown table and the tokens each provider minted (OAuth access tokens for
FCM, ES256 provider tokens for APNs, VAPID JWTs for Web Push) over the whole run.

    .venv/bin/python bench/providers_push.py [--sends 10000] [--concurrency 256]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from fakes.apns_server import ApnsServer, device_token, write_p8  # noqa: E402
from fakes.fcm_server import FcmServer, ServiceAccount, write_service_account  # noqa: E402
from fakes.tls import BackgroundServer, TestPki, free_port, make_pki  # noqa: E402
from fakes.twilio_server import TwilioServer  # noqa: E402
from fakes.webpush_service import WebPushService  # noqa: E402
from tidings.channels.apns import ApnsProvider  # noqa: E402
from tidings.channels.base import Destination, Message, ProviderContext  # noqa: E402
from tidings.channels.fcm import FcmProvider  # noqa: E402
from tidings.channels.http import make_client  # noqa: E402
from tidings.channels.twilio import TwilioProvider  # noqa: E402
from tidings.channels.webpush import WebPushProvider  # noqa: E402
from tidings.config import ProviderSettings  # noqa: E402

FCM_TOKEN = "bench-token-" + "f" * 140
APNS_TOKEN = device_token()
PHONE = "+8613800138000"


# ---------------------------------------------------------------- fake servers, one process each


def _serve(kind: str, port: int, arg: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    if kind == "fcm":
        app = FcmServer(arg).app()
        BackgroundServer(app, port=port, http="httptools").run_forever()
    elif kind == "apns":
        public_pem, pki = arg
        app = ApnsServer(public_pem).app()
        BackgroundServer(app, port=port, engine="hypercorn", pki=pki).run_forever()
    elif kind == "webpush":
        app = WebPushService(f"http://127.0.0.1:{port}").app()
        BackgroundServer(app, port=port, http="httptools").run_forever()
    else:
        BackgroundServer(TwilioServer().app(), port=port, http="httptools").run_forever()


def start_fake(
    kind: str, port: int, arg: Any = None, serve: Callable[[str, int, Any], None] = _serve
) -> multiprocessing.process.BaseProcess:
    """Start a fake (``serve(kind, port, arg)``) in a child process and wait for its port."""
    process = multiprocessing.get_context("spawn").Process(
        target=serve, args=(kind, port, arg), daemon=True
    )
    process.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{kind} fake did not start")


# ------------------------------------------------------------------------------- measurement


async def drive(n: int, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> float:
    """Run ``one(i)`` for i in range(n) with ``concurrency`` workers; return calls per second."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await one(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


def message(kind: str, address: str, i: int, keys: dict[str, str] | None = None) -> Message:
    """A realistic order-paid push/SMS, distinct per ``i``."""
    return Message(
        delivery_id=str(uuid.uuid4()),
        notification_id=f"ntf-{i}",
        channel="sms" if kind == "phone" else "push",
        destination=Destination(kind=kind, address=address, keys=keys or {}),  # type: ignore[arg-type]
        subscriber_id=f"buyer-{i}",
        title="Payment received",
        body=f"Order {i}: $12.50 paid. Thank you for shopping with us.",
        subject=f"order-{i}",
        category="order_updates",
        priority="high",
        ttl=3600,
        data={"order_id": str(i), "amount": "12.50", "currency": "USD"},
    )


@dataclass
class Row:
    """One line of the results table."""

    provider: str
    transport: str
    ceiling: float
    provider_rate: float
    tokens: str


async def check(response: httpx.Response) -> None:
    if response.status_code >= 300:
        raise RuntimeError(f"fake answered {response.status_code}: {response.text[:200]}")


async def bench_fcm(tmp: Path, n: int, c: int) -> Row:
    port = free_port()
    account: ServiceAccount = write_service_account(
        tmp / "fcm.json", f"http://127.0.0.1:{port}/token"
    )
    proc = start_fake("fcm", port, account)
    url = f"http://127.0.0.1:{port}"
    try:
        settings = ProviderSettings(
            kind="fcm", service_account_file=str(account.path), base_url=url
        )
        provider = FcmProvider(settings, ProviderContext(base_dir=tmp))
        raw = make_client(timeout=30)
        access = await provider.tokens.get()
        body = httpx.Request(
            "POST", url, json=provider.payload(message("fcm", FCM_TOKEN, 0))
        ).read()
        headers = {"Authorization": f"Bearer {access}", "Content-Type": "application/json"}

        async def raw_one(i: int) -> None:
            await check(await raw.post(provider.send_url, content=body, headers=headers))

        await drive(300, c, raw_one)
        ceiling = await drive(n, c, raw_one)
        await drive(300, c, lambda i: provider.send(message("fcm", FCM_TOKEN, i)))
        rate = await drive(n, c, lambda i: provider.send(message("fcm", FCM_TOKEN, i)))
        minted = provider.tokens_minted  # over warm-up + the measured run
        await raw.aclose()
        await provider.aclose()
    finally:
        proc.kill()
    return Row("fcm", "HTTP/1.1, pooled", ceiling, rate, f"{minted} OAuth in {n + 300:,} sends")


async def bench_apns(tmp: Path, pki: TestPki, n: int, c: int) -> Row:
    port = free_port()
    public = write_p8(tmp / "AuthKey.p8")
    proc = start_fake("apns", port, (public, pki))
    url = f"https://localhost:{port}"
    try:
        settings = ProviderSettings(
            kind="apns",
            base_url=url,
            team_id="TEAM123456",
            key_id="KEY1234567",
            private_key_file=str(tmp / "AuthKey.p8"),
            topic="com.shop.app",
        )
        provider = ApnsProvider(settings, ProviderContext(base_dir=tmp))
        raw = make_client(timeout=30, http2=True, max_connections=1)
        headers, body = provider.request(message("apns", APNS_TOKEN, 0))
        headers["authorization"] = f"bearer {provider.token.get()}"
        target = f"{url}/3/device/{APNS_TOKEN}"

        async def raw_one(i: int) -> None:
            await check(await raw.post(target, content=body, headers=headers))

        await drive(300, c, raw_one)
        ceiling = await drive(n, c, raw_one)
        await drive(300, c, lambda i: provider.send(message("apns", APNS_TOKEN, i)))
        rate = await drive(n, c, lambda i: provider.send(message("apns", APNS_TOKEN, i)))
        minted = provider.tokens_minted  # over warm-up + the measured run
        stats = (await raw.get(f"{url}/_fake/stats")).json()
        await raw.aclose()
        await provider.aclose()
    finally:
        proc.kill()
    transport = f"HTTP/2+TLS, {stats['connections']} conns, ≤{stats['max_streams']} streams"
    return Row("apns", transport, ceiling, rate, f"{minted} ES256 in {n + 300:,} sends")


async def bench_webpush(tmp: Path, n: int, c: int) -> Row:
    port = free_port()
    proc = start_fake("webpush", port)
    url = f"http://127.0.0.1:{port}"
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        (tmp / "vapid.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        settings = ProviderSettings(
            kind="webpush",
            vapid_private_key_file=str(tmp / "vapid.pem"),
            subject="mailto:ops@shop.test",
        )
        provider = WebPushProvider(settings, ProviderContext(base_dir=tmp))
        raw = make_client(timeout=30)
        subs = [(await raw.post(f"{url}/_fake/subscribe")).json() for _ in range(50)]
        first = message("webpush", subs[0]["endpoint"], 0, subs[0]["keys"])
        body = provider.encrypt(first, provider.plaintext(first))
        headers = {
            "Authorization": provider.vapid_header(subs[0]["endpoint"]),
            "Content-Encoding": "aes128gcm",
            "TTL": "3600",
            "Urgency": "high",
        }

        async def raw_one(i: int) -> None:
            await check(await raw.post(subs[0]["endpoint"], content=body, headers=headers))

        def send(i: int) -> Awaitable[Any]:
            sub = subs[i % len(subs)]
            return provider.send(message("webpush", sub["endpoint"], i, sub["keys"]))

        await drive(300, c, raw_one)
        ceiling = await drive(n, c, raw_one)
        await drive(300, c, send)
        rate = await drive(n, c, send)
        minted = provider.tokens_minted  # over warm-up + the measured run
        await raw.aclose()
        await provider.aclose()
    finally:
        proc.kill()
    return Row(
        "webpush", "HTTP/1.1, aes128gcm", ceiling, rate, f"{minted} VAPID in {n + 300:,} sends"
    )


async def bench_twilio(tmp: Path, n: int, c: int) -> Row:
    port = free_port()
    proc = start_fake("twilio", port)
    url = f"http://127.0.0.1:{port}"
    try:
        settings = ProviderSettings(
            kind="twilio",
            base_url=url,
            account_sid="AC" + "0" * 32,
            auth_token="secret-token",
            **{"from": "+15550000000"},
        )
        provider = TwilioProvider(settings, ProviderContext(base_dir=tmp))
        raw = make_client(timeout=30)
        form = {"To": PHONE, "From": "+15550000000", "Body": "Order 1: $12.50 paid."}
        request = raw.build_request("POST", provider.url, data=form)
        request = next(provider.auth.sync_auth_flow(request))
        body, headers = request.read(), dict(request.headers)

        async def raw_one(i: int) -> None:
            await check(await raw.post(provider.url, content=body, headers=headers))

        await drive(300, c, raw_one)
        ceiling = await drive(n, c, raw_one)
        await drive(300, c, lambda i: provider.send(message("phone", PHONE, i)))
        rate = await drive(n, c, lambda i: provider.send(message("phone", PHONE, i)))
        await raw.aclose()
        await provider.aclose()
    finally:
        proc.kill()
    return Row("twilio", "HTTP/1.1, form + basic auth", ceiling, rate, "n/a")


async def main(sends: int, concurrency: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        pki = make_pki(tmp / "pki")
        os.environ["SSL_CERT_FILE"] = str(pki.ca_file)
        return [
            await bench_fcm(tmp, sends, concurrency),
            await bench_apns(tmp, pki, sends, concurrency),
            await bench_webpush(tmp, sends, concurrency),
            await bench_twilio(tmp, sends, concurrency),
        ]


def table(rows: list[Row], sends: int, concurrency: int) -> str:
    lines = [
        f"{sends} sends per run, concurrency {concurrency}, one client process, "
        f"{os.cpu_count()} CPUs, each fake in its own process",
        "",
        "| provider | transport | raw ceiling (req/s) | provider (sends/s) | provider / ceiling "
        "| tokens minted (whole run) |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.provider} | {row.transport} | {row.ceiling:,.0f} | {row.provider_rate:,.0f} "
            f"| {row.provider_rate / row.ceiling:.0%} | {row.tokens} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    print(table(asyncio.run(main(args.sends, args.concurrency)), args.sends, args.concurrency))
