"""Email over SMTP (aiosmtplib) with a small pool of connections reused across messages.

Settings: ``host``, ``port``, ``from`` (``"Shop <noreply@shop.test>"``), ``username`` /
``password`` (AUTH), ``tls`` (implicit TLS, port 465 style), ``starttls`` (upgrade after
connecting, default false), ``pool_size`` (connections, default 4), ``unsubscribe_url``
(a format string with ``{subscriber_id}`` and ``{category}``).

Replies map to errors by class: 4xx and connection failures are transient, 5xx permanent.
A 550 "mailbox unavailable" stays a plain permanent error: an email address is not a device
token to deactivate on one bounce.
"""

from __future__ import annotations

import asyncio
import html as htmllib
import re
import ssl
from collections import deque
from datetime import UTC, datetime
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr, parseaddr
from typing import ClassVar
from urllib.parse import quote

import aiosmtplib

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.http import tls_context
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)

_POLICY = compat32.clone(linesep="\r\n")
_EMAIL = re.compile(r"[^\s<>@]+@[^\s<>@]+")
_MSG_ID_SAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")


def envelope_address(address: str) -> str:
    """``address`` as SMTP carries it: an IDN domain in punycode; a non-ASCII local part
    (which needs SMTPUTF8) is refused."""
    local, _, domain = address.strip().rpartition("@")
    if not local or not domain:
        raise PermanentProviderError("not an email address", code="invalid_address")
    if not local.isascii():
        raise PermanentProviderError("non-ASCII local parts are not supported", code="smtputf8")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise PermanentProviderError("invalid domain", code="invalid_address") from exc
    return f"{local}@{domain}"


def _header(value: str, name: str) -> str:
    """``value`` as RFC 2047 encoded words when it is not ASCII."""
    return value if value.isascii() else Header(value, "utf-8", header_name=name).encode()


def _text_part(text: str, subtype: str) -> MIMEText:
    if text.isascii() and all(len(line) <= 998 for line in text.splitlines()):
        return MIMEText(text, subtype, "us-ascii")  # 7bit: readable, no encoding overhead
    return MIMEText(text, subtype, "utf-8")  # base64: safe through any relay


def redact(text: str) -> str:
    """``text`` with anything shaped like an email address replaced (servers echo them)."""
    return _EMAIL.sub("<redacted>", text)


def message_id(delivery_id: str, domain: str) -> str:
    """A ``Message-ID`` derived from the delivery id alone, so retries carry the same one."""
    left = _MSG_ID_SAFE.sub(lambda m: f"={ord(m.group()):02X}", delivery_id) or "tidings"
    return f"<{left}@{domain}>"


_LAYOUT = """<!DOCTYPE html>
<html lang="{lang}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{subject}</title></head>
<body style="margin:0;padding:24px;background:#f5f5f5;font-family:sans-serif;color:#222">
<div style="max-width:560px;margin:0 auto;padding:24px;background:#fff;border-radius:6px">
<h1 style="font-size:20px;margin:0 0 16px">{title}</h1>
<p style="font-size:15px;line-height:1.5;margin:0">{body}</p>{link}
</div>
</body>
</html>
"""


def render_html(message: Message, subject: str) -> str:
    """A minimal HTML layout around the plain body; every value is escaped here."""
    esc = htmllib.escape
    body = "<br>\n".join(esc(line) for line in message.body.splitlines())
    link = ""
    url = message.content.get("url")
    if isinstance(url, str) and url.lower().startswith(("https://", "http://")):
        link = f'\n<p style="margin:16px 0 0"><a href="{esc(url)}">{esc(url)}</a></p>'
    return _LAYOUT.format(
        lang=esc(message.locale),
        subject=esc(subject),
        title=esc(message.title),
        body=body,
        link=link,
    )


def unsubscribe_headers(message: Message, url_format: str | None, sender: str) -> dict[str, str]:
    """``List-Unsubscribe`` (RFC 2369), plus RFC 8058 one-click when it is an https URL."""
    subscriber, category = quote(message.subscriber_id, safe=""), quote(message.category, safe="")
    if url_format:
        url = url_format.format(subscriber_id=subscriber, category=category)
        headers = {"List-Unsubscribe": f"<{url}>"}
        if url.lower().startswith("https://"):  # RFC 8058 one-click needs an https URI
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return headers
    mail_subject = quote(f"unsubscribe {message.category} {message.subscriber_id}", safe="")
    return {"List-Unsubscribe": f"<mailto:{sender}?subject={mail_subject}>"}


class _FairPool:
    """SMTP clients handed out first come, first served.

    ``asyncio.Queue`` lets a task that just returned a client take it straight back, so
    under load a few senders keep the connections and the others wait for seconds; here a
    returned client goes to the longest waiter. Idle clients are a stack: the warm
    connection is reused, the others stay unconnected until load needs them.
    """

    def __init__(self, clients: list[aiosmtplib.SMTP]) -> None:
        self._idle = list(reversed(clients))
        self._waiters: deque[asyncio.Future[aiosmtplib.SMTP]] = deque()

    async def acquire(self) -> aiosmtplib.SMTP:
        if self._idle and not self._waiters:
            return self._idle.pop()
        waiter: asyncio.Future[aiosmtplib.SMTP] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed over just as we were cancelled
            raise

    def release(self, client: aiosmtplib.SMTP) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(client)
                return
        self._idle.append(client)


