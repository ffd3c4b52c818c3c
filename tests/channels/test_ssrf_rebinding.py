"""DNS rebinding: a webhook goes to the address the SSRF guard approved, never to a second
answer for the same name, with the ``Host`` header and TLS name unchanged.

The network is faked below our code, where asyncio resolves and connects: an event loop
whose resolver answers a public address first and a private one after (a rebinding DNS
server with a TTL of zero), and whose connections to that public address land on a local
server standing in for the seller's ERP. The other answer, 127.0.0.2, has its own server:
the internal service an attacker wants to reach.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fakes.webhook_receiver import new_secret
from tests.channels.test_webhook import message, provider
from tidings.channels.http1 import Http1Pool
from tidings.errors import TransientProviderError

NAME = "erp.rebind.test"
PUBLIC = "93.184.215.14"  # what the guard is shown first: a public address
INTERNAL = "127.0.0.2"  # what the same name answers next
T = TypeVar("T")


class RebindingNetwork(asyncio.SelectorEventLoop):
    """``NAME`` resolves to ``PUBLIC`` once, then to ``INTERNAL``; ``PUBLIC`` is routed to a
    local port (the ERP's stand-in). Everything else is the real network stack."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.erp: tuple[str, int] | None = None

    async def getaddrinfo(self, host: Any, port: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if host != NAME:
            return await super().getaddrinfo(host, port, **kwargs)
        address = PUBLIC if self.lookups == 0 else INTERNAL
        self.lookups += 1
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        if address[0] == PUBLIC and self.erp is not None:
            address = self.erp
        await super().sock_connect(sock, address)


class Endpoint:
    """A raw HTTP/1.1 server that records each request head and answers 200 (or TLS)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.context = host, port, context
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> Endpoint:
        self.server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.context
        )
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                self.heads.append(head)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def host_headers(self) -> list[str]:
        found = []
        for head in self.heads:
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"host:"):
                    found.append(line.split(b":", 1)[1].strip().decode())
        return found

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def free_port() -> int:
    """A port free on both 127.0.0.1 and 127.0.0.2."""
    while True:
        with socket.socket() as one, socket.socket() as two:
            one.bind(("127.0.0.1", 0))
            port: int = one.getsockname()[1]
            try:
                two.bind((INTERNAL, port))
            except OSError:
                continue
            return port


def run(test: Callable[[RebindingNetwork], Awaitable[T]]) -> tuple[T, RebindingNetwork]:
    network = RebindingNetwork()
    with asyncio.Runner(loop_factory=lambda: network) as runner:
        return runner.run(test(network)), network


def test_the_webhook_goes_to_the_approved_address_not_a_second_answer() -> None:
    port = free_port()
    url = f"http://{NAME}:{port}/hooks/erp"

    async def scenario(network: RebindingNetwork) -> tuple[list[str], list[str]]:
        erp = await Endpoint("127.0.0.1", port).start()
        internal = await Endpoint(INTERNAL, port).start()
        network.erp = ("127.0.0.1", port)
        webhook = provider()  # allow_private_networks: false, the guard resolves the name
        try:
            receipt = await webhook.send(message(url, new_secret()))
            assert receipt.status == "delivered"
        finally:
            await webhook.aclose()
            await erp.aclose()
            await internal.aclose()
        return erp.host_headers(), internal.host_headers()

    (at_erp, at_internal), network = run(scenario)
    assert at_internal == []  # without the pin, the connection's own lookup went here
    assert at_erp == [f"{NAME}:{port}"]  # the Host header keeps the name
    assert network.lookups == 1  # the guard's, and no other


def test_tls_keeps_the_name_for_sni_and_the_certificate(tmp_path: Path) -> None:
    port = free_port()
    server_context, client_context = _tls_for(NAME, tmp_path)
    names: list[str | None] = []
    server_context.sni_callback = lambda _sock, name, _ctx: names.append(name)

    async def scenario(network: RebindingNetwork) -> list[str]:
        erp = await Endpoint("127.0.0.1", port, server_context).start()
        internal = await Endpoint(INTERNAL, port, server_context).start()
        network.erp = ("127.0.0.1", port)
        pool = Http1Pool(timeout=5, ssl_context=client_context)
        try:
            addresses = (PUBLIC,)  # what the guard approved
            reply = await pool.post(
                f"https://{NAME}:{port}/hooks/erp", b"{}", {}, addresses=addresses
            )
            assert reply.status == 200
        finally:
            await pool.aclose()
            await erp.aclose()
            await internal.aclose()
        assert internal.heads == []
        return erp.host_headers()

    hosts, network = run(scenario)
    assert hosts == [f"{NAME}:{port}"]
    assert names == [NAME]  # SNI: the name, though the socket went to an address
    assert network.lookups == 0  # the pool resolved nothing


def test_the_next_approved_address_is_tried_when_one_refuses() -> None:
    port = free_port()

    async def scenario(network: RebindingNetwork) -> list[str]:
        erp = await Endpoint("127.0.0.1", port).start()
        pool = Http1Pool(timeout=5)
        try:
            # 127.0.0.3 has no server on this port: refused, then the next approved one
            reply = await pool.post(
                f"http://{NAME}:{port}/x", b"", {}, addresses=("127.0.0.3", "127.0.0.1")
            )
            assert reply.status == 200
        finally:
            await pool.aclose()
            await erp.aclose()
        return erp.host_headers()

    hosts, network = run(scenario)
    assert hosts == [f"{NAME}:{port}"]
    assert network.lookups == 0


def test_a_name_that_only_later_resolves_private_is_refused_when_it_does() -> None:
    async def scenario(network: RebindingNetwork) -> None:
        network.lookups = 1  # the next answer is the private one
        webhook = provider()
        try:
            with pytest.raises(Exception) as caught:
                await webhook.send(message(f"http://{NAME}:9/hooks/erp", new_secret()))
        finally:
            await webhook.aclose()
        assert getattr(caught.value, "code", None) == "ssrf"
        assert not isinstance(caught.value, TransientProviderError)

    run(scenario)


def _tls_for(name: str, directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``name`` only: the server's context, and a client
    context that trusts it (and checks the host name as usual)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "erp.pem", directory / "erp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client
