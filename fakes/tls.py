"""A throwaway test CA and server certificate, and the background runner the fake servers share.

The CA exists only for one test session: the provider under test trusts it through
``SSL_CERT_FILE`` exactly like a deployment trusts a private CA in front of a provider.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True)
class TestPki:
    """Paths of the CA certificate and of the server's certificate and key (all PEM)."""

    __test__ = False  # not a pytest test class

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_pki(directory: Path) -> TestPki:
    """Write a CA and a ``localhost`` / ``127.0.0.1`` server certificate into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tidings test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = TestPki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Engine = Literal["uvicorn", "hypercorn"]


class BackgroundServer:
    """Runs an ASGI app on 127.0.0.1 in a thread with its own event loop (httpx's test habit).

    ``uvicorn`` serves HTTP/1.1; ``hypercorn`` with ``pki`` serves HTTP/2 over TLS (ALPN).
    Use as a context manager, or :meth:`run_forever` in a child process (the benchmark).
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[Any]],
        *,
        engine: Engine = "uvicorn",
        pki: TestPki | None = None,
        port: int | None = None,
        max_concurrent_streams: int = 1000,
        http: Literal["h11", "httptools"] = "h11",
    ) -> None:
        self.app = app
        self.engine = engine
        self.pki = pki
        self.port = port or free_port()
        self.max_concurrent_streams = max_concurrent_streams
        self.http = http
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The server's base URL."""
        scheme = "https" if self.pki else "http"
        host = "localhost" if self.pki else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}"

    async def serve(self) -> None:
        """Serve until :meth:`stop` (runs in whatever loop calls it)."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.engine == "hypercorn":
            from hypercorn.asyncio import serve
            from hypercorn.config import Config

            config = Config()
            config.bind = [f"127.0.0.1:{self.port}"]
            config.accesslog = None
            config.errorlog = None
            config.loglevel = "ERROR"
            config.h2_max_concurrent_streams = self.max_concurrent_streams
            config.keep_alive_timeout = 60
            config.keep_alive_max_requests = 10**9  # like APNs: one connection for hours
            if self.pki is not None:
                config.certfile = str(self.pki.cert_file)
                config.keyfile = str(self.pki.key_file)
                config.alpn_protocols = ["h2", "http/1.1"]
            await serve(self.app, config, shutdown_trigger=self._stop.wait)
            return
        import uvicorn

        ssl_kwargs: dict[str, Any] = {}
        if self.pki is not None:
            ssl_kwargs = {
                "ssl_certfile": str(self.pki.cert_file),
                "ssl_keyfile": str(self.pki.key_file),
            }
        config_u = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            access_log=False,
            lifespan="off",
            http=self.http,
            timeout_keep_alive=60,
            backlog=4096,
            **ssl_kwargs,
        )
        server = uvicorn.Server(config_u)
        task = asyncio.create_task(server.serve())
        await self._stop.wait()
        server.should_exit = True
        await task

    def _run(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:  # surfaced by start()/stop() in the test thread
            self._error = exc

    def start(self) -> BackgroundServer:
        """Start serving in a thread; return once the port accepts connections."""
        self._thread = threading.Thread(target=self._run, name=f"fake-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._error is not None:
                raise RuntimeError("fake server failed to start") from self._error
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"fake server did not listen on {self.port}")

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None

    def run_forever(self) -> None:
        """Serve in the calling thread until the process ends (benchmark child processes)."""
        asyncio.run(self.serve())

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
