"""SmtpProvider against a real local SMTP server (aiosmtpd) that parses what it receives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.smtp_sink import SmtpSink
from fakes.tls import TestPki, make_pki
from tidings.channels.base import Destination, Message, ProviderContext
from tidings.channels.smtp import SmtpProvider
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    TransientProviderError,
)

ADDRESS = "buyer.li@example.test"


def message(**overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "delivery_id": "dlv-01HZX",
        "notification_id": "ntf-1",
        "channel": "email",
        "destination": Destination(kind="email", address=ADDRESS),
        "subscriber_id": "buyer-42",
        "title": "Payment received",
        "body": "Order o-1: $12.50 paid.",
        "event_type": "order.paid",
        "category": "order_updates",
        "category_required": True,
        "locale": "en-US",
    }
    fields.update(overrides)
    return Message(**fields)


def provider(settings: dict[str, Any], timeout: float = 5.0) -> SmtpProvider:
    return SmtpProvider(ProviderSettings.model_validate(settings), ProviderContext(timeout=timeout))


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@pytest.fixture
async def smtp(sink: SmtpSink) -> AsyncIterator[SmtpProvider]:
    instance = provider(sink.settings())
    yield instance
    await instance.aclose()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_multipart_alternative_with_headers(smtp: SmtpProvider, sink: SmtpSink) -> None:
    receipt = await smtp.send(message())
    assert receipt.status == "sent"
    [got] = sink.messages
    assert got.mail_from == "noreply@shop.test"
    assert got.rcpt_tos == [ADDRESS]
    mail = got.message
    assert mail["From"] == "Shop <noreply@shop.test>"
    assert mail["To"] == ADDRESS
    assert mail["Subject"] == "Payment received"
    assert mail["Message-ID"] == "<dlv-01HZX@shop.test>" == receipt.provider_message_id
    assert mail["Date"] is not None
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(preferencelist=("plain",))
    html = mail.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == "Order o-1: $12.50 paid."
    assert "Order o-1: $12.50 paid." in html.get_content()
    assert "<h1" in html.get_content()


async def test_content_fields_override_title_and_body(smtp: SmtpProvider, sink: SmtpSink) -> None:
    content = {"subject": "Your receipt", "text": "plain version", "html": "<p>rendered</p>"}
    await smtp.send(message(content=content))
    mail = sink.messages[0].message
    assert mail["Subject"] == "Your receipt"
    text, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == "plain version"
    assert html.get_content().strip() == "<p>rendered</p>"  # used as rendered, not re-escaped


async def test_zh_cn_subject_and_body_are_encoded(smtp: SmtpProvider, sink: SmtpSink) -> None:
    await smtp.send(
        message(title="支付成功", body="订单 o-1 已支付 ¥88.00。\n感谢惠顾", locale="zh-CN")
    )
    got = sink.messages[0]
    head = got.raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()  # RFC 2047 encoded words, not raw UTF-8 in headers
    assert b"=?utf-8?" in head.lower()
    assert got.raw.isascii()  # bodies are quoted-printable/base64: any relay carries them
    mail = got.message
    assert mail["Subject"] == "支付成功"
    assert mail["Content-Language"] == "zh-CN"
    text, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().replace("\r\n", "\n").strip() == "订单 o-1 已支付 ¥88.00。\n感谢惠顾"
    assert "订单 o-1 已支付 ¥88.00。<br>" in html.get_content()
    assert 'lang="zh-CN"' in html.get_content()


async def test_hostile_body_is_escaped_in_generated_html(
    smtp: SmtpProvider, sink: SmtpSink
) -> None:
    hostile = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    await smtp.send(message(title="<b>hi</b>", body=hostile))
    mail = sink.messages[0].message
    text, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == hostile
    rendered = html.get_content()
    assert "<script>" not in rendered and "<img" not in rendered and "<b>" not in rendered
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img" in rendered
    assert "&lt;b&gt;hi&lt;/b&gt;" in rendered


async def test_message_id_is_stable_per_delivery(smtp: SmtpProvider, sink: SmtpSink) -> None:
    first = await smtp.send(message(delivery_id="d-7"))
    retry = await smtp.send(message(delivery_id="d-7"))
    other = await smtp.send(message(delivery_id="d-8"))
    ids = [got.message["Message-ID"] for got in sink.messages]
    assert ids == ["<d-7@shop.test>", "<d-7@shop.test>", "<d-8@shop.test>"]
    assert first.provider_message_id == retry.provider_message_id != other.provider_message_id


async def test_list_unsubscribe_only_for_optional_categories(sink: SmtpSink) -> None:
    url = "https://shop.test/unsubscribe?s={subscriber_id}&c={category}"
    smtp = provider(sink.settings(unsubscribe_url=url))
    try:
        await smtp.send(message(category="order_updates", category_required=True))
        await smtp.send(message(category="marketing", category_required=False))
    finally:
        await smtp.aclose()
    required, optional = (got.message for got in sink.messages)
    assert required["List-Unsubscribe"] is None and required["List-Unsubscribe-Post"] is None
    assert optional["List-Unsubscribe"].strip() == (
        "<https://shop.test/unsubscribe?s=buyer-42&c=marketing>"
    )
    assert optional["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_list_unsubscribe_falls_back_to_mailto(smtp: SmtpProvider, sink: SmtpSink) -> None:
    await smtp.send(message(category="marketing", category_required=False))
    mail = sink.messages[0].message
    assert mail["List-Unsubscribe"].strip() == (
        "<mailto:noreply@shop.test?subject=unsubscribe%20marketing%20buyer-42>"
    )
    assert mail["List-Unsubscribe-Post"] is None  # RFC 8058 one-click needs an https URI


async def test_one_connection_carries_many_messages(smtp: SmtpProvider, sink: SmtpSink) -> None:
    for index in range(10):
        await smtp.send(message(delivery_id=f"seq-{index}"))
    assert len(sink.messages) == 10
    assert sink.connections == 1


async def test_concurrent_sends_share_the_pool(sink: SmtpSink) -> None:
    smtp = provider(sink.settings(pool_size=3))
    try:
        await asyncio.gather(*(smtp.send(message(delivery_id=f"c-{i}")) for i in range(30)))
    finally:
        await smtp.aclose()
    assert len(sink.messages) == 30
    assert 1 <= sink.connections <= 3


async def test_a_waiting_sender_is_not_starved(sink: SmtpSink) -> None:
    smtp = provider(sink.settings(pool_size=1))

    async def busy() -> None:
        for index in range(5):
            await smtp.send(message(delivery_id=f"busy-{index}"))

    async def once() -> None:
        await asyncio.sleep(0)  # queue up behind busy()'s first send
        await smtp.send(message(delivery_id="waiting"))

    try:
        await asyncio.gather(busy(), once())
    finally:
        await smtp.aclose()
    order = [got.message["Message-ID"] for got in sink.messages]
    # the connection goes to the sender that waited, not back to the one that just used it
    assert order.index("<waiting@shop.test>") == 1


async def test_server_down_is_transient_then_delivers(smtp: SmtpProvider, sink: SmtpSink) -> None:
    await smtp.send(message(delivery_id="before"))
    sink.stop()
    with pytest.raises(TransientProviderError) as caught:
        await smtp.send(message(delivery_id="during"))
    assert ADDRESS not in str(caught.value)
    sink.start()
    await smtp.send(message(delivery_id="after"))
    assert [got.message["Message-ID"] for got in sink.messages] == [
        "<before@shop.test>",
        "<after@shop.test>",
    ]


async def test_dropped_pooled_connection_is_replaced(smtp: SmtpProvider, sink: SmtpSink) -> None:
    await smtp.send(message(delivery_id="one"))
    sink.stop()  # the server goes away and comes back: the pooled connection is dead
    sink.start()
    await smtp.send(message(delivery_id="two"))  # no error surfaces for a stale connection
    assert len(sink.messages) == 2
    assert sink.connections == 1  # one fresh connection since the restart


async def test_451_is_transient(smtp: SmtpProvider, sink: SmtpSink) -> None:
    sink.reject(f"451 4.3.0 <{ADDRESS}>: Temporary lookup failure")
    with pytest.raises(TransientProviderError) as caught:
        await smtp.send(message())
    assert caught.value.code == "451"
    assert ADDRESS not in str(caught.value)
    sink.reject(None)
    await smtp.send(message())  # the connection survived the refusal
    assert len(sink.messages) == 1
    assert sink.connections == 1


async def test_550_is_permanent_not_gone(smtp: SmtpProvider, sink: SmtpSink) -> None:
    sink.reject(f"550 5.1.1 <{ADDRESS}>: Recipient address rejected: User unknown")
    with pytest.raises(PermanentProviderError) as caught:
        await smtp.send(message())
    assert not isinstance(caught.value, DestinationGone)
    assert caught.value.code == "550"
    assert ADDRESS not in str(caught.value)
    assert "User unknown" in str(caught.value)


async def test_starttls_with_auth(
    pki: TestPki, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    with SmtpSink(credentials=("mailer", "s3cret"), pki=pki, mode="starttls") as sink:
        smtp = provider(sink.settings(starttls=True, username="mailer", password="s3cret"))
        try:
            await smtp.send(message())
            await smtp.send(message(delivery_id="second"))
        finally:
            await smtp.aclose()
    assert [got.authenticated_as for got in sink.messages] == ["mailer", "mailer"]
    assert all(got.tls for got in sink.messages)
    assert sink.connections == 1


async def test_wrong_password_is_permanent(pki: TestPki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    with SmtpSink(credentials=("mailer", "s3cret"), pki=pki, mode="starttls") as sink:
        smtp = provider(sink.settings(starttls=True, username="mailer", password="wrong"))
        try:
            with pytest.raises(PermanentProviderError) as caught:
                await smtp.send(message())
        finally:
            await smtp.aclose()
    assert caught.value.code == "535"
    assert sink.messages == []


async def test_auth_required_but_not_given_is_refused(
    pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    with SmtpSink(credentials=("mailer", "s3cret"), pki=pki, mode="starttls") as sink:
        smtp = provider(sink.settings(starttls=True))
        try:
            with pytest.raises(PermanentProviderError) as caught:
                await smtp.send(message())
        finally:
            await smtp.aclose()
    assert caught.value.code == "530"


async def test_implicit_tls(pki: TestPki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    with SmtpSink(credentials=("mailer", "s3cret"), pki=pki, mode="tls") as sink:
        smtp = provider(sink.settings(tls=True, username="mailer", password="s3cret"))
        try:
            await smtp.send(message())
        finally:
            await smtp.aclose()
    assert sink.messages[0].authenticated_as == "mailer"
    assert sink.messages[0].tls


async def test_untrusted_certificate_is_refused(
    pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with SmtpSink(pki=pki, mode="tls") as sink:
        smtp = provider(sink.settings(tls=True))
        try:
            with pytest.raises(TransientProviderError) as caught:
                await smtp.send(message())
        finally:
            await smtp.aclose()
    assert "certificate verify failed" in str(caught.value)
    assert sink.messages == []


def test_tls_and_starttls_are_exclusive() -> None:
    with pytest.raises(ConfigError):
        provider({"kind": "smtp", "from": "noreply@shop.test", "tls": True, "starttls": True})


def test_from_is_required() -> None:
    with pytest.raises(ConfigError):
        provider({"kind": "smtp", "host": "127.0.0.1"})


async def test_idn_domain_is_sent_as_punycode(smtp: SmtpProvider, sink: SmtpSink) -> None:
    idn = "买家@例え.テスト".replace("买家", "buyer")
    await smtp.send(message(destination=Destination(kind="email", address=idn)))
    got = sink.messages[0]
    assert got.rcpt_tos == ["buyer@xn--r8jz45g.xn--zckzah"]
    assert got.message["To"] == "buyer@xn--r8jz45g.xn--zckzah"


async def test_non_ascii_local_part_is_refused_without_leaking(smtp: SmtpProvider) -> None:
    with pytest.raises(PermanentProviderError) as caught:
        await smtp.send(message(destination=Destination(kind="email", address="买家@shop.test")))
    assert caught.value.code == "smtputf8"
    assert "买家" not in str(caught.value)


async def test_non_ascii_sender_name(sink: SmtpSink) -> None:
    smtp = provider(sink.settings(**{"from": "优选商城 <noreply@shop.test>"}))
    try:
        await smtp.send(message())
    finally:
        await smtp.aclose()
    got = sink.messages[0]
    assert got.mail_from == "noreply@shop.test"
    assert got.message["From"] == "优选商城 <noreply@shop.test>"
