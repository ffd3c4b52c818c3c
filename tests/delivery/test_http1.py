"""The lean HTTP/1.1 client the webhook provider sends with, against raw local servers that
answer exactly the bytes each test needs (framing, keep-alive, closes, TLS)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fakes.tls import make_pki
from tidings.channels.http1 import Http1Pool, InvalidResponse

Answer = Callable[[bytes], bytes | None]


class RawServer:
    """Reads one request at a time (head + Content-Length body) and writes ``answer(request)``;
    ``None`` closes the connection without answering."""

    def __init__(self, answer: Answer, context: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.context = context
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                reply = self.answer(request)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in reply.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def pool() -> AsyncIterator[Http1Pool]:
    client = Http1Pool(timeout=2.0)
    yield client
    await client.aclose()


async def serve(answer: Answer) -> tuple[RawServer, str]:
    server = RawServer(answer)
    port = await server.start()
    return server, f"http://127.0.0.1:{port}/hooks/a?x=1"


async def test_request_bytes_and_a_sized_answer(pool: Http1Pool) -> None:
    server, url = await serve(
        lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"
    )
    try:
        reply = await pool.post(url, b'{"a":1}', {"webhook-id": "d-1"})
    finally:
        await server.aclose()
    assert (reply.status, reply.body, reply.headers["x-a"]) == (200, b"hello", "b")
    (request,) = server.requests
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hooks/a?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{url.split(':')[2].split('/')[0]}".encode() in lines
    assert b"webhook-id: d-1" in lines and b"Content-Length: 7" in lines
    assert b"User-Agent: tidings" in lines
    assert body == b'{"a":1}'


async def test_keep_alive_reuses_one_connection(pool: Http1Pool) -> None:
    server, url = await serve(lambda _: b"HTTP/1.1 204 No Content\r\n\r\n")
    try:
        for _ in range(20):
            assert (await pool.post(url, b"{}", {})).status == 204
    finally:
        await server.aclose()
    assert server.connections == 1 and pool.connections_opened == 1


async def test_chunked_answer(pool: Http1Pool) -> None:
    chunked = b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
    chunked += b"4\r\nbusy\r\n7;ext=1\r\n, later\r\n0\r\n\r\n"
    server, url = await serve(lambda _: chunked)
    try:
        first = await pool.post(url, b"{}", {})
        second = await pool.post(url, b"{}", {})
    finally:
        await server.aclose()
    assert first.status == 503 and first.body == b"busy, later"
    assert first.headers["retry-after"] == "7" and second.body == b"busy, later"
    assert server.connections == 1


async def test_connection_close_and_read_to_end(pool: Http1Pool) -> None:
    server, url = await serve(lambda _: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
    try:
        replies = [await pool.post(url, b"{}", {}) for _ in range(3)]
    finally:
        await server.aclose()
    assert [r.body for r in replies] == [b"all of it"] * 3
    assert server.connections == 3  # never reused after Connection: close


async def test_a_server_that_drops_idle_connections(pool: Http1Pool) -> None:
    # the keep-alive race: the server closes the idle connection; the next request goes
    # out on a fresh one instead of failing
    answers = iter([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", None])

    def answer(_: bytes) -> bytes | None:
        return next(answers, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    server, url = await serve(answer)
    try:
        assert (await pool.post(url, b"{}", {})).status == 200
        assert (await pool.post(url, b"{}", {})).status == 200
    finally:
        await server.aclose()
    assert server.connections == 2 and len(server.requests) == 3


async def test_no_answer_on_a_fresh_connection_is_an_error(pool: Http1Pool) -> None:
    server, url = await serve(lambda _: None)
    try:
        with pytest.raises(ConnectionError):
            await pool.post(url, b"{}", {})
    finally:
        await server.aclose()
    assert len(server.requests) == 1  # a fresh connection is not retried


async def test_garbage_is_invalid(pool: Http1Pool) -> None:
    server, url = await serve(lambda _: b"SMTP ready\r\n\r\n")
    try:
        with pytest.raises(InvalidResponse):
            await pool.post(url, b"{}", {})
    finally:
        await server.aclose()


async def test_a_chunk_longer_than_its_size_is_invalid(pool: Http1Pool) -> None:
    bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"
    server, url = await serve(lambda _: bad)
    try:
        with pytest.raises(InvalidResponse):
            await pool.post(url, b"{}", {})
    finally:
        await server.aclose()


async def test_a_huge_body_is_not_drained(pool: Http1Pool) -> None:
    big = b"HTTP/1.1 500 Oops\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 1000
    server, url = await serve(lambda _: big)
    try:
        reply = await pool.post(url, b"{}", {})
    finally:
        await server.aclose()
    assert reply.status == 500 and reply.body == b""


async def test_hanging_server_times_out() -> None:
    client = Http1Pool(timeout=0.3)
    server, url = await serve(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    try:
        with pytest.raises(TimeoutError):
            await client.post(url, b"{}", {})
    finally:
        await client.aclose()
        await server.aclose()


async def test_header_injection_is_refused(pool: Http1Pool) -> None:
    with pytest.raises(ValueError):
        await pool.post("http://127.0.0.1:9/a b", b"{}", {})
    with pytest.raises(ValueError):
        await pool.post("http://127.0.0.1:9/", b"{}", {"x": "a\r\nEvil: 1"})
    for value in ("a\nEvil: 1", "a\rEvil: 1", "a\x00"):  # a bare LF or CR splits a head too
        with pytest.raises(ValueError):
            await pool.post("http://127.0.0.1:9/", b"{}", {"x": value})
    with pytest.raises(ValueError):
        await pool.post("http://127.0.0.1:9/", b"{}", {"x\ny": "1"})


async def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    server = RawServer(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", context)
    port = await server.start()
    trusting = Http1Pool(timeout=2, ssl_context=ssl.create_default_context(cafile=pki.ca_file))
    strict = Http1Pool(timeout=2, ssl_context=ssl.create_default_context())
    try:
        for _ in range(2):
            reply = await trusting.post(f"https://localhost:{port}/h", b"{}", {})
            assert reply.body == b"ok"
        with pytest.raises(ssl.SSLCertVerificationError):
            await strict.post(f"https://localhost:{port}/h", b"{}", {})
    finally:
        await trusting.aclose()
        await strict.aclose()
        await server.aclose()
    assert trusting.connections_opened == 1


async def test_under_uvloop_too() -> None:
    import uvloop

    async def main() -> int:
        client = Http1Pool(timeout=2)
        server, url = await serve(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!")
        try:
            return (await client.post(url, b"{}", {})).status
        finally:
            await client.aclose()
            await server.aclose()

    status = await asyncio.get_running_loop().run_in_executor(None, uvloop.run, main())
    assert status == 200