class SmtpProvider:
    """Sends multipart/alternative (text + HTML) mail through a pool of SMTP connections."""

    kind: ClassVar[str] = "smtp"
    channel: ClassVar[Channel] = "email"
    destinations: ClassVar[frozenset[str]] = frozenset({"email"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        self.timeout = float(settings.timeout or context.timeout)
        display, address = parseaddr(str(settings.option("from", "")))
        if "@" not in address:
            raise ConfigError("`from` must be an email address", "from")
        self.sender = envelope_address(address)
        self.domain = self.sender.rpartition("@")[2]
        self.from_header = formataddr((display, self.sender), charset="utf-8")
        self.unsubscribe_url: str | None = settings.option("unsubscribe_url")
        use_tls = bool(settings.option("tls", False))
        start_tls = bool(settings.option("starttls", False))
        if use_tls and start_tls:
            raise ConfigError("`tls` and `starttls` are mutually exclusive", "starttls")
        pool_size = int(settings.option("pool_size", 4))
        if pool_size < 1:
            raise ConfigError("must be at least 1", "pool_size")
        context_tls: ssl.SSLContext | None = tls_context() if use_tls or start_tls else None
        username, password = settings.option("username"), settings.option("password")
        self._clients = [
            aiosmtplib.SMTP(
                hostname=str(settings.option("host", "localhost")),
                port=int(settings.option("port", 465 if use_tls else 25)),
                username=username,
                password=password,
                timeout=self.timeout,
                use_tls=use_tls,
                start_tls=start_tls,
                tls_context=context_tls,
                local_hostname=settings.option("local_hostname", self.domain),
            )
            for _ in range(pool_size)
        ]
        self._pool = _FairPool(self._clients)

    def build(self, message: Message) -> MIMEMultipart:
        """The MIME message for ``message`` (exposed for tests and previews)."""
        content = message.content
        subject = str(content.get("subject") or message.title)
        text = str(content.get("text") or message.body)
        html = content.get("html")
        if not html:
            html = render_html(message, subject)
        # compat32 MIME classes: several times cheaper than EmailMessage's header registry
        mail = MIMEMultipart("alternative")
        mail["From"] = self.from_header
        mail["To"] = envelope_address(message.destination.address)
        mail["Subject"] = _header(subject, "Subject")
        mail["Date"] = format_datetime(_now())
        mail["Message-ID"] = message_id(message.delivery_id, self.domain)
        mail["Content-Language"] = message.locale
        mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
        if not message.category_required:
            for name, value in unsubscribe_headers(
                message, self.unsubscribe_url, self.sender
            ).items():
                mail[name] = value
        mail.attach(_text_part(text, "plain"))
        mail.attach(_text_part(str(html), "html"))
        return mail

    async def send(self, message: Message) -> Receipt:
        """Send one mail on a pooled connection; a stale connection is replaced once."""
        recipient = envelope_address(message.destination.address)
        mail = self.build(message)
        data = mail.as_bytes(policy=_POLICY)
        client = await self._pool.acquire()
        try:
            reused = client.is_connected
            try:
                reply = await self._transaction(client, recipient, data)
            except aiosmtplib.SMTPServerDisconnected:
                if not reused:
                    raise
                # the server dropped an idle pooled connection: one fresh attempt
                client.close()
                reply = await self._transaction(client, recipient, data)
        except ProviderError:
            raise
        except aiosmtplib.SMTPException as exc:
            if not _session_survives(exc):
                client.close()
            raise _map_error(self.name, exc) from exc
        except (OSError, TimeoutError) as exc:
            client.close()
            raise TransientProviderError(
                f"{self.name}: connection failed: {type(exc).__name__}", code="connection"
            ) from exc
        finally:
            self._pool.release(client)
        return Receipt(
            status="sent", provider_message_id=str(mail["Message-ID"]), detail=redact(reply)
        )

    async def _transaction(self, client: aiosmtplib.SMTP, recipient: str, data: bytes) -> str:
        if not client.is_connected:
            await client.connect()
        refused, reply = await client.sendmail(self.sender, [recipient], data)
        if refused:  # one recipient only, so a refusal raises; kept for safety
            code, text = next(iter(refused.values()))
            raise _reply_error(self.name, code, text)
        return reply

    async def aclose(self) -> None:
        """Say QUIT on every open connection."""
        for client in self._clients:
            if not client.is_connected:
                continue
            try:
                await client.quit(timeout=min(self.timeout, 5.0))
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()


def _session_survives(exc: aiosmtplib.SMTPException) -> bool:
    """A refused envelope leaves the session usable (aiosmtplib sent RSET); 421 closes it."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(refused.code != 421 for refused in exc.recipients)
    return (
        isinstance(exc, aiosmtplib.SMTPResponseException)
        and not isinstance(exc, aiosmtplib.SMTPConnectError)
        and exc.code != 421
    )


def _reply_error(name: str, code: int, text: str) -> ProviderError:
    detail = f"{name}: SMTP {code}: {redact(text)[:200]}"
    if 500 <= code < 600:
        return PermanentProviderError(detail, code=str(code))
    return TransientProviderError(detail, code=str(code))


def _map_error(name: str, exc: aiosmtplib.SMTPException) -> ProviderError:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        first = exc.recipients[0]
        return _reply_error(name, first.code, first.message)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return TransientProviderError(f"{name}: timed out", code="timeout")
    if isinstance(exc, aiosmtplib.SMTPResponseException) and 400 <= exc.code < 600:
        return _reply_error(name, exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        # e.g. STARTTLS configured but not offered: a configuration problem, not a blip
        return PermanentProviderError(f"{name}: {redact(str(exc))}", code="not_supported")
    return TransientProviderError(
        f"{name}: {type(exc).__name__}: {redact(str(exc))[:200]}", code="connection"
    )


def _now() -> datetime:
    return datetime.now(UTC)
