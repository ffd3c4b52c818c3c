"""``api.cors_origins``: the configured shop origins may call the inbox routes and load the
widget; other origins get no CORS headers and refused preflights; the admin API never
answers cross-origin."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from testbed.harness import Server
from tidings.config import build_settings
from tidings.errors import ConfigError

SHOP = "https://shop.example"
OTHER = "https://evil.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = {"api": {"cors_origins": [SHOP, "http://127.0.0.1:8081"]}}
    running = Server(tmp_path_factory.mktemp("cors"), config=config).start()
    try:
        yield running
    finally:
        running.stop()


def preflight(
    server: Server, path: str, origin: str, method: str = "GET", **extra: str
) -> httpx.Response:
    headers = {"Origin": origin, "Access-Control-Request-Method": method, **extra}
    return httpx.options(f"{server.url}{path}", headers=headers)


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v1/inbox", "GET"),
        ("/v1/inbox/count", "GET"),
        ("/v1/inbox/read-all", "POST"),
        ("/v1/inbox/preferences", "PUT"),
        ("/v1/inbox/it-1/archive", "POST"),
    ],
)
def test_a_shop_origin_gets_its_preflight_answered(server: Server, path: str, method: str) -> None:
    answer = preflight(
        server,
        path,
        SHOP,
        method,
        **{"Access-Control-Request-Headers": "authorization, content-type"},
    )
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == SHOP
    assert method in answer.headers["access-control-allow-methods"]
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "access-control-allow-credentials" not in answer.headers


def test_other_origins_and_other_headers_are_refused(server: Server) -> None:
    refused = preflight(
        server, "/v1/inbox", OTHER, **{"Access-Control-Request-Headers": "authorization"}
    )
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    odd = preflight(server, "/v1/inbox", SHOP, **{"Access-Control-Request-Headers": "x-api-key"})
    assert odd.status_code == 403
    assert "access-control-allow-origin" not in odd.headers
    assert preflight(server, "/v1/inbox", SHOP, "PATCH").status_code == 403


def test_responses_carry_the_origin_only_for_a_shop(server: Server) -> None:
    token = server.token("buyer-cors")
    auth = {"Authorization": f"Bearer {token}"}
    mine = httpx.get(f"{server.url}/v1/inbox/count", headers={**auth, "Origin": SHOP})
    assert mine.status_code == 200
    assert mine.headers["access-control-allow-origin"] == SHOP
    assert "origin" in mine.headers["vary"].lower()
    theirs = httpx.get(f"{server.url}/v1/inbox/count", headers={**auth, "Origin": OTHER})
    assert "access-control-allow-origin" not in theirs.headers
    # refusals too, so the widget can read why (an expired token)
    refused = httpx.get(f"{server.url}/v1/inbox/count", headers={"Origin": SHOP})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == SHOP
    with httpx.stream(
        "GET", f"{server.url}/v1/inbox/stream", params={"token": token}, headers={"Origin": SHOP}
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["access-control-allow-origin"] == SHOP


@pytest.mark.parametrize("path", ["/static/widget.js", "/static/widget.css"])
def test_the_widget_files_may_be_embedded(server: Server, path: str) -> None:
    answer = httpx.get(f"{server.url}{path}", headers={"Origin": SHOP})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == SHOP


@pytest.mark.parametrize(
    "path", ["/v1/subscribers/b-1", "/v1/events", "/v1/notifications", "/static/dashboard.js", "/"]
)
def test_the_admin_api_and_dashboard_never_answer_cross_origin(server: Server, path: str) -> None:
    answer = preflight(server, path, SHOP, **{"Access-Control-Request-Headers": "authorization"})
    assert "access-control-allow-origin" not in answer.headers
    with server.client() as api:
        got = api.get(path, headers={"Origin": SHOP})
    assert "access-control-allow-origin" not in got.headers


def test_without_cors_origins_nothing_answers_cross_origin(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    plain = Server(tmp_path_factory.mktemp("no-cors")).start()
    try:
        answer = preflight(plain, "/v1/inbox", SHOP)
        assert "access-control-allow-origin" not in answer.headers
        got = httpx.get(f"{plain.url}/v1/inbox/count", headers={"Origin": SHOP})
        assert "access-control-allow-origin" not in got.headers
    finally:
        plain.stop()


@pytest.mark.parametrize(
    "origin",
    ["shop.example", "https://shop.example/", "https://shop.example/path", "*", "ftp://x.y"],
)
def test_cors_origins_must_be_origins(origin: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings({"api": {"cors_origins": [origin]}}, {}, "test")
    assert caught.value.path == "api.cors_origins[0]" or "cors_origins" in str(caught.value)


def test_cors_origins_are_compared_case_insensitively() -> None:
    settings = build_settings({"api": {"cors_origins": ["HTTPS://Shop.Example:8443"]}}, {}, "t")
    assert settings.api.cors_origins == ["https://shop.example:8443"]
