"""Aliyun and Tencent SMS providers against fakes that verify the signatures byte for byte."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fakes.china import aliyun_settings, message, one_byte_off, tencent_settings
from fakes.china_sms import AliyunSmsServer, TencentSmsServer
from fakes.tls import BackgroundServer
from tidings.channels.aliyun_sms import AliyunSmsProvider
from tidings.channels.base import ProviderContext
from tidings.channels.tencent_sms import TencentSmsProvider, tc3_authorization
from tidings.config import ProviderSettings
from tidings.errors import DestinationGone, PermanentProviderError, RateLimited

PHONE = "+8613800138000"


@pytest.fixture
def aliyun() -> Iterator[tuple[AliyunSmsServer, str]]:
    fake = AliyunSmsServer()
    with BackgroundServer(fake.app()) as server:
        yield fake, server.url


@pytest.fixture
def tencent() -> Iterator[tuple[TencentSmsServer, str]]:
    fake = TencentSmsServer()
    with BackgroundServer(fake.app()) as server:
        yield fake, server.url


def aliyun_provider(fake: AliyunSmsServer, url: str, **override: Any) -> AliyunSmsProvider:
    options = {**aliyun_settings(fake, url), **override}
    return AliyunSmsProvider(ProviderSettings(kind="aliyun_sms", **options), ProviderContext())


def tencent_provider(fake: TencentSmsServer, url: str, **override: Any) -> TencentSmsProvider:
    options = {**tencent_settings(fake, url), **override}
    return TencentSmsProvider(ProviderSettings(kind="tencent_sms", **options), ProviderContext())


def tencent_message(**overrides: Any) -> Any:
    variant = {"template_code": "449739", "params": {"order": "ord-42", "amount": "¥99.00"}}
    return message("phone", PHONE, content={"variants": {"sms": variant}}, **overrides)


async def test_aliyun_sends_the_approved_template_signed(
    aliyun: tuple[AliyunSmsServer, str],
) -> None:
    fake, url = aliyun
    p = aliyun_provider(fake, url)
    try:
        receipt = await p.send(message("phone", PHONE))
    finally:
        await p.aclose()
    assert receipt.provider_message_id and receipt.provider_message_id.endswith("^0")
    sent = fake.sent[0]
    assert sent["PhoneNumbers"] == "13800138000"
    assert sent["TemplateCode"] == "SMS_100001"
    assert json.loads(sent["TemplateParam"]) == {"order": "ord-42", "amount": "¥99.00"}
    assert sent["SignName"] == "好店" and sent["OutId"] == "dlv-1"


async def test_aliyun_secret_one_byte_off_fails_the_signature(
    aliyun: tuple[AliyunSmsServer, str],
) -> None:
    fake, url = aliyun
    p = aliyun_provider(fake, url, access_key_secret=one_byte_off(fake.access_key_secret))
    try:
        with pytest.raises(PermanentProviderError) as caught:
            await p.send(message("phone", PHONE))
    finally:
        await p.aclose()
    assert caught.value.code == "SignatureDoesNotMatch"
    assert fake.signature_failures == 1 and fake.sends == 0


async def test_aliyun_canonical_string_one_byte_off_fails(
    aliyun: tuple[AliyunSmsServer, str],
) -> None:
    fake, url = aliyun
    p = aliyun_provider(fake, url)
    try:
        body = p.body(message("phone", PHONE))  # signed: TemplateParam names ord-42
        assert body.count(b"ord-42") == 1
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        async with httpx.AsyncClient() as client:
            response = await client.post(
                url + "/", content=body.replace(b"ord-42", b"ord-43"), headers=form
            )
    finally:
        await p.aclose()
    assert response.status_code == 400
    assert response.json()["Code"] == "SignatureDoesNotMatch"


async def test_aliyun_business_limit_control_is_a_rate_limit(
    aliyun: tuple[AliyunSmsServer, str],
) -> None:
    fake, url = aliyun
    fake.limited.add("13800138000")
    p = aliyun_provider(fake, url)
    try:
        with pytest.raises(RateLimited) as caught:
            await p.send(message("phone", PHONE))
        with pytest.raises(DestinationGone):
            await p.send(message("phone", "+86123"))
        with pytest.raises(PermanentProviderError) as missing:
            await p.send(message("phone", PHONE, content={}))
    finally:
        await p.aclose()
    assert caught.value.code == "isv.BUSINESS_LIMIT_CONTROL"
    assert "13800138000" not in str(caught.value)
    assert missing.value.code == "no_template"


async def test_tencent_sends_the_template_params_in_order(
    tencent: tuple[TencentSmsServer, str],
) -> None:
    fake, url = tencent
    p = tencent_provider(fake, url)
    try:
        receipt = await p.send(tencent_message())
    finally:
        await p.aclose()
    assert receipt.provider_message_id and receipt.provider_message_id.startswith("2028:")
    sent = fake.sent[0]
    assert sent["PhoneNumberSet"] == [PHONE]
    assert sent["TemplateId"] == "449739"
    assert sent["TemplateParamSet"] == ["ord-42", "¥99.00"]
    assert sent["SessionContext"] == "dlv-1"


async def test_tencent_secret_one_byte_off_fails_the_signature(
    tencent: tuple[TencentSmsServer, str],
) -> None:
    fake, url = tencent
    p = tencent_provider(fake, url, secret_key=one_byte_off(fake.secret_key))
    try:
        with pytest.raises(PermanentProviderError) as caught:
            await p.send(tencent_message())
    finally:
        await p.aclose()
    assert caught.value.code == "AuthFailure.SignatureFailure"
    assert fake.signature_failures == 1 and fake.sends == 0


async def test_tencent_body_one_byte_off_fails_the_signature(
    tencent: tuple[TencentSmsServer, str],
) -> None:
    fake, url = tencent
    host = httpx.URL(url).netloc.decode()
    body = json.dumps(
        {"PhoneNumberSet": [PHONE], "SmsSdkAppId": fake.sdk_app_id, "SignName": "好店",
         "TemplateId": "449739", "TemplateParamSet": ["ord-42", "¥99.00"]}
    ).encode()  # fmt: skip
    stamp = int(time.time())
    headers = {
        "Authorization": tc3_authorization(fake.secret_id, fake.secret_key, host, body, stamp),
        "Content-Type": "application/json; charset=utf-8",
        "X-TC-Action": "SendSms",
        "X-TC-Timestamp": str(stamp),
        "X-TC-Version": "2021-01-11",
    }
    tampered = body.replace(b"ord-42", b"ord-43")
    async with httpx.AsyncClient() as client:
        good = (await client.post(url + "/", content=body, headers=headers)).json()["Response"]
        bad = (await client.post(url + "/", content=tampered, headers=headers)).json()["Response"]
    assert good["SendStatusSet"][0]["Code"] == "Ok"
    assert bad["Error"]["Code"] == "AuthFailure.SignatureFailure"


async def test_tencent_limits_and_wrong_numbers(tencent: tuple[TencentSmsServer, str]) -> None:
    fake, url = tencent
    fake.limited.add(PHONE)
    p = tencent_provider(fake, url)
    try:
        with pytest.raises(RateLimited) as caught:
            await p.send(tencent_message())
        with pytest.raises(DestinationGone):
            await p.send(message("phone", "13800138000", content=tencent_message().content))
    finally:
        await p.aclose()
    assert caught.value.code == "LimitExceeded.PhoneNumberThirtySecondLimit"
