"""A lean HTTP/1.1 client: keep-alive connections per origin, for small POSTs to many hosts.

Webhooks are one short JSON POST per delivery to endpoints chosen by subscribers. httpx does
that correctly but costs ~1 ms of CPU per request here, most of it in its pool bookkeeping
(every hand-off scans every connection and queued request); that bounded the dispatcher to
~250 webhook deliveries/s. This client does only what a webhook needs, on asyncio protocols:

- a pool of idle keep-alive connections per origin (scheme, host, port), reused LIFO, dropped
  when the server closes them or after ``idle_timeout``;
- ``Content-Length`` or chunked response bodies, or read-to-close; bodies over ``max_body``
  are not kept (the connection is closed instead of drained);
- TLS with the given context (SNI and hostname checks as usual); no proxies, no redirects;
- ``addresses``: connect to these (the ones an address guard approved, in order until one
  answers) instead of resolving the URL's host again; ``Host`` and SNI keep the name;
- one total ``timeout`` per request (connect + send + answer).

A request on a *reused* connection that the server closed before answering a single byte is
sent once more on a fresh connection — the keep-alive race every HTTP/1.1 client has, and
safe here because each webhook carries a ``webhook-id`` receivers deduplicate on.

Errors: :class:`TimeoutError` on timeout, :class:`ConnectionError` / :class:`OSError` on
transport failures, :class:`InvalidResponse` on a malformed answer.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit


class InvalidResponse(ConnectionError):
    """The server's answer is not HTTP/1.x as we can read it."""


@dataclass(slots=True)  # not frozen: one per request, and a frozen init costs more
class Reply:
    """A response: status, headers (names lower-cased, last one wins) and the body."""

    status: int
    headers: dict[str, str]
    body: bytes


