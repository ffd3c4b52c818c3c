"""The private-address guard: pure URL checks (IP literals, no network) and resolution."""

from __future__ import annotations

import ipaddress

import pytest

from tidings.channels.ssrf import (
    ForbiddenDestination,
    check_url,
    forbidden_address,
    guard,
    resolve_public,
)
from tidings.errors import PermanentProviderError

PRIVATE = [
    "http://127.0.0.1/hook",
    "http://127.8.9.10:8080/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://100.64.0.1/hook",  # CGNAT
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",  # multicast
    "http://240.0.0.1/hook",  # reserved
    "http://255.255.255.255/hook",
    "http://[::1]/hook",
    "http://[::]/hook",
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
    "http://[::ffff:10.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[2002:7f00:1::]/hook",  # 6to4 wrapping 127.0.0.1
    "http://[fd00::1]/hook",  # unique local
    "http://[fe80::1%25eth0]/hook",  # link-local with a zone id
    "http://[ff02::1]/hook",
    "http://127.1/hook",  # legacy IPv4 spellings resolvers accept
    "http://2130706433/hook",
    "http://0x7f.0.0.1/hook",
    "http://localhost:8000/hook",
    "http://erp.localhost/hook",
    "https://LOCALHOST./hook",
]
PUBLIC = [
    "https://93.184.215.14/hook",
    "http://8.8.8.8:8080/hook",
    "https://[2606:4700:4700::1111]/hook",
    "https://[::ffff:8.8.8.8]/hook",
    "https://erp.example.com/hooks/tidings?token=abc",
]


@pytest.mark.parametrize("url", PRIVATE)
def test_private_addresses_are_refused(url: str) -> None:
    with pytest.raises(ForbiddenDestination) as caught:
        check_url(url, allow_private=False)
    assert isinstance(caught.value, PermanentProviderError)
    assert caught.value.code == "ssrf"


@pytest.mark.parametrize("url", PRIVATE)
def test_allow_private_networks_lets_them_through(url: str) -> None:
    check_url(url, allow_private=True)


@pytest.mark.parametrize("url", PUBLIC)
def test_public_addresses_pass(url: str) -> None:
    check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    ["ftp://8.8.8.8/x", "file:///etc/passwd", "gopher://8.8.8.8:70/", "javascript:alert(1)", "//x"],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_only_http_schemes(url: str, allow_private: bool) -> None:
    with pytest.raises(ForbiddenDestination) as caught:
        check_url(url, allow_private=allow_private)
    assert caught.value.code == "scheme"


@pytest.mark.parametrize("url", ["http:///nohost", "http://8.8.8.8:99999/", "http://[::1/"])
def test_malformed_urls(url: str) -> None:
    with pytest.raises(ForbiddenDestination):
        check_url(url, allow_private=True)


def test_address_classes() -> None:
    assert forbidden_address(ipaddress.ip_address("100.127.255.255"))
    assert not forbidden_address(ipaddress.ip_address("100.128.0.1"))  # just past CGNAT
    assert forbidden_address(ipaddress.ip_address("::ffff:192.168.0.1"))
    assert not forbidden_address(ipaddress.ip_address("1.1.1.1"))


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    # the hosts file maps localhost to loopback: no DNS traffic leaves the machine
    with pytest.raises(ForbiddenDestination):
        await resolve_public("localhost", 80)


async def test_guard_resolves_names_unless_private_is_allowed() -> None:
    with pytest.raises(ForbiddenDestination):
        await guard("http://127.0.0.1:9/hook", allow_private=False)
    await guard("http://localhost:9/hook", allow_private=True)  # no resolution at all
