"""Result codes checked against the services' documentation, each answered by its fake with
the service's own body: what the providers make of them (a rate limit, a permanent failure,
a suppressed delivery) and the WeChat stable token every worker shares."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from fakes.china import MAKERS, OPENID, TOKEN, message, wechat_settings
from fakes.china_sms import AliyunSmsServer, TencentSmsServer
from fakes.maker_push import OppoServer, XiaomiServer
from fakes.tls import BackgroundServer
from fakes.wechat_server import WeChatServer
from tests.channels.test_china_sms import (
    PHONE,
    aliyun,  # noqa: F401  (fixture)
    aliyun_provider,
    tencent,  # noqa: F401  (fixture)
    tencent_message,
    tencent_provider,
)
from tidings.channels.base import ProviderContext
from tidings.channels.registry import build_provider
from tidings.channels.wechat import WeChatProvider
from tidings.config import ProviderSettings
from tidings.errors import (
    DestinationGone,
    PermanentProviderError,
    RateLimited,
    Suppressed,
    TransientProviderError,
)


@pytest.fixture
def oppo() -> Iterator[tuple[OppoServer, str]]:
    fake = OppoServer()
    with BackgroundServer(fake.app()) as server:
        yield fake, server.url


@pytest.mark.parametrize(
    ("code", "text"), [(13, "App Call Limited"), (55, "App Call Frequency Limit")]
)
async def test_oppo_call_limits_are_rate_limits(
    oppo: tuple[OppoServer, str], code: int, text: str
) -> None:
    fake, url = oppo
    fake.answers[TOKEN] = (code, text)
    (spec,) = [m for m in MAKERS if m.kind == "oppo"]
    p = build_provider(ProviderSettings(kind="oppo", **spec.settings(fake, url)), ProviderContext())
    try:
        with pytest.raises(RateLimited) as caught:
            await p.send(message("oppo", TOKEN))
    finally:
        await p.aclose()
    assert caught.value.code == str(code) and caught.value.retry_after
    assert fake.sends == 0


@pytest.mark.parametrize(
    ("code", "text", "outcome"),
    [
        (10023, "用户请求频次超过上限", RateLimited),
        (10028, "应用API调用总数太频繁", RateLimited),
        (10009, "系统繁忙", TransientProviderError),
        (10017, "参数值非法", PermanentProviderError),
    ],
)
async def test_xiaomi_sdk_codes(code: int, text: str, outcome: type[Exception]) -> None:
    fake = XiaomiServer()
    fake.answers[TOKEN] = (code, text)
    (spec,) = [m for m in MAKERS if m.kind == "xiaomi"]
    with BackgroundServer(fake.app()) as server:
        options = spec.settings(fake, server.url)
        p = build_provider(ProviderSettings(kind="xiaomi", **options), ProviderContext())
        try:
            with pytest.raises(outcome) as caught:
                await p.send(message("xiaomi", TOKEN))
        finally:
            await p.aclose()
    assert type(caught.value) is outcome and caught.value.code == str(code)  # type: ignore[attr-defined]
    assert TOKEN not in str(caught.value)


async def test_aliyun_ram_permission_denied_is_permanent_not_retried(
    aliyun: tuple[AliyunSmsServer, str],  # noqa: F811
) -> None:
    fake, url = aliyun
    fake.answers[PHONE.removeprefix("+86")] = ("isp.RAM_PERMISSION_DENY", "RAM权限DENY")
    p = aliyun_provider(fake, url)
    try:
        with pytest.raises(PermanentProviderError) as caught:
            await p.send(message("phone", PHONE))
    finally:
        await p.aclose()
    assert caught.value.code == "isp.RAM_PERMISSION_DENY"
    assert not isinstance(caught.value, DestinationGone)


@pytest.mark.parametrize(
    ("code", "text", "outcome"),
    [
        ("isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制", PermanentProviderError),
        ("isp.SYSTEM_ERROR", "System error", TransientProviderError),
        ("isv.DAY_LIMIT_CONTROL", "触发日发送限额", RateLimited),
    ],
)
async def test_aliyun_codes(
    aliyun: tuple[AliyunSmsServer, str],  # noqa: F811
    code: str,
    text: str,
    outcome: type[Exception],
) -> None:
    fake, url = aliyun
    fake.answers[PHONE.removeprefix("+86")] = (code, text)
    p = aliyun_provider(fake, url)
    try:
        with pytest.raises(outcome) as caught:
            await p.send(message("phone", PHONE))
    finally:
        await p.aclose()
    assert type(caught.value) is outcome  # a count over the limit is no dead number
    if code == "isv.DAY_LIMIT_CONTROL":
        assert isinstance(caught.value, RateLimited) and caught.value.retry_after == 3600.0


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("InternalError.SigVerificationFail", PermanentProviderError),
        ("InternalError.Timeout", TransientProviderError),
        ("FailedOperation.PhoneNumberInBlacklist", Suppressed),
        ("LimitExceeded.DeliveryFrequencyLimit", RateLimited),
    ],
)
async def test_tencent_codes(
    tencent: tuple[TencentSmsServer, str],  # noqa: F811
    code: str,
    outcome: type[Exception],
) -> None:
    fake, url = tencent
    fake.answers[PHONE] = (code, "as documented")
    p = tencent_provider(fake, url)
    try:
        with pytest.raises(outcome) as caught:
            await p.send(tencent_message())
    finally:
        await p.aclose()
    assert type(caught.value) is outcome and caught.value.code == code  # type: ignore[attr-defined]
    assert PHONE not in str(caught.value)


async def test_wechat_workers_share_one_stable_token() -> None:
    fake = WeChatServer(unlimited=True)
    with BackgroundServer(fake.app()) as server:
        workers = [
            WeChatProvider(
                ProviderSettings(kind="wechat", **wechat_settings(fake, server.url)),
                ProviderContext(),
            )
            for _ in range(2)
        ]
        try:
            sends: list[Any] = [
                w.send(message("wechat", OPENID)) for w in workers for _ in range(5)
            ]
            await asyncio.gather(*sends)
        finally:
            for worker in workers:
                await worker.aclose()
    # one token for both: with /cgi-bin/token the second would have replaced the first's
    assert fake.tokens_issued == 1 and fake.sends == 10