_NO_BODY = frozenset({204, 304})
_FORBIDDEN = frozenset(" \t\r\n\x00")


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; at most one request at a time."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Reply] | None = None
        self.closed = False
        self.keep_alive = True
        self.received_any = False
        self.idle_since = 0.0
        self._head: tuple[int, dict[str, str], int] | None = None  # status, headers, body start
        self._method_head = False

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            try:
                reply = self._parse(eof=False)
            except InvalidResponse as exc:
                self.waiter.set_exception(exc)
                return
            if reply is not None:
                self.waiter.set_result(reply)
        elif self.waiter is None:
            self.keep_alive = False  # bytes nobody asked for: never reuse this connection

    def eof_received(self) -> bool | None:
        self._finish_at_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish_at_eof()

    def _finish_at_eof(self) -> None:
        self.keep_alive = False
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            reply = self._parse(eof=True)
        except InvalidResponse as exc:
            waiter.set_exception(exc)
            return
        if reply is None:
            waiter.set_exception(ConnectionResetError("the server closed the connection"))
        else:
            waiter.set_result(reply)

    # --- requests ----------------------------------------------------------------------

    def request(self, data: bytes) -> asyncio.Future[Reply]:
        assert self.transport is not None
        self.buffer.clear()
        self._head = None
        self.received_any = False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def done(self) -> None:
        self.waiter = None

    def close(self) -> None:
        self.keep_alive = False
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # --- parsing -----------------------------------------------------------------------

    def _parse(self, *, eof: bool) -> Reply | None:
        buffer = self.buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > 65536:
                    raise InvalidResponse("response head too large")
                return None
            self._head = _parse_head(bytes(buffer[:end]))
            status, headers, _ = self._head
            self._head = (status, headers, end + 4)
            if headers.get("connection", "").lower() == "close":
                self.keep_alive = False
        status, headers, start = self._head
        if status in _NO_BODY or 100 <= status < 200:
            return self._reply(start, start)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._chunked(start, eof)
        length = headers.get("content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError as exc:
                raise InvalidResponse("bad content-length") from exc
            if size > self.max_body:
                self.keep_alive = False  # do not drain a huge body: answer with the head
                return self._reply(start, start)
            if len(buffer) - start < size:
                return None
            return self._reply(start, start + size)
        # no length: the body runs to the end of the connection
        self.keep_alive = False
        if len(buffer) - start > self.max_body:
            return self._reply(start, start + self.max_body)
        return self._reply(start, len(buffer)) if eof else None

    def _chunked(self, start: int, eof: bool) -> Reply | None:
        buffer, body, at = self.buffer, bytearray(), start
        while True:
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                return None
            try:
                size = int(bytes(buffer[at:line_end]).split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise InvalidResponse("bad chunk size") from exc
            at = line_end + 2
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", at - 2)
                if trailer_end < 0:
                    return None
                status, headers, _ = self._head or (0, {}, 0)
                return Reply(status, headers, bytes(body))
            if len(buffer) < at + size + 2:
                return None
            if buffer[at + size : at + size + 2] != b"\r\n":
                raise InvalidResponse("chunk longer than its size")
            if len(body) + size > self.max_body:
                self.keep_alive = False
                status, headers, _ = self._head or (0, {}, 0)
                return Reply(status, headers, bytes(body))
            body += buffer[at : at + size]
            at += size + 2

    def _reply(self, start: int, end: int) -> Reply:
        status, headers, _ = self._head or (0, {}, 0)
        if end < len(self.buffer):
            self.keep_alive = False  # trailing bytes: pipelining we never asked for
        return Reply(status, headers, bytes(self.buffer[start:end]))


def _parse_head(head: bytes) -> tuple[int, dict[str, str], int]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise InvalidResponse("not an HTTP/1.x response")
    try:
        status = int(parts[1])
    except ValueError as exc:
        raise InvalidResponse("bad status code") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if parts[0] == b"HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers.setdefault("connection", "close")
    return status, headers, 0


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int


class Http1Pool:
    """Keep-alive HTTP/1.1 connections per origin; ``post`` sends one request."""

    def __init__(
        self,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        max_idle_per_origin: int = 64,
        idle_timeout: float = 30.0,
        max_body: int = 65536,
        user_agent: str = "tidings",
    ) -> None:
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.max_idle_per_origin = max_idle_per_origin
        self.idle_timeout = idle_timeout
        self.max_body = max_body
        self.user_agent = user_agent
        self._idle: dict[_Origin, deque[_Connection]] = {}
        self._targets: dict[str, tuple[_Origin, bytes]] = {}
        self._closed = False
        self.connections_opened = 0
        """How many connections were opened (tests check keep-alive with it)."""

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        addresses: Sequence[str] = (),
    ) -> Reply:
        """POST ``body`` to ``url``; the reply, whatever its status.

        With ``addresses``, a new connection goes to the first of them that accepts it,
        never to a fresh resolution of the URL's host (see :mod:`tidings.channels.ssrf`).
        """
        known = self._targets.get(url)
        if known is None:
            known = self._target(url)
        origin, start = known
        lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
        if "user-agent" not in {name.lower() for name in headers}:
            lines.append(f"User-Agent: {self.user_agent}\r\n")
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        text = "".join(lines)
        ends = len(lines) + 1  # every line ends with CRLF, and one more closes the head
        if text.count("\n") != ends or text.count("\r") != ends or "\x00" in text:
            raise ValueError("control characters in the request headers")
        data = start + text.encode("latin-1") + body
        async with asyncio.timeout(self.timeout):
            while True:
                connection, reused = await self._acquire(origin, addresses)
                try:
                    reply = await connection.request(data)
                except (ConnectionError, OSError):
                    connection.close()
                    if reused and not connection.received_any:
                        continue  # the server dropped an idle connection as we sent: again
                    raise
                except BaseException:
                    connection.close()  # timed out or cancelled mid-request: not reusable
                    raise
                connection.done()
                self._release(origin, connection)
                return reply

    def _target(self, url: str) -> tuple[_Origin, bytes]:
        """The origin of ``url`` and the request line + ``Host`` header, checked once per URL."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("only absolute http(s) URLs")
        port = parts.port or (443 if scheme == "https" else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        host = parts.netloc.rpartition("@")[2]
        if any(char in _FORBIDDEN for char in target + host):
            raise ValueError("control characters or spaces in the request line or headers")
        known = (
            _Origin(scheme, parts.hostname, port),
            f"POST {target} HTTP/1.1\r\nHost: {host}\r\n".encode("latin-1"),
        )
        if len(self._targets) >= 4096:
            self._targets.clear()  # a bound, not an LRU
        self._targets[url] = known
        return known

    async def _acquire(self, origin: _Origin, addresses: Sequence[str]) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self.idle_timeout:
                return connection, True
            connection.close()
        protocol = await self._connect(origin, addresses)
        self.connections_opened += 1
        return protocol, False

    async def _connect(self, origin: _Origin, addresses: Sequence[str]) -> _Connection:
        """A new connection to ``origin``, at one of ``addresses`` when there are any."""
        loop = asyncio.get_running_loop()
        secure = origin.scheme == "https"
        context = (self.ssl_context or ssl.create_default_context()) if secure else None
        failure: OSError | None = None
        for host in addresses or (origin.host,):
            try:
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self.max_body),
                    host,
                    origin.port,
                    ssl=context,
                    # the name, not the address: SNI and the certificate check stay as they were
                    server_hostname=origin.host if secure else None,
                )
            except ssl.SSLError:
                raise  # a certificate that does not fit is an answer, not an outage
            except OSError as exc:
                failure = exc
                continue
            return protocol
        assert failure is not None
        raise failure

    def _release(self, origin: _Origin, connection: _Connection) -> None:
        if self._closed or connection.closed or not connection.keep_alive:
            connection.close()
            return
        idle = self._idle.setdefault(origin, deque())
        if len(idle) >= self.max_idle_per_origin:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def aclose(self) -> None:
        """Close every idle connection (requests in flight close theirs when they end)."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks
