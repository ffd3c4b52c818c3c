"""A local SMTP server (aiosmtpd) that parses and keeps every mail it accepts.

It checks what a real submission server checks: AUTH credentials (and, by default, that AUTH
happens only over TLS), STARTTLS or implicit TLS with a real certificate, and it can be told
to refuse recipients with a 451 or 550 reply or be stopped and restarted on the same port.
"""

from __future__ import annotations

import email
import ssl
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from fakes.tls import TestPki, free_port


@dataclass
class Received:
    """One accepted mail: the envelope and the parsed MIME message."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    peer: Any
    authenticated_as: str | None
    tls: bool


@dataclass
class _State:
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    reject_rcpt: str | None = None
    require_auth: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler:
    def __init__(self, state: _State) -> None:
        self.state = state

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.state.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.state.reject_rcpt:
            return self.state.reject_rcpt
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        with self.state.lock:
            self.state.messages.append(
                Received(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=list(envelope.rcpt_tos),
                    message=parsed,
                    raw=raw,
                    peer=session.peer,
                    authenticated_as=login,
                    tls=server.transport is not None
                    and server.transport.get_extra_info("ssl_object") is not None,
                )
            )
            queued = len(self.state.messages)
        return f"250 2.0.0 Ok: queued as Q{queued:06d}"


class _CountingSMTP(SMTP):
    """Counts TCP connections (the pool test asserts on it)."""

    def __init__(self, state: _State, *args: Any, **kwargs: Any) -> None:
        self._state = state
        super().__init__(*args, **kwargs)

    def connection_made(self, transport: Any) -> None:
        if self._original_transport is None:  # not the STARTTLS upgrade of a connection
            with self._state.lock:
                self._state.connections += 1
        super().connection_made(transport)


class _Controller(Controller):
    def __init__(self, state: _State, *args: Any, **kwargs: Any) -> None:
        self._state = state
        super().__init__(*args, **kwargs)

    def factory(self) -> SMTP:
        return _CountingSMTP(self._state, self.handler, **self.SMTP_kwargs)


class SmtpSink:
    """A running SMTP server on ``127.0.0.1:port``; use as a context manager.

    ``credentials`` turns AUTH on (PLAIN/LOGIN) and requires it before MAIL; ``pki`` with
    ``mode="starttls"`` offers STARTTLS (and ``require_starttls``), ``mode="tls"`` serves
    implicit TLS. ``auth_require_tls`` is aiosmtpd's (and real servers') default.
    """

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        pki: TestPki | None = None,
        mode: str = "plain",
        auth_require_tls: bool = True,
        port: int | None = None,
    ) -> None:
        self.state = _State()
        self.port = port or free_port()
        self.credentials = credentials
        self.pki = pki
        self.mode = mode
        self.auth_require_tls = auth_require_tls
        self._controller: _Controller | None = None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if (
            self.credentials is not None
            and isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == self.credentials
        ):
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)

    def _server_context(self) -> ssl.SSLContext | None:
        if self.pki is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.pki.cert_file, self.pki.key_file)
        return context

    def start(self) -> SmtpSink:
        """Start listening (again, on the same port after :meth:`stop`)."""
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port}
        context = self._server_context()
        if self.mode == "tls":
            kwargs["ssl_context"] = context
        elif self.mode == "starttls":
            kwargs["tls_context"] = context
            kwargs["require_starttls"] = True
        if self.credentials is not None:
            kwargs["authenticator"] = self._authenticate
            # aiosmtpd only knows about STARTTLS: under implicit TLS the socket is TLS already,
            # and handle_MAIL enforces AUTH instead (aiosmtpd warns on auth without its TLS)
            implicit = self.mode == "tls"
            kwargs["auth_required"] = not implicit
            kwargs["auth_require_tls"] = self.auth_require_tls and not implicit
            self.state.require_auth = True
        self._controller = _Controller(self.state, _Handler(self.state), **kwargs)
        self._controller.start()
        with self.state.lock:  # the controller's own readiness probe is not a client
            self.state.connections = 0
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[Received]:
        """Mails accepted so far."""
        with self.state.lock:
            return list(self.state.messages)

    @property
    def connections(self) -> int:
        """TCP connections clients opened since the last start."""
        with self.state.lock:
            return self.state.connections

    def reject(self, reply: str | None) -> None:
        """Answer every RCPT with ``reply`` (``"451 4.3.0 …"``) or, with ``None``, accept again."""
        self.state.reject_rcpt = reply

    def settings(self, **extra: Any) -> dict[str, Any]:
        """Provider settings pointing at this sink."""
        return {
            "kind": "smtp",
            "host": "localhost" if self.pki else "127.0.0.1",
            "port": self.port,
            "from": "Shop <noreply@shop.test>",
            **extra,
        }

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
